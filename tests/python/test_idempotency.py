"""Idempotency: one execution per key, whatever arrives and whatever happens to the server.

The function inserts a row into PostgreSQL (through `--function-network egress`, with pg8000 bundled)
inside a transaction that it commits only at the end, after an optional sleep. Every test counts the
rows for its key: exactly one, and every caller sees the same result.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and pip access to PyPI: without them these tests fail,
they do not skip.
"""

import json
import subprocess
import sys
import threading
import time
import uuid

import pg8000.native
import pytest

from support import PYTHON_RUNTIME, ROLE, expect_error, python_zip, signed_request, unique_name, wait_until_ready, zip_directory

HANDLER = """
import os
import time

import pg8000.native


def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    connection = pg8000.native.Connection("postgres", host=os.environ["WISP_HOST_ADDRESS"], port=5432, database="postgres")
    try:
        connection.run("BEGIN")
        connection.run("INSERT INTO %s (order_id, request_id) VALUES (:order, :request)", order=event["order"], request=context.aws_request_id)
        time.sleep(event.get("sleep", 0))
        connection.run("COMMIT")
    finally:
        connection.close()
    return {"order": event["order"], "ran_as": context.aws_request_id}
"""


def database():
    return pg8000.native.Connection("postgres", host="127.0.0.1", port=5432, database="postgres")


@pytest.fixture(scope="module")
def table():
    name = "wisp_orders_%s" % uuid.uuid4().hex[:10]
    connection = database()
    connection.run("CREATE TABLE %s (order_id text NOT NULL, request_id text NOT NULL)" % name)
    yield name
    connection.run("DROP TABLE %s" % name)
    connection.close()


def rows(table, order):
    connection = database()
    try:
        return connection.run("SELECT request_id FROM %s WHERE order_id = :order" % table, order=order)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("idempotency", ["--function-network", "egress", "--event-retry-delay", "200ms"])


@pytest.fixture(scope="module")
def function_code(table, tmp_path_factory):
    directory = tmp_path_factory.mktemp("pg-idempotent")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(directory), "pg8000"],
        check=True,
        timeout=300,
    )
    (directory / "handler.py").write_text(HANDLER % table)
    return zip_directory(directory)


def idempotent_function(server, code, prefix, window_seconds):
    client = server.client()
    name = unique_name(prefix)
    client.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": code}, Timeout=5)
    wait_until_ready(client, name)
    status, _, body = signed_request(
        server,
        "PUT",
        "/wisp/v1/functions/%s/idempotency" % name,
        json.dumps({"KeyJsonPath": "$.order", "WindowSeconds": window_seconds}).encode(),
    )
    assert status == 200, body
    return name


@pytest.fixture(scope="module")
def function(server, function_code):
    return idempotent_function(server, function_code, "orders", 120)


def invoke(client, name, event):
    response = client.invoke(FunctionName=name, Payload=json.dumps(event))
    return response, json.loads(response["Payload"].read())


def key_state(server, name, key):
    status, _, body = signed_request(server, "GET", "/wisp/v1/functions/%s/idempotency/%s" % (name, key))
    return status, json.loads(body)


def record(server, request_id):
    """An invocation's record (written in the background, so it may take a moment to appear)."""
    deadline = time.time() + 10
    while True:
        status, _, body = signed_request(server, "GET", "/wisp/v1/invocations/%s" % request_id)
        if status == 200 or time.time() > deadline:
            assert status == 200, body
            return json.loads(body)
        time.sleep(0.05)


def test_fifty_concurrent_duplicates_run_once_and_all_see_its_result(server, function, table):
    event = {"order": "concurrent-%s" % uuid.uuid4().hex[:6], "sleep": 1}
    answers = []

    def call():
        answers.append(invoke(server.client(), function, event))

    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 50
    assert len(rows(table, event["order"])) == 1
    results = {json.dumps(payload, sort_keys=True) for _, payload in answers}
    assert len(results) == 1, "every caller sees the one execution's result: %r" % results
    original = answers[0][1]["ran_as"]
    replays = [response for response, _ in answers if response["ResponseMetadata"]["HTTPHeaders"].get("x-wisp-idempotent-replay")]
    assert len(replays) == 49
    assert all(response["ResponseMetadata"]["HTTPHeaders"]["x-wisp-idempotent-replay"] == original for response in replays)

    # After it finished: the stored result, metered as an invoke with no duration.
    response, payload = invoke(server.client(), function, event)
    assert payload["ran_as"] == original
    replay = record(server, response["ResponseMetadata"]["RequestId"])
    assert replay["replay_of"] == original and replay["billed_duration_ms"] == 0 and replay["duration_us"] == 0
    status, state = key_state(server, function, event["order"])
    assert status == 200 and state["State"] == "succeeded" and state["RequestId"] == original
    assert state["Result"] == payload
    assert len(rows(table, event["order"])) == 1


def test_events_with_the_same_key_run_once(server, function, table):
    client = server.client()
    order = "events-%s" % uuid.uuid4().hex[:6]
    ids = []
    for _ in range(5):
        response = client.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps({"order": order}))
        assert response["StatusCode"] == 202
        ids.append(response["ResponseMetadata"]["RequestId"])
    deadline = time.time() + 60
    while True:
        records = [record(server, request_id) for request_id in ids]
        if all(entry["status"] not in ("queued", "running") for entry in records):
            break
        assert time.time() < deadline, records
        time.sleep(0.2)
    assert len(rows(table, order)) == 1
    assert all(entry["status"] == "succeeded" for entry in records), records
    assert sum(1 for entry in records if entry.get("replay_of")) == 4
    # A sync call with the same key afterwards replays the events' execution too.
    _, payload = invoke(client, function, {"order": order})
    assert len(rows(table, order)) == 1 and payload["order"] == order


def test_a_different_payload_with_the_same_key_is_refused(server, function):
    client = server.client()
    order = "mismatch-%s" % uuid.uuid4().hex[:6]
    invoke(client, function, {"order": order})
    response = expect_error("IdempotencyKeyMismatchException", 422, client.invoke, FunctionName=function, Payload=json.dumps({"order": order, "sleep": 0.1}))
    assert order in response["Error"]["Message"]


def test_failures_run_again_unless_remembered(server, function):
    client = server.client()
    order = "failing-%s" % uuid.uuid4().hex[:6]
    event = {"order": order, "fail": True}
    first, _ = invoke(client, function, event)
    second, _ = invoke(client, function, event)
    assert first["FunctionError"] == second["FunctionError"] == "Unhandled"
    assert "x-wisp-idempotent-replay" not in second["ResponseMetadata"]["HTTPHeaders"], "a forgotten failure runs again"

    status, _, body = signed_request(
        server,
        "PUT",
        "/wisp/v1/functions/%s/idempotency" % function,
        json.dumps({"KeyJsonPath": "$.order", "WindowSeconds": 120, "RememberFailures": True}).encode(),
    )
    assert status == 200, body
    try:
        order = "remembered-%s" % uuid.uuid4().hex[:6]
        event = {"order": order, "fail": True}
        first, _ = invoke(client, function, event)
        second, payload = invoke(client, function, event)
        assert second["FunctionError"] == "Unhandled" and payload["errorType"] == "RuntimeError"
        assert second["ResponseMetadata"]["HTTPHeaders"]["x-wisp-idempotent-replay"] == first["ResponseMetadata"]["RequestId"]
        assert key_state(server, function, order)[1]["State"] == "failed"
    finally:
        signed_request(
            server, "PUT", "/wisp/v1/functions/%s/idempotency" % function, json.dumps({"KeyJsonPath": "$.order", "WindowSeconds": 120}).encode()
        )


def test_an_expired_window_runs_again(server, table, function_code):
    client = server.client()
    name = idempotent_function(server, function_code, "orders-short", 2)
    order = "expiring-%s" % uuid.uuid4().hex[:6]
    _, first = invoke(client, name, {"order": order})
    _, again = invoke(client, name, {"order": order})
    assert again["ran_as"] == first["ran_as"]
    time.sleep(2.5)
    assert key_state(server, name, order)[1]["State"] == "expired"
    _, later = invoke(client, name, {"order": order})
    assert later["ran_as"] != first["ran_as"], "after the window, the key runs again (as documented)"
    assert len(rows(table, order)) == 2


def test_bad_settings_are_refused(server, function):
    for settings, message in [
        ({"WindowSeconds": 60}, "exactly one key source"),
        ({"KeyJsonPath": "$.order", "KeyHeader": True}, "exactly one key source"),
        ({"KeyJsonPath": "$[", "WindowSeconds": 60}, "not a JSONPath"),
        ({"KeyJsonPath": "$.order", "WindowSeconds": 0}, "WindowSeconds 0"),
    ]:
        status, _, body = signed_request(server, "PUT", "/wisp/v1/functions/%s/idempotency" % function, json.dumps(settings).encode())
        assert status == 400 and message in json.loads(body)["Message"], (settings, body)


def test_a_header_key_works_for_callers_that_set_it(server):
    client = server.client()
    name = unique_name("by-header")
    client.create_function(
        FunctionName=name,
        Runtime=PYTHON_RUNTIME,
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": python_zip("import uuid\ndef handler(event, context):\n    return str(uuid.uuid4())\n")},
    )
    wait_until_ready(client, name)
    shown = json.loads(server.wisp_cli("idempotency", name, "--key-header", "--window", "60").stdout)
    assert shown["KeyHeader"] is True and shown["WindowSeconds"] == 60
    path = "/2015-03-31/functions/%s/invocations" % name
    answers = [signed_request(server, "POST", path, b"{}", headers={"Idempotency-Key": "h-1"}) for _ in range(3)]
    assert len({answer[2] for answer in answers}) == 1
    assert answers[1][1]["x-wisp-idempotent-replay"] == answers[0][1]["x-amzn-requestid"]
    without = [signed_request(server, "POST", path, b"{}")[2] for _ in range(2)]
    assert without[0] != without[1], "a call without a key is not idempotent"
    state = json.loads(server.wisp_cli("idempotency", name, "--key", "h-1").stdout)
    assert state["State"] == "succeeded" and state["RequestId"] == answers[0][1]["x-amzn-requestid"]
    server.wisp_cli("idempotency", name, "--off")
    assert signed_request(server, "POST", path, b"{}", headers={"Idempotency-Key": "h-1"})[2] != answers[0][2]


@pytest.mark.slow
def test_a_killed_server_releases_the_key_only_after_the_timeout(server, function, table):
    order = "killed-%s" % uuid.uuid4().hex[:6]
    outcome = []

    def first_call():
        try:
            outcome.append(invoke(server.client(), function, {"order": order, "sleep": 3}))
        except Exception as error:  # the server dies under this call
            outcome.append(error)

    thread = threading.Thread(target=first_call)
    started = time.time()
    thread.start()
    time.sleep(1.5)
    server.kill()
    thread.join(timeout=30)
    assert isinstance(outcome[0], Exception), "the first call was cut off by the kill"
    server.start()
    retried = time.time()
    _, payload = invoke(server.client(), function, {"order": order, "sleep": 3})
    waited = time.time() - started - 3
    # Timeout 5 s + 5 s grace from the first claim: the retry could not overlap a first attempt still running.
    assert waited >= 9, "the retry ran %.1f s after the first claim, before its lease lapsed" % waited
    assert time.time() - retried < 20
    assert rows(table, order) == [[payload["ran_as"]]], "exactly one row: the killed attempt's transaction never committed"


def test_a_pure_function_answers_repeated_inputs_from_its_cache(server):
    client = server.client()
    name = unique_name("pure")
    client.create_function(
        FunctionName=name,
        Runtime=PYTHON_RUNTIME,
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": python_zip("import uuid\ndef handler(event, context):\n    return {'n': event['n'] * 2, 'run': str(uuid.uuid4())}\n")},
    )
    wait_until_ready(client, name)
    shown = json.loads(server.wisp_cli("pure", name, "--ttl", "60").stdout)
    assert shown["TtlSeconds"] == 60
    first, computed = invoke(client, name, {"n": 21})
    assert computed["n"] == 42
    # The cache is written after the response has gone, so a call right behind the first may run
    # the function again; every such run is remembered, and the cache answers with one of them.
    runs = {first["ResponseMetadata"]["RequestId"]: computed}
    deadline = time.time() + 5
    while True:
        hit, cached = invoke(client, name, {"n": 21})
        if hit["ResponseMetadata"]["HTTPHeaders"].get("x-wisp-memoized") or time.time() > deadline:
            break
        runs[hit["ResponseMetadata"]["RequestId"]] = cached
        time.sleep(0.05)
    original = hit["ResponseMetadata"]["HTTPHeaders"]["x-wisp-memoized"]
    assert original in runs, "the cache answers with a run that happened"
    computed = runs[original]
    assert cached == computed, "the cached result is that run's"
    again, _ = invoke(client, name, {"n": 21})
    assert again["ResponseMetadata"]["HTTPHeaders"]["x-wisp-memoized"] == original, "the cached entry stays put"
    hit_record = record(server, hit["ResponseMetadata"]["RequestId"])
    assert hit_record["memoized"] is True and hit_record["billed_duration_ms"] == 0 and hit_record["replay_of"] == original
    assert record(server, original)["memo_byte_seconds"] > 0, "the cache entry's cost is metered on the run that made it"
    _, other = invoke(client, name, {"n": 1})
    assert other["n"] == 2 and other["run"] != computed["run"], "another input runs the function"
    # A new configuration revision of $LATEST never sees the old cache.
    client.update_function_configuration(FunctionName=name, Environment={"Variables": {"V": "2"}})
    wait_until_ready(client, name)
    changed, fresh = invoke(client, name, {"n": 21})
    assert "x-wisp-memoized" not in changed["ResponseMetadata"]["HTTPHeaders"] and fresh["run"] != computed["run"]
    status, _, body = signed_request(server, "PUT", "/wisp/v1/functions/%s/memoization" % name, json.dumps({"TtlSeconds": 0}).encode())
    assert status == 400 and b"TtlSeconds 0" in body
