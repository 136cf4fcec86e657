"""Response streaming: InvokeWithResponseStream through boto3 and `wisp invoke --stream`.

Functions under test: tests/functions/node-stream (`awslambda.streamifyResponse`, errors sent as
HTTP trailers), fixtures/rust-echo's stream mode (the `lambda_runtime` crate, errors written inline
in the body), and a buffered Python function, which streams as one chunk.
"""

import base64
import json
import subprocess
import time

import pytest

from support import expect_error, function_zip, python_zip, unique_name, wait_until_ready, zip_files

# What `lambda_runtime` writes before the first chunk: its metadata prelude and eight NUL bytes.
# InvokeWithResponseStream passes it on unchanged, as Lambda does.
RUST_PRELUDE = b'{"statusCode":200,"headers":{"content-type":"application/octet-stream"},"cookies":[]}' + b"\0" * 8


def read_stream(response):
    """The events of an InvokeWithResponseStream answer: [(seconds since the call, chunk)], completion."""
    chunks = []
    completion = None
    started = time.monotonic()
    for event in response["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.monotonic() - started, event["PayloadChunk"]["Payload"]))
        elif "InvokeComplete" in event:
            completion = event["InvokeComplete"]
    assert completion is not None, "the stream ended without InvokeComplete"
    return chunks, completion


def payload_of(chunks):
    return b"".join(chunk for _, chunk in chunks)


@pytest.fixture
def node_stream(make_function):
    return make_function(function_zip("node-stream"), runtime="nodejs20.x", handler="index.handler", prefix="nstream", Timeout=10)


@pytest.fixture
def rust_stream(make_function, rust_echo_bootstrap):
    code = zip_files({"bootstrap": (rust_echo_bootstrap.read_bytes(), 0o755)})
    return make_function(code, runtime="provided.al2023", handler="bootstrap", prefix="rstream", Timeout=3)


@pytest.fixture
def buffered_function(make_function):
    return make_function(function_zip("py-echo"), prefix="buffered")


def test_chunks_arrive_as_the_function_writes_them_not_at_the_end(lambda_client, node_stream):
    name = node_stream["FunctionName"]
    response = lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"chunks": 6, "interval_ms": 500})
    )
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    chunks, completion = read_stream(response)
    assert payload_of(chunks) == b"".join(b"chunk %d\n" % index for index in range(6))
    assert "ErrorCode" not in completion, completion
    arrivals = [at for at, _ in chunks]
    # The function writes for 2.5 s: the first chunk must come long before the last.
    assert arrivals[-1] - arrivals[0] >= 2.0, arrivals
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert all(gap >= 0.3 for gap in gaps), gaps


def test_rust_runtime_streams_over_several_seconds(lambda_client, rust_stream):
    response = lambda_client.invoke_with_response_stream(
        FunctionName=rust_stream["FunctionName"],
        Payload=json.dumps({"stream": {"chunks": 5, "interval_ms": 500}}),
    )
    chunks, completion = read_stream(response)
    assert payload_of(chunks) == RUST_PRELUDE + b"".join(b"chunk %d\n" % index for index in range(5))
    assert completion.get("ErrorCode") is None, completion
    first_chunk = next(at for at, chunk in chunks if chunk.startswith(b"chunk 0"))
    last_chunk = next(at for at, chunk in chunks if chunk.startswith(b"chunk 4"))
    assert last_chunk - first_chunk >= 1.5, chunks


def test_mid_stream_error_from_http_trailers_ends_the_stream(lambda_client, node_stream):
    response = lambda_client.invoke_with_response_stream(
        FunctionName=node_stream["FunctionName"],
        Payload=json.dumps({"chunks": 5, "interval_ms": 50, "fail_after": 2}),
        LogType="Tail",
    )
    chunks, completion = read_stream(response)
    assert payload_of(chunks) == b"chunk 0\nchunk 1\n"
    assert completion["ErrorCode"] == "RangeError"
    assert completion["ErrorDetails"] == "failed after 2 chunks"
    log = base64.b64decode(completion["LogResult"]).decode()
    assert "Invoke Error" in log and "REPORT RequestId: " in log


def test_mid_stream_error_written_inline_by_the_rust_runtime(lambda_client, rust_stream):
    response = lambda_client.invoke_with_response_stream(
        FunctionName=rust_stream["FunctionName"],
        Payload=json.dumps({"stream": {"chunks": 5, "interval_ms": 50, "fail_after": 2}}),
    )
    chunks, completion = read_stream(response)
    # The inline error is taken out of the payload, not passed on as data.
    assert payload_of(chunks) == RUST_PRELUDE + b"chunk 0\nchunk 1\n"
    assert completion["ErrorCode"] == "Runtime.StreamError"
    assert completion["ErrorDetails"] == "stream failed after 2 chunks"


def test_timeout_mid_stream_ends_the_stream_and_the_function_still_serves(lambda_client, make_function):
    name = make_function(function_zip("node-stream"), runtime="nodejs20.x", handler="index.handler", prefix="late", Timeout=2)["FunctionName"]
    response = lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"chunks": 100, "interval_ms": 200}), LogType="Tail"
    )
    chunks, completion = read_stream(response)
    assert 4 <= len(chunks) < 100, chunks
    assert completion["ErrorCode"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in completion["ErrorDetails"]
    assert "REPORT RequestId: " in base64.b64decode(completion["LogResult"]).decode()
    # The timed-out instance was replaced.
    chunks, completion = read_stream(lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b"{}"))
    assert payload_of(chunks) == b"chunk 0\nchunk 1\nchunk 2\n"
    assert "ErrorCode" not in completion


def test_a_crash_mid_stream_ends_the_stream_with_the_exit_error(lambda_client, node_stream):
    name = node_stream["FunctionName"]
    response = lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"chunks": 5, "interval_ms": 100, "exit_after": 2})
    )
    chunks, completion = read_stream(response)
    assert payload_of(chunks) == b"chunk 0\nchunk 1\n"
    assert completion["ErrorCode"] == "Runtime.ExitError"
    assert "exit status 3" in completion["ErrorDetails"]
    chunks, completion = read_stream(lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"chunks": 1}'))
    assert payload_of(chunks) == b"chunk 0\n" and "ErrorCode" not in completion


def test_buffered_function_streams_its_whole_response_as_one_chunk(lambda_client, buffered_function):
    name = buffered_function["FunctionName"]
    response = lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"name":"Ada"}', LogType="Tail")
    chunks, completion = read_stream(response)
    assert len(chunks) == 1
    payload = json.loads(payload_of(chunks))
    assert payload["event"] == {"name": "Ada"}
    assert payload["context"]["aws_request_id"] == response["ResponseMetadata"]["RequestId"]
    assert "ErrorCode" not in completion
    log = base64.b64decode(completion["LogResult"]).decode()
    assert "START RequestId: %s" % response["ResponseMetadata"]["RequestId"] in log


def test_buffered_function_error_comes_in_invoke_complete(lambda_client, make_function):
    name = make_function(function_zip("py-raise"), prefix="raiser")["FunctionName"]
    chunks, completion = read_stream(lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b"{}"))
    assert chunks == []
    assert completion["ErrorCode"] == "PaymentDeclined"
    assert completion["ErrorDetails"] == "card 4242 declined"


def test_streaming_function_called_with_plain_invoke_answers_the_whole_stream(lambda_client, node_stream):
    response = lambda_client.invoke(FunctionName=node_stream["FunctionName"], Payload=b'{"chunks": 2}')
    assert "FunctionError" not in response
    assert response["Payload"].read() == b"chunk 0\nchunk 1\n"


def test_http_response_stream_writes_its_prelude_first(lambda_client, node_stream):
    chunks, _ = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=node_stream["FunctionName"], Payload=b'{"http": true, "chunks": 1}')
    )
    prelude, separator, body = payload_of(chunks).partition(b"\0" * 8)
    assert separator and body == b"chunk 0\n"
    assert json.loads(prelude) == {"statusCode": 201, "headers": {"content-type": "text/plain"}}


def test_qualifiers_and_name_forms_select_the_version(lambda_client, make_function):
    configuration = make_function(python_zip("def handler(event, context):\n    return 'one'\n"), prefix="qstream")
    name = configuration["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip("def handler(event, context):\n    return 'two'\n"))
    wait_until_ready(lambda_client, name)
    for function_name, qualifier, version, answer in [
        (name, None, "$LATEST", b'"two"'),
        (name, "1", "1", b'"one"'),
        (name, "live", "1", b'"one"'),
        (name + ":live", None, "1", b'"one"'),
        (configuration["FunctionArn"], None, "$LATEST", b'"two"'),
        (configuration["FunctionArn"] + ":1", None, "1", b'"one"'),
    ]:
        arguments = {"FunctionName": function_name, "Payload": b"{}"}
        if qualifier:
            arguments["Qualifier"] = qualifier
        response = lambda_client.invoke_with_response_stream(**arguments)
        assert response["ExecutedVersion"] == version, (function_name, qualifier)
        chunks, _ = read_stream(response)
        assert payload_of(chunks) == answer, (function_name, qualifier)


def test_dry_run_checks_without_running(lambda_client, buffered_function):
    response = lambda_client.invoke_with_response_stream(FunctionName=buffered_function["FunctionName"], InvocationType="DryRun")
    assert response["StatusCode"] == 204
    assert response["ExecutedVersion"] == "$LATEST"


def test_errors_before_the_stream_starts_are_invokes_errors(lambda_client, raw_client, buffered_function, make_function):
    name = buffered_function["FunctionName"]
    expect_error("ResourceNotFoundException", 404, lambda_client.invoke_with_response_stream, FunctionName=unique_name("missing"))
    expect_error("InvalidRequestContentException", 400, lambda_client.invoke_with_response_stream, FunctionName=name, Payload=b"{not json")
    expect_error("RequestTooLargeException", 413, lambda_client.invoke_with_response_stream, FunctionName=name, Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
    expect_error("InvalidParameterValueException", 400, raw_client.invoke_with_response_stream, FunctionName=name, InvocationType="Event")
    throttled = make_function(function_zip("py-echo"), prefix="throttled")["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=throttled, ReservedConcurrentExecutions=0)
    expect_error("TooManyRequestsException", 429, lambda_client.invoke_with_response_stream, FunctionName=throttled)


def test_records_and_report_lines_of_streamed_invocations(wisp, lambda_client, node_stream):
    name = node_stream["FunctionName"]
    response = lambda_client.invoke_with_response_stream(FunctionName=name, Payload=json.dumps({"chunks": 2, "interval_ms": 100}))
    read_stream(response)
    request_id = response["ResponseMetadata"]["RequestId"]
    deadline = time.time() + 10
    while True:
        listed = wisp.wisp_cli("--output", "json", "invocations", name)
        if request_id in listed.stdout or time.time() > deadline:
            break
        time.sleep(0.2)
    records = json.loads(listed.stdout)
    record = next(record for record in records if record["request_id"] == request_id)
    assert record["status"] == "succeeded"
    assert record["duration_us"] >= 100_000


def test_wisp_invoke_stream_prints_chunks_as_they_arrive(wisp, node_stream):
    environment = {
        "AWS_ACCESS_KEY_ID": wisp.access_key,
        "AWS_SECRET_ACCESS_KEY": wisp.secret_key,
        "PATH": "/usr/bin:/bin",
    }
    process = subprocess.Popen(
        [str(wisp.binary), "--endpoint", wisp.endpoint, "invoke", node_stream["FunctionName"], "--stream",
         "--payload", json.dumps({"chunks": 4, "interval_ms": 500})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    arrivals = []
    started = time.monotonic()
    for line in process.stdout:
        arrivals.append((time.monotonic() - started, line))
    assert process.wait(timeout=30) == 0, process.stderr.read()
    assert [line for _, line in arrivals] == [b"chunk %d\n" % index for index in range(4)]
    assert arrivals[-1][0] - arrivals[0][0] >= 1.2, arrivals


def test_wisp_invoke_stream_fails_with_the_error(wisp, node_stream):
    completed = wisp.wisp_cli(
        "invoke", node_stream["FunctionName"], "--stream", "--payload", json.dumps({"chunks": 3, "fail_after": 1}), check=False
    )
    assert completed.returncode == 2
    assert completed.stdout == "chunk 0\n"
    assert "RangeError: failed after 1 chunks" in completed.stderr


def test_a_caller_that_hangs_up_mid_stream_does_not_cancel_the_invocation(wisp, lambda_client, make_function):
    name = make_function(function_zip("node-stream"), runtime="nodejs20.x", handler="index.handler", prefix="hangup", Timeout=10)["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    response = lambda_client.invoke_with_response_stream(FunctionName=name, Payload=json.dumps({"chunks": 8, "interval_ms": 250}))
    request_id = response["ResponseMetadata"]["RequestId"]
    events = iter(response["EventStream"])
    assert "PayloadChunk" in next(events)
    response["EventStream"].close()
    # The invocation still runs and holds the only slot.
    expect_error("TooManyRequestsException", 429, lambda_client.invoke_with_response_stream, FunctionName=name)
    deadline = time.time() + 15
    record = None
    while record is None and time.time() < deadline:
        records = json.loads(wisp.wisp_cli("--output", "json", "invocations", name).stdout)
        record = next((record for record in records if record["request_id"] == request_id), None)
        time.sleep(0.2)
    assert record is not None, "the abandoned invocation was never recorded"
    assert record["status"] == "succeeded"
    assert record["duration_us"] >= 1_500_000
    chunks, completion = read_stream(lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"chunks": 1}'))
    assert payload_of(chunks) == b"chunk 0\n" and "ErrorCode" not in completion


def test_a_stream_over_20_mb_ends_with_response_size_too_large(lambda_client, node_stream):
    response = lambda_client.invoke_with_response_stream(FunctionName=node_stream["FunctionName"], Payload=b'{"megabytes": 21}')
    chunks, completion = read_stream(response)
    assert len(payload_of(chunks)) <= 20 * 1024 * 1024
    assert completion["ErrorCode"] == "Function.ResponseSizeTooLarge"
    # Within the limit, the whole stream arrives.
    chunks, completion = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=node_stream["FunctionName"], Payload=b'{"megabytes": 19}')
    )
    assert len(payload_of(chunks)) == 19 * 1024 * 1024 and "ErrorCode" not in completion
