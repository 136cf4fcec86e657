"""Protobuf delivery: functions that take and return binary protobuf, and gRPC server streaming.

A signature's protobuf side may ask for `"Encoding": "Binary"`: the function then receives the
message as binary protobuf (`Content-Type: application/x-protobuf`) and returns binary, while callers
still speak JSON over REST and binary over gRPC. A function bound to a server-streaming method
answers with a sequence of messages (one JSON document per line, or length-delimited binary), which
the gateway sends to the client message by message as the function writes them.

The Python functions below parse and write the protobuf wire format by hand, so they need no
protobuf library inside the sandbox and show that what they get really is binary.
"""

import json
import pathlib
import uuid
import time

import grpc
import pytest

from support import PYTHON_RUNTIME, ROLE, invoke, python_zip, signed_request, unique_name, wait_until_ready, zip_files
from test_grpc import credentials, target

PROTO = """
syntax = "proto3";
package feed.v1;

message Query {
  string topic = 1;
  int32 count = 2;
}

message Item {
  int32 index = 1;
  string text = 2;
}

service Feed {
  rpc Echo(Query) returns (Item);
  rpc Latest(Query) returns (stream Item);
  rpc Upload(stream Item) returns (Query);
}
"""

WIRE = """
def read_varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def parse(data):
    fields, at = {}, 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = read_varint(data, at)
        elif wire == 2:
            length, at = read_varint(data, at)
            value, at = data[at:at + length], at + length
        else:
            raise ValueError("unexpected wire type %d" % wire)
        fields[number] = value
    return fields


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def item(index, text):
    text = text.encode()
    return b"\\x08" + varint(index) + b"\\x12" + varint(len(text)) + text
"""

# Echo, binary both ways: says what it was given (its Python type and size) in `text`.
BINARY_ECHO = WIRE + """
def handler(event, context):
    fields = parse(event)
    topic = fields.get(1, b"").decode()
    if topic == "garbage":
        return b"\\xff\\xff\\xff"
    return item(fields.get(2, 0), "%s:%d:%s" % (type(event).__name__, len(event), topic))
"""

# Latest, buffered, JSON: one document per line.
JSON_LINES = """
import json
import pathlib
import uuid

def handler(event, context):
    if event["topic"] == "fail":
        raise RuntimeError("feed is down")
    lines = [json.dumps({"index": i, "text": event["topic"]}) for i in range(event["count"])]
    if event["topic"] == "bad":
        lines.insert(2, json.dumps({"index": "second"}))
    return ("\\n".join(lines) + "\\n").encode()
"""

# Latest, buffered, binary: length-delimited messages.
BINARY_LINES = WIRE + """
def handler(event, context):
    fields = parse(event)
    topic, count = fields.get(1, b"").decode(), fields.get(2, 0)
    out = b""
    for index in range(count):
        one = item(index, topic)
        out += varint(len(one)) + one
    return out
"""

# Latest, streamed as it goes: a line every 300 ms.
NODE_STREAM = """
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  for (let i = 0; i < event.count; i++) {
    responseStream.write(JSON.stringify({ index: i, text: event.topic }) + "\\n");
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  if (event.topic === "fail") {
    throw new Error("feed broke mid-stream");
  }
  responseStream.end();
});
"""


def protobuf(message, binary=False):
    side = {"Files": {"feed/v1/feed.proto": PROTO}, "Message": message}
    if binary:
        side["Encoding"] = "Binary"
    return {"Protobuf": side}


@pytest.fixture
def typed(wisp, make_function):
    """Creates a function (deleted when the test ends, which frees its method) and sets its signature."""

    def create(source, method, binary=False, runtime=PYTHON_RUNTIME, handler="handler.handler", zip_bytes=None):
        name = make_function(zip_bytes or python_zip(source), runtime=runtime, handler=handler, prefix="feed", Timeout=10)["FunctionName"]
        body = {"Input": protobuf("feed.v1.Query", binary), "Output": protobuf("feed.v1.Item", binary)}
        if method:
            body["GrpcMethod"] = method
        status, _, answer = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % name, json.dumps(body).encode())
        assert status == 200, answer
        return name

    return create


def query(topic, count):
    """A feed.v1.Query in binary, written by hand."""
    topic = topic.encode()
    return b"\x0a" + bytes([len(topic)]) + topic + b"\x10" + bytes([count])


def read_item(data):
    """(index, text) of a binary feed.v1.Item."""

    def varint(at):
        value, shift = 0, 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, at

    fields, at = {}, 0
    while at < len(data):
        key, at = varint(at)
        if key & 7 == 0:
            fields[key >> 3], at = varint(at)
        else:
            length, at = varint(at)
            fields[key >> 3] = data[at : at + length].decode()
            at += length
    return fields.get(1, 0), fields.get(2, "")


@pytest.fixture(scope="module")
def channel(wisp):
    with grpc.insecure_channel(target(wisp)) as opened:
        yield opened


def unary(channel, server, method, request):
    call = channel.unary_unary(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    return call(request, metadata=credentials(server), timeout=30)


def server_stream(channel, server, method, request):
    """[(seconds since the call, (index, text))] of a server-streaming call, and the call."""
    call = channel.unary_stream(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    started = time.monotonic()
    responses = call(request, metadata=credentials(server), timeout=30)
    received = []
    try:
        for message in responses:
            received.append((time.monotonic() - started, read_item(message)))
    except grpc.RpcError as error:
        return received, error
    return received, None


def test_binary_function_gets_and_returns_protobuf_bytes(wisp, typed, lambda_client, channel):
    name = typed(BINARY_ECHO, "feed.v1.Feed/Echo", binary=True)
    # Over gRPC: binary in, binary out; the function saw `bytes` of the request's size.
    request = query("news", 7)
    assert read_item(unary(channel, wisp, "/feed.v1.Feed/Echo", request)) == (7, "bytes:%d:news" % len(request))
    # Over REST the caller speaks JSON; the function still gets binary.
    response, document = invoke(lambda_client, name, {"topic": "news", "count": 7})
    assert "FunctionError" not in response
    assert document == {"index": 7, "text": "bytes:%d:news" % len(request)}


def test_binary_result_that_is_not_the_message_is_an_output_violation(wisp, typed, lambda_client, channel):
    name = typed(BINARY_ECHO, "feed.v1.Feed/Echo", binary=True)
    response, document = invoke(lambda_client, name, {"topic": "garbage", "count": 1})
    assert response["FunctionError"] == "Unhandled"
    assert document["errorType"] == "Wisp.OutputSchemaViolation"
    assert "feed.v1.Item" in document["errorMessage"]
    with pytest.raises(grpc.RpcError) as failure:
        unary(channel, wisp, "/feed.v1.Feed/Echo", query("garbage", 1))
    assert failure.value.code() == grpc.StatusCode.INTERNAL


def test_json_stays_the_default_encoding(wisp, typed, lambda_client, channel):
    source = "def handler(event, context):\n    return {'index': len(event), 'text': type(event).__name__}\n"
    name = typed(source, "feed.v1.Feed/Echo")
    # A REST caller's JSON reaches the function as it was sent.
    _, document = invoke(lambda_client, name, {"topic": "x"})
    assert document == {"index": 1, "text": "dict"}
    # Over gRPC it gets protobuf's JSON mapping, with fields at their defaults included.
    assert read_item(unary(channel, wisp, "/feed.v1.Feed/Echo", query("x", 0))) == (2, "dict")


def test_server_streaming_messages_arrive_as_the_function_writes_them(wisp, typed, channel):
    source = zip_files({"index.js": NODE_STREAM})
    typed(None, "feed.v1.Feed/Latest", runtime="nodejs20.x", handler="index.handler", zip_bytes=source)
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("live", 4))
    assert error is None, error
    assert [message for _, message in received] == [(i, "live") for i in range(4)]
    # Written 300 ms apart, received apart: not held back until the end.
    assert received[-1][0] - received[0][0] > 0.6, received


def test_a_function_that_fails_mid_stream_ends_the_call_with_its_error(wisp, typed, lambda_client, channel):
    source = zip_files({"index.js": NODE_STREAM})
    typed(None, "feed.v1.Feed/Latest", runtime="nodejs20.x", handler="index.handler", zip_bytes=source)
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("fail", 2))
    assert [message for _, message in received] == [(0, "fail"), (1, "fail")]
    assert error is not None and error.code() == grpc.StatusCode.UNKNOWN
    assert "feed broke mid-stream" in error.details()


def test_a_buffered_function_streams_its_lines_and_rest_gets_them_as_json_lines(wisp, typed, lambda_client, channel):
    name = typed(JSON_LINES, "feed.v1.Feed/Latest")
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("batch", 3))
    assert error is None, error
    assert [message for _, message in received] == [(0, "batch"), (1, "batch"), (2, "batch")]
    # A REST invoke checks each line against the output message and returns them as they are.
    _, body = invoke(lambda_client, name, {"topic": "batch", "count": 3})
    lines = body.decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"index": i, "text": "batch"} for i in range(3)]


def test_a_line_that_is_not_the_message_ends_the_stream_after_the_good_ones(wisp, typed, lambda_client, channel):
    name = typed(JSON_LINES, "feed.v1.Feed/Latest")
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("bad", 4))
    assert [message for _, message in received] == [(0, "bad"), (1, "bad")]
    assert error is not None and error.code() == grpc.StatusCode.INTERNAL
    assert "message 2" in error.details() and "feed.v1.Item" in error.details()
    _, document = invoke(lambda_client, name, {"topic": "bad", "count": 4})
    assert document["errorType"] == "Wisp.OutputSchemaViolation"
    assert document["violations"][0]["Pointer"].startswith("/2")


def test_function_error_of_a_buffered_stream_is_the_status(wisp, typed, lambda_client, channel):
    typed(JSON_LINES, "feed.v1.Feed/Latest")
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("fail", 3))
    assert received == []
    assert error.code() == grpc.StatusCode.UNKNOWN and "feed is down" in error.details()


def test_binary_streaming_function_writes_length_delimited_messages(wisp, typed, lambda_client, channel):
    name = typed(BINARY_LINES, "feed.v1.Feed/Latest", binary=True)
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("bin", 5))
    assert error is None, error
    assert [message for _, message in received] == [(i, "bin") for i in range(5)]
    _, body = invoke(lambda_client, name, {"topic": "bin", "count": 2})
    lines = body.decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"index": 0, "text": "bin"}, {"index": 1, "text": "bin"}]


def test_client_streaming_methods_are_refused(wisp, lambda_client):
    name = unique_name("feed")
    lambda_client.create_function(
        FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip("def handler(e, c):\n    return {}\n")}
    )
    wait_until_ready(lambda_client, name)
    body = {"Input": protobuf("feed.v1.Item"), "Output": protobuf("feed.v1.Query"), "GrpcMethod": "feed.v1.Feed/Upload"}
    status, _, answer = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % name, json.dumps(body).encode())
    assert status == 400
    assert "stream of requests" in answer.decode()


def test_binary_encoding_is_refused_on_a_json_schema(wisp, lambda_client):
    name = unique_name("feed")
    lambda_client.create_function(
        FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip("def handler(e, c):\n    return {}\n")}
    )
    wait_until_ready(lambda_client, name)
    body = {"Input": {"JsonSchema": {"type": "object"}, "Encoding": "Binary"}}
    status, _, answer = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % name, json.dumps(body).encode())
    assert status == 400, answer


def test_the_manifest_asks_for_binary_protobuf(wisp, lambda_client, channel, tmp_path):
    name = unique_name("feed-manifest")
    package = "feedm%s" % uuid.uuid4().hex[:6]
    source = tmp_path / "function"
    source.mkdir()
    (source / "handler.py").write_text(BINARY_ECHO)
    (source / "feed.proto").write_text(PROTO.replace("package feed.v1;", "package %s;" % package))
    (source / "wisp.toml").write_text(
        'runtime = "%s"\nhandler = "handler.handler"\nprotos = ["feed.proto"]\nbinary_protobuf = true\n'
        'input_message = "%s.Query"\noutput_message = "%s.Item"\ngrpc_method = "%s.Feed/Echo"\n' % (PYTHON_RUNTIME, package, package, package)
    )
    wisp.wisp_cli("deploy", str(source), "--name", name)
    shown = json.loads(wisp.wisp_cli("signature", name).stdout)
    assert shown["Input"]["Protobuf"]["Encoding"] == "Binary" and shown["Output"]["Protobuf"]["Encoding"] == "Binary"
    request = query("cli", 3)
    assert read_item(unary(channel, wisp, "/%s.Feed/Echo" % package, request)) == (3, "bytes:%d:cli" % len(request))
    lambda_client.delete_function(FunctionName=name)


def test_a_python_handler_may_return_its_messages_as_a_list(wisp, typed, lambda_client, channel):
    source = (
        "def handler(event, context):\n"
        "    items = [{'index': i, 'text': event['topic']} for i in range(event['count'])]\n"
        "    return items + ([{'colour': 'red'}] if event['topic'] == 'bad' else [])\n"
    )
    name = typed(source, "feed.v1.Feed/Latest")
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("list", 3))
    assert error is None, error
    assert [message for _, message in received] == [(0, "list"), (1, "list"), (2, "list")]
    _, document = invoke(lambda_client, name, {"topic": "list", "count": 1})
    assert document == [{"index": 0, "text": "list"}]
    # Each element is checked like a line: the good ones go out, then the call ends.
    received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("bad", 2))
    assert [message for _, message in received] == [(0, "bad"), (1, "bad")]
    assert error.code() == grpc.StatusCode.INTERNAL and "message 2" in error.details()
    _, document = invoke(lambda_client, name, {"topic": "bad", "count": 2})
    assert document["errorType"] == "Wisp.OutputSchemaViolation"
    assert document["violations"][0]["Pointer"] == "/2/colour"


def test_the_callers_deadline_reaches_the_function(wisp, typed, lambda_client, channel):
    source = (
        "import time\n"
        "def handler(event, context):\n"
        "    time.sleep(event['count'])\n"
        "    return {'index': context.get_remaining_time_in_millis(), 'text': event['topic']}\n"
    )
    name = typed(source, "feed.v1.Feed/Echo")
    lambda_client.update_function_configuration(FunctionName=name, Timeout=60)
    wait_until_ready(lambda_client, name)
    call = channel.unary_unary("/feed.v1.Feed/Echo", request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    # The function's timeout is 60 s; the call's deadline of 5 s is what it is told.
    remaining, _ = read_item(call(query("soon", 0), metadata=credentials(wisp), timeout=5))
    assert 1000 < remaining <= 5000, remaining
    # Without a deadline it is told its own timeout.
    remaining, _ = read_item(call(query("later", 0), metadata=credentials(wisp)))
    assert 50000 < remaining <= 60000, remaining
    # A call whose deadline passes ends with DEADLINE_EXCEEDED; the invocation still runs to its end.
    with pytest.raises(grpc.RpcError) as failure:
        call(query("late", 2), metadata=credentials(wisp), timeout=0.5)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.time() + 20
    while True:
        status, _, body = signed_request(wisp, "GET", "/wisp/v1/functions/%s/invocations?limit=100" % name)
        assert status == 200, body
        finished = [record for record in json.loads(body)["Invocations"] if record["status"] == "succeeded" and record["duration_us"] >= 2_000_000]
        if finished:
            break
        assert time.time() < deadline, body
        time.sleep(0.3)


def test_the_feed_example_streams_over_grpc_and_answers_rest_with_a_list(wisp, lambda_client, channel):
    name = unique_name("feed-example")
    wisp.wisp_cli("deploy", str(pathlib.Path(__file__).resolve().parents[2] / "examples" / "feed-grpc"), "--name", name)
    try:
        received, error = server_stream(channel, wisp, "/feed.v1.Feed/Latest", query("rust", 2))
        assert error is None, error
        assert [message for _, message in received] == [(0, "rust #0"), (1, "rust #1")]
        _, document = invoke(lambda_client, name, {"topic": "go"})
        assert document == [{"index": i, "title": "go #%d" % i} for i in range(3)]
    finally:
        lambda_client.delete_function(FunctionName=name)
