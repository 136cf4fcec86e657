"""Async invocations (InvocationType Event): durable acceptance, records by request id, retries,
destinations, the dead-letter log and redrive, throttled events that wait, and bad input.

These tests run on a private server whose first retry waits 200 ms (`--event-retry-delay`), so that
retry behaviour can be seen in seconds rather than Lambda's minutes.
"""

import json
import time

import pytest

from support import (
    PYTHON_RUNTIME,
    ROLE,
    expect_error,
    python_zip,
    signed_request,
    unique_name,
    wait_until_ready,
)

# Fails the first FAILURES runs of each request id (counted in /tmp, which lives as long as the
# instance), then answers with what it was sent and how many runs it took.
FLAKY = """
import json, os, time

def handler(event, context):
    path = "/tmp/runs-" + context.aws_request_id
    runs = int(open(path).read()) + 1 if os.path.exists(path) else 1
    open(path, "w").write(str(runs))
    if runs <= int(os.environ.get("FAILURES", "0")):
        raise RuntimeError("failing run %d of %s" % (runs, context.aws_request_id))
    return {"event": event, "runs": runs, "at": time.time_ns()}
"""

# Answers with its event: used as a destination, whose result then holds the invocation record it received.
ECHO = "def handler(event, context):\n    return event\n"


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("async", ["--event-retry-delay", "200ms"])


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture
def deploy(client):
    created = []

    def create(source, environment=None, **arguments):
        name = unique_name(arguments.pop("prefix", "event"))
        configuration = client.create_function(
            FunctionName=name,
            Runtime=PYTHON_RUNTIME,
            Role=ROLE,
            Handler="handler.handler",
            Code={"ZipFile": python_zip(source)},
            Environment={"Variables": environment or {}},
            **arguments,
        )
        created.append(name)
        wait_until_ready(client, name)
        return configuration

    yield create
    for name in created:
        try:
            client.delete_function(FunctionName=name)
        except Exception:
            pass


def send_event(client, name, payload, **arguments):
    response = client.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload), **arguments)
    assert response["StatusCode"] == 202, response
    assert response["Payload"].read() == b""
    return response["ResponseMetadata"]["RequestId"]


def record(server, request_id):
    status, _, body = signed_request(server, "GET", "/wisp/v1/invocations/%s" % request_id)
    return status, json.loads(body)


def wait_for_record(server, request_id, timeout=30, final=True):
    """The invocation's record once it has finished (or, with final=False, once it exists)."""
    deadline = time.time() + timeout
    while True:
        status, body = record(server, request_id)
        if status == 200 and (not final or body["status"] not in ("queued", "running")):
            return body
        if time.time() > deadline:
            raise AssertionError("invocation %s not finished after %ss: %s %r" % (request_id, timeout, status, body))
        time.sleep(0.1)


def records_of(server, name):
    status, _, body = signed_request(server, "GET", "/wisp/v1/functions/%s/invocations?limit=100" % name)
    assert status == 200, body
    return json.loads(body)["Invocations"]


def destination_results(server, name, count, timeout=30):
    """Results of the first `count` invocations of a destination function: the records it received."""
    deadline = time.time() + timeout
    while True:
        finished = [entry for entry in records_of(server, name) if entry["status"] == "succeeded"]
        if len(finished) >= count:
            return [wait_for_record(server, entry["request_id"])["result"] for entry in finished]
        if time.time() > deadline:
            raise AssertionError("destination %s got %d of %d events" % (name, len(finished), count))
        time.sleep(0.2)


def dead_letters(server, name):
    status, _, body = signed_request(server, "GET", "/wisp/v1/functions/%s/dlq" % name)
    assert status == 200, body
    return json.loads(body)["DeadLetters"]


def wait_for_dead_letters(server, name, count, timeout=30):
    deadline = time.time() + timeout
    while True:
        letters = dead_letters(server, name)
        if len(letters) >= count or time.time() > deadline:
            return letters
        time.sleep(0.2)


def test_an_event_is_answered_202_and_its_result_can_be_fetched_later(server, client, deploy):
    name = deploy(FLAKY)["FunctionName"]
    request_id = send_event(client, name, {"hello": "later"})
    status, early = record(server, request_id)
    assert status == 200, "the record exists as soon as the event is accepted: %r" % early
    assert early["status"] in ("queued", "running", "succeeded")
    done = wait_for_record(server, request_id)
    assert done["status"] == "succeeded"
    assert done["invocation_type"] == "Event"
    assert done["attempts"] == 1
    assert done["result"]["event"] == {"hello": "later"}
    assert done["queue_delay_us"] >= 0 and done["enqueued_ms"] > 0


def test_the_cli_queues_an_event_and_waits_for_its_result(server, deploy):
    name = deploy(FLAKY)["FunctionName"]
    queued = server.wisp_cli("invoke", name, "--async", "--payload", '{"from": "cli"}')
    request_id = queued.stdout.strip()
    shown = server.wisp_cli("invocations", "get", request_id, "--wait", "--output", "json")
    body = json.loads(shown.stdout)
    assert body["status"] == "succeeded" and body["result"]["event"] == {"from": "cli"}


def test_an_unknown_request_id_is_not_found(server):
    status, body = record(server, "00000000-0000-4000-8000-000000000000")
    assert status == 404 and "no invocation" in body["Message"]


def test_a_failing_event_is_retried_then_succeeds_and_reaches_its_success_destination(server, client, deploy):
    sink = deploy(ECHO, prefix="sink")
    name = deploy(FLAKY, environment={"FAILURES": "2"})["FunctionName"]
    client.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=2,
        DestinationConfig={"OnSuccess": {"Destination": sink["FunctionArn"]}},
    )
    request_id = send_event(client, name, {"n": 1})
    done = wait_for_record(server, request_id)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 3 and done["result"]["runs"] == 3
    [delivered] = destination_results(server, sink["FunctionName"], 1)
    assert delivered["version"] == "1.0"
    assert delivered["requestContext"]["requestId"] == request_id
    assert delivered["requestContext"]["condition"] == "Success"
    assert delivered["requestContext"]["approximateInvokeCount"] == 3
    assert delivered["requestContext"]["functionArn"].endswith(":function:%s:$LATEST" % name)
    assert delivered["requestPayload"] == {"n": 1}
    assert delivered["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert delivered["responsePayload"]["runs"] == 3
    # Each run has its own record in the function's history: two failures, then the success.
    statuses = sorted(entry["status"] for entry in records_of(server, name) if entry["request_id"] == request_id)
    assert statuses == ["failed", "failed", "succeeded"]


def test_exhausted_retries_go_to_the_failure_destination_with_the_error(server, client, deploy):
    sink = deploy(ECHO, prefix="sink")
    name = deploy(FLAKY, environment={"FAILURES": "100"})["FunctionName"]
    client.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": sink["FunctionArn"]}},
    )
    request_id = send_event(client, name, {"doomed": True})
    done = wait_for_record(server, request_id)
    assert done["status"] == "failed" and done["attempts"] == 2 and done["error_type"] == "RuntimeError"
    [delivered] = destination_results(server, sink["FunctionName"], 1)
    assert delivered["requestContext"]["condition"] == "RetriesExhausted"
    assert delivered["requestContext"]["approximateInvokeCount"] == 2
    assert delivered["requestPayload"] == {"doomed": True}
    assert delivered["responseContext"]["functionError"] == "Unhandled"
    assert delivered["responsePayload"]["errorType"] == "RuntimeError"
    assert dead_letters(server, name) == [], "an event delivered to its failure destination is not also a dead letter"


def test_without_a_destination_a_failed_event_is_a_dead_letter_and_can_be_redriven(server, client, deploy):
    name = deploy(FLAKY, environment={"FAILURES": "100"})["FunctionName"]
    client.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    request_id = send_event(client, name, {"keep": "me"})
    [letter] = wait_for_dead_letters(server, name, 1)
    assert letter["RequestId"] == request_id
    assert letter["Condition"] == "RetriesExhausted"
    assert letter["Attempts"] == 1
    assert letter["ErrorType"] == "RuntimeError"
    assert json.loads(letter["Payload"]) == {"keep": "me"}
    listed = server.wisp_cli("dlq", name)
    assert request_id in listed.stdout and "RetriesExhausted" in listed.stdout

    # Fix the function, then send the dead letter again: it runs under the same request id.
    client.update_function_configuration(FunctionName=name, Environment={"Variables": {"FAILURES": "0"}})
    wait_until_ready(client, name)
    redriven = server.wisp_cli("dlq", name, "--redrive")
    assert "sent 1 event" in redriven.stdout
    assert dead_letters(server, name) == []
    deadline = time.time() + 30
    while wait_for_record(server, request_id)["status"] != "succeeded":
        assert time.time() < deadline, "the redriven event did not succeed"
        time.sleep(0.2)
    done = wait_for_record(server, request_id)
    assert done["attempts"] == 2, "attempts count the run before the redrive too: %r" % done
    assert done["result"]["event"] == {"keep": "me"}


def test_throttled_events_wait_in_the_queue_and_run_in_arrival_order(server, client, deploy):
    name = deploy(FLAKY)["FunctionName"]
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    request_ids = [send_event(client, name, {"seq": seq}) for seq in range(8)]
    time.sleep(1.5)
    for request_id in request_ids:
        assert record(server, request_id)[1]["status"] == "queued", "a throttled event waits, it is not run or dropped"
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    results = [wait_for_record(server, request_id) for request_id in request_ids]
    assert all(result["status"] == "succeeded" for result in results), results
    assert [result["result"]["event"]["seq"] for result in results] == list(range(8))
    started = [result["result"]["at"] for result in results]
    assert started == sorted(started), "with concurrency 1, events run in the order they arrived"


def test_an_alias_event_runs_the_aliased_version(server, client, deploy):
    name = deploy("def handler(event, context):\n    return 'one'\n")["FunctionName"]
    client.publish_version(FunctionName=name)
    client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    client.update_function_code(FunctionName=name, ZipFile=python_zip("def handler(event, context):\n    return 'two'\n"))
    wait_until_ready(client, name)
    done = wait_for_record(server, send_event(client, name, {}, Qualifier="live"))
    assert (done["version"], done["result"]) == ("1", "one")
    done = wait_for_record(server, send_event(client, name + ":live", {}))
    assert (done["version"], done["result"]) == ("1", "one")
    done = wait_for_record(server, send_event(client, name, {}))
    assert (done["version"], done["result"]) == ("$LATEST", "two")


def test_event_invoke_config_put_get_update_list_delete(client, deploy):
    sink = deploy(ECHO, prefix="sink")
    name = deploy(ECHO)["FunctionName"]
    client.publish_version(FunctionName=name)
    put = client.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=120)
    assert put["MaximumRetryAttempts"] == 1 and put["MaximumEventAgeInSeconds"] == 120
    assert put["FunctionArn"].endswith(":function:%s:$LATEST" % name)
    updated = client.update_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": sink["FunctionArn"]}}
    )
    assert updated["MaximumRetryAttempts"] == 1, "update keeps what it was not given"
    assert updated["DestinationConfig"]["OnFailure"]["Destination"] == sink["FunctionArn"]
    replaced = client.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in replaced, "put replaces the whole configuration"
    client.put_function_event_invoke_config(FunctionName=name, Qualifier="1", MaximumRetryAttempts=0)
    got = client.get_function_event_invoke_config(FunctionName=name, Qualifier="1")
    assert got["MaximumRetryAttempts"] == 0 and got["FunctionArn"].endswith(":%s:1" % name)
    listed = client.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert sorted(entry["FunctionArn"].rsplit(":", 1)[1] for entry in listed) == ["$LATEST", "1"]
    client.delete_function_event_invoke_config(FunctionName=name, Qualifier="1")
    expect_error("ResourceNotFoundException", 404, client.get_function_event_invoke_config, FunctionName=name, Qualifier="1")
    expect_error("ResourceNotFoundException", 404, client.delete_function_event_invoke_config, FunctionName=name, Qualifier="1")


def test_the_aws_cli_sets_an_event_invoke_config(server, deploy):
    name = deploy(ECHO)["FunctionName"]
    server.aws_cli("lambda", "put-function-event-invoke-config", "--function-name", name, "--maximum-retry-attempts", "0")
    shown = json.loads(server.aws_cli("lambda", "get-function-event-invoke-config", "--function-name", name).stdout)
    assert shown["MaximumRetryAttempts"] == 0


def test_bad_event_invoke_configs_are_refused_with_clear_errors(server, client, deploy):
    raw_client = server.client(validate=False)
    name = deploy(ECHO)["FunctionName"]
    own_arn = client.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    account_id = own_arn.split(":")[4]
    cases = [
        ({"MaximumRetryAttempts": 3}, "MaximumRetryAttempts 3"),
        ({"MaximumRetryAttempts": -1}, "MaximumRetryAttempts -1"),
        ({"MaximumEventAgeInSeconds": 59}, "MaximumEventAgeInSeconds 59"),
        ({"MaximumEventAgeInSeconds": 21601}, "MaximumEventAgeInSeconds 21601"),
        ({"DestinationConfig": {"OnSuccess": {"Destination": own_arn}}}, "its own destination"),
        ({"DestinationConfig": {"OnFailure": {"Destination": own_arn + ":$LATEST"}}}, "its own destination"),
        ({"DestinationConfig": {"OnFailure": {"Destination": own_arn + "-missing"}}}, "does not exist"),
        ({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:%s:queue" % account_id}}}, "functions only"),
        ({"DestinationConfig": {"OnFailure": {"Destination": "not-an-arn"}}}, "not an ARN"),
    ]
    for arguments, message in cases:
        response = expect_error(
            "InvalidParameterValueException", 400, raw_client.put_function_event_invoke_config, FunctionName=name, **arguments
        )
        assert message in response["Error"]["Message"], (arguments, response["Error"])
    expect_error("ResourceNotFoundException", 404, client.get_function_event_invoke_config, FunctionName=name)
    expect_error(
        "ResourceNotFoundException", 404, client.put_function_event_invoke_config, FunctionName=name + "-missing", MaximumRetryAttempts=1
    )
    expect_error(
        "ResourceNotFoundException", 404, client.put_function_event_invoke_config, FunctionName=name, Qualifier="7", MaximumRetryAttempts=1
    )


def test_bad_events_are_refused_before_they_are_queued(server, client, deploy):
    name = deploy(ECHO)["FunctionName"]
    response = expect_error(
        "RequestTooLargeException", 413, client.invoke, FunctionName=name, InvocationType="Event", Payload=b'"' + b"x" * (1024 * 1024) + b'"'
    )
    assert "1048576" in response["Error"]["Message"]
    expect_error("InvalidRequestContentException", 400, client.invoke, FunctionName=name, InvocationType="Event", Payload=b"{not json")
    expect_error("ResourceNotFoundException", 404, client.invoke, FunctionName=name + "-missing", InvocationType="Event", Payload=b"{}")
    expect_error("ResourceNotFoundException", 404, client.invoke, FunctionName=name, Qualifier="nope", InvocationType="Event", Payload=b"{}")
    assert records_of(server, name) == [], "nothing refused was queued"
    # Just under the limit is fine.
    request_id = send_event(client, name, "y" * (1024 * 1024 - 100))
    assert wait_for_record(server, request_id)["status"] == "succeeded"


def test_an_event_whose_function_is_deleted_before_it_runs_is_a_dead_letter(server, client, deploy):
    name = deploy(ECHO)["FunctionName"]
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    request_id = send_event(client, name, {"orphan": True})
    client.delete_function(FunctionName=name)
    [letter] = wait_for_dead_letters(server, name, 1)
    assert letter["RequestId"] == request_id and letter["Condition"] == "FunctionNotFound"


@pytest.mark.slow
def test_an_event_older_than_its_maximum_age_is_not_run(server, client, deploy):
    name = deploy(FLAKY)["FunctionName"]
    client.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    request_id = send_event(client, name, {"too": "late"})
    time.sleep(61)
    [letter] = wait_for_dead_letters(server, name, 1, timeout=10)
    assert letter["RequestId"] == request_id and letter["Condition"] == "EventAgeExceeded"
    assert letter["Attempts"] == 0
    done = wait_for_record(server, request_id)
    assert done["status"] == "expired"


def test_a_synchronous_invoke_has_a_record_with_its_result_too(server, client, deploy):
    name = deploy(FLAKY, environment={"FAILURES": "1"})["FunctionName"]
    failed = client.invoke(FunctionName=name, Payload=b'{"sync": 1}')
    assert failed["FunctionError"] == "Unhandled"
    body = wait_for_record(server, failed["ResponseMetadata"]["RequestId"])
    assert (body["status"], body["invocation_type"], body["attempts"]) == ("failed", "RequestResponse", 1)
    assert body["result"]["errorType"] == "RuntimeError"
    echo = deploy(ECHO)["FunctionName"]
    succeeded = client.invoke(FunctionName=echo, Payload=b'{"sync": 2}')
    body = wait_for_record(server, succeeded["ResponseMetadata"]["RequestId"])
    assert body["status"] == "succeeded" and body["result"] == {"sync": 2}
