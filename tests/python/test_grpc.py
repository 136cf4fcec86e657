"""gRPC: protobuf-typed functions served over gRPC (HTTP/2 cleartext on the API's port), with reflection.

A function whose signature has protobuf messages and a `GrpcMethod` is called from Python `grpcio`
through stubs generated at test time with `grpc_tools.protoc`, and through server reflection without
the `.proto`. Errors map onto gRPC status codes; the same messages check REST invokes too.
"""

import collections
import importlib
import importlib.resources
import json
import sys
import time
import uuid

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from support import PYTHON_RUNTIME, ROLE, expect_error, invoke, python_zip, signed_request, unique_name, wait_until_ready, zip_files

PROTO = """
syntax = "proto3";
package shop.v1;

import "google/protobuf/timestamp.proto";

message Line {
  string sku = 1;
  int32 quantity = 2;
}

message PlaceRequest {
  string customer_id = 1;
  repeated Line lines = 2;
  google.protobuf.Timestamp placed_at = 3;
}

message PlaceReply {
  int64 total = 1;
  string customer = 2;
}

service Orders {
  rpc Place(PlaceRequest) returns (PlaceReply);
  rpc Cancel(PlaceRequest) returns (PlaceReply);
}
"""

# The function sees protobuf's JSON mapping (lowerCamelCase names, defaults included) and answers in it.
HANDLER = """
import time

def handler(event, context):
    customer = event["customerId"]
    if customer == "fail":
        raise ValueError("out of stock")
    if customer == "slow":
        time.sleep(10)
    if customer == "wrong":
        return {"total": "many"}
    if customer == "when":
        return {"total": 0, "customer": str(event["placedAt"])}
    total = sum(line["quantity"] * 3 for line in event["lines"])
    return {"total": str(total), "customer": customer}
"""


def signature(method="shop.v1.Orders/Place", proto=PROTO, input_message="shop.v1.PlaceRequest"):
    files = {"shop/v1/shop.proto": proto}
    result = {
        "Input": {"Protobuf": {"Files": files, "Message": input_message}},
        "Output": {"Protobuf": {"Files": files, "Message": "shop.v1.PlaceReply"}},
    }
    if method:
        result["GrpcMethod"] = method
    return result


def put_signature(server, name, body):
    return signed_request(server, "PUT", "/wisp/v1/functions/%s/signature" % name, json.dumps(body).encode())


@pytest.fixture(scope="module")
def orders(wisp, lambda_client):
    name = unique_name("orders")
    lambda_client.create_function(
        FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Timeout=2, Code={"ZipFile": python_zip(HANDLER)}
    )
    wait_until_ready(lambda_client, name)
    status, _, body = put_signature(wisp, name, signature())
    assert status == 200, body
    return name


def target(server):
    return server.endpoint.replace("http://", "")


def credentials(server):
    return (("authorization", "Wisp %s:%s" % (server.access_key, server.secret_key)),)


@pytest.fixture(scope="module")
def channel(wisp, orders):
    with grpc.insecure_channel(target(wisp)) as opened:
        yield opened


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """shop_pb2 and shop_pb2_grpc, generated from PROTO with grpc_tools.protoc."""
    from grpc_tools import protoc

    directory = tmp_path_factory.mktemp("stubs")
    (directory / "shop.proto").write_text(PROTO)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    assert protoc.main(["protoc", "-I%s" % directory, "-I%s" % well_known, "--python_out=%s" % directory, "--grpc_python_out=%s" % directory, str(directory / "shop.proto")]) == 0
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module("shop_pb2"), importlib.import_module("shop_pb2_grpc")
    finally:
        sys.path.remove(str(directory))


def raw_call(channel, method, request_bytes, metadata, timeout=30):
    call = channel.unary_unary(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    return call(request_bytes, metadata=metadata, timeout=timeout)


def test_generated_stubs_invoke_the_function(wisp, orders, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    stub = shop_pb2_grpc.OrdersStub(channel)
    request = shop_pb2.PlaceRequest(customer_id="c-1", lines=[shop_pb2.Line(sku="a", quantity=2), shop_pb2.Line(sku="b", quantity=5)])
    reply, call = stub.Place.with_call(request, metadata=credentials(wisp), timeout=60)
    assert reply.total == 21
    assert reply.customer == "c-1"
    request_id = dict(call.initial_metadata())["wisp-request-id"]
    # The record is written in the background: wait for it.
    deadline = time.time() + 10
    while True:
        status, _, body = signed_request(wisp, "GET", "/wisp/v1/invocations/%s" % request_id)
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert status == 200, body
    assert json.loads(body)["function_name"] == orders


def test_well_known_types_reach_the_function_in_their_json_form(wisp, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    request = shop_pb2.PlaceRequest(customer_id="when")
    request.placed_at.FromJsonString("2026-12-04T10:00:00Z")
    reply = shop_pb2_grpc.OrdersStub(channel).Place(request, metadata=credentials(wisp), timeout=60)
    assert reply.customer == "2026-12-04T10:00:00Z"


def test_reflection_lists_and_calls_the_function_without_the_proto(wisp, channel, stubs):
    intercepted = grpc.intercept_channel(channel, Credentials(credentials(wisp)))
    database = ProtoReflectionDescriptorDatabase(intercepted)
    assert "shop.v1.Orders" in database.get_services()
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("shop.v1.Orders")
    method = service.FindMethodByName("Place")
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    assert method.input_type.fields_by_name["placed_at"].message_type.full_name == "google.protobuf.Timestamp"
    request = request_class(customer_id="c-2")
    line = request.lines.add()
    line.sku = "x"
    line.quantity = 4
    call = channel.unary_unary("/shop.v1.Orders/Place", request_serializer=lambda message: message.SerializeToString(), response_deserializer=reply_class.FromString)
    reply = call(request, metadata=credentials(wisp), timeout=60)
    assert reply.total == 12
    assert reply.customer == "c-2"


def test_reflection_v1_answers_each_request_on_one_stream(wisp, channel):
    from grpc_reflection.v1alpha import reflection_pb2  # v1 has the same messages and field numbers

    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="shop.v1.Orders.Place"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="google/protobuf/timestamp.proto"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="nowhere.proto"),
    ]
    answers = list(call(iter(requests), metadata=credentials(wisp), timeout=30))
    assert len(answers) == 4
    assert "shop.v1.Orders" in [service.name for service in answers[0].list_services_response.service]
    from google.protobuf import descriptor_pb2

    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in answers[1].file_descriptor_response.file_descriptor_proto]
    assert [file.name for file in files] == ["shop/v1/shop.proto", "google/protobuf/timestamp.proto"]
    assert answers[2].file_descriptor_response.file_descriptor_proto
    assert answers[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_reflection_refuses_a_symbol_it_does_not_serve(wisp, channel):
    intercepted = grpc.intercept_channel(channel, Credentials(credentials(wisp)))
    database = ProtoReflectionDescriptorDatabase(intercepted)
    with pytest.raises(KeyError):
        database.FindFileContainingSymbol("shop.v1.Nowhere")


def test_a_request_that_is_not_the_message_is_invalid_argument(wisp, channel):
    with pytest.raises(grpc.RpcError) as raised:
        raw_call(channel, "/shop.v1.Orders/Place", b"\xff\xff\xff", credentials(wisp))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shop.v1.PlaceRequest" in raised.value.details()


def test_an_unbound_method_is_unimplemented(wisp, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    with pytest.raises(grpc.RpcError) as raised:
        shop_pb2_grpc.OrdersStub(channel).Cancel(shop_pb2.PlaceRequest(customer_id="c"), metadata=credentials(wisp), timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "shop.v1.Orders/Cancel" in raised.value.details()


def test_a_function_error_is_unknown_with_its_message(wisp, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    with pytest.raises(grpc.RpcError) as raised:
        shop_pb2_grpc.OrdersStub(channel).Place(shop_pb2.PlaceRequest(customer_id="fail"), metadata=credentials(wisp), timeout=60)
    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    assert "out of stock" in raised.value.details()
    assert dict(raised.value.trailing_metadata())["wisp-function-error"] == "ValueError"


def test_a_result_that_breaks_the_output_message_is_internal(wisp, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    with pytest.raises(grpc.RpcError) as raised:
        shop_pb2_grpc.OrdersStub(channel).Place(shop_pb2.PlaceRequest(customer_id="wrong"), metadata=credentials(wisp), timeout=60)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "Wisp.OutputSchemaViolation" in raised.value.details()


def test_a_timeout_is_deadline_exceeded(wisp, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    with pytest.raises(grpc.RpcError) as raised:
        shop_pb2_grpc.OrdersStub(channel).Place(shop_pb2.PlaceRequest(customer_id="slow"), metadata=credentials(wisp), timeout=60)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "timed out" in raised.value.details()


def test_throttling_is_resource_exhausted(wisp, lambda_client, orders, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    lambda_client.put_function_concurrency(FunctionName=orders, ReservedConcurrentExecutions=0)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            shop_pb2_grpc.OrdersStub(channel).Place(shop_pb2.PlaceRequest(customer_id="c"), metadata=credentials(wisp), timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        lambda_client.delete_function_concurrency(FunctionName=orders)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="none"),
        pytest.param((("authorization", "Bearer token"),), id="malformed"),
        pytest.param((("authorization", "Wisp AKIANOTAKEY:secret"),), id="unknown-key"),
    ],
)
def test_calls_without_valid_credentials_are_unauthenticated(wisp, channel, stubs, metadata):
    shop_pb2, shop_pb2_grpc = stubs
    with pytest.raises(grpc.RpcError) as raised:
        shop_pb2_grpc.OrdersStub(channel).Place(shop_pb2.PlaceRequest(customer_id="c"), metadata=metadata, timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_wrong_secret_is_unauthenticated(wisp, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    metadata = (("authorization", "Wisp %s:%s" % (wisp.access_key, "x" * 40)),)
    with pytest.raises(grpc.RpcError) as raised:
        shop_pb2_grpc.OrdersStub(channel).Place(shop_pb2.PlaceRequest(customer_id="c"), metadata=metadata, timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "secret" in raised.value.details()


def test_a_request_over_the_payload_limit_is_resource_exhausted(wisp, channel):
    with pytest.raises(grpc.RpcError) as raised:
        raw_call(channel, "/shop.v1.Orders/Place", b"\x0a" + b"\x80\x80\xc0\x03" + b"x" * (7 * 1024 * 1024), credentials(wisp))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_qualifier_metadata_calls_an_alias(wisp, lambda_client, orders, channel, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    version = lambda_client.publish_version(FunctionName=orders)["Version"]
    lambda_client.create_alias(FunctionName=orders, Name="live", FunctionVersion=version)
    metadata = credentials(wisp) + (("wisp-qualifier", "live"),)
    reply, call = shop_pb2_grpc.OrdersStub(channel).Place.with_call(
        shop_pb2.PlaceRequest(customer_id="c-4", lines=[shop_pb2.Line(sku="a", quantity=1)]), metadata=metadata, timeout=60
    )
    assert reply.total == 3
    request_id = dict(call.initial_metadata())["wisp-request-id"]
    deadline = time.time() + 10
    while True:
        status, _, body = signed_request(wisp, "GET", "/wisp/v1/invocations/%s" % request_id)
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert status == 200, body
    assert json.loads(body)["version"] == version
    with pytest.raises(grpc.RpcError) as raised:
        shop_pb2_grpc.OrdersStub(channel).Place(shop_pb2.PlaceRequest(customer_id="c"), metadata=credentials(wisp) + (("wisp-qualifier", "nowhere"),), timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_dev_server_takes_calls_without_credentials(server_factory, stubs):
    server = server_factory("grpc-dev", ["--dev"])
    client = server.client()
    name = unique_name("orders-dev")
    client.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(HANDLER)})
    wait_until_ready(client, name)
    status, _, body = put_signature(server, name, signature())
    assert status == 200, body
    shop_pb2, shop_pb2_grpc = stubs
    with grpc.insecure_channel(target(server)) as opened:
        reply = shop_pb2_grpc.OrdersStub(opened).Place(shop_pb2.PlaceRequest(customer_id="d", lines=[shop_pb2.Line(quantity=2)]), timeout=60)
    assert reply.total == 6


def test_rest_invokes_are_checked_against_the_message(lambda_client, orders):
    response, body = invoke(lambda_client, orders, {"customerId": "c-3", "lines": [{"sku": "a", "quantity": 1}]})
    assert "FunctionError" not in response, body
    assert body == {"total": "3", "customer": "c-3"}
    error = expect_error("InputSchemaViolationException", 400, invoke, lambda_client, orders, {"customerId": "c", "lines": [{"quantity": "many"}]})
    assert "/lines/0/quantity" in str(error)
    error = expect_error("InputSchemaViolationException", 400, invoke, lambda_client, orders, {"customerId": "c", "colour": "red"})
    assert "at /colour: unrecognized field name 'colour'" in str(error)


def test_invalid_proto_and_unknown_names_are_refused(wisp, orders):
    cases = [
        (signature(proto="syntax = \"proto3\";\nmessage {"), "do not compile: shop/v1/shop.proto:2:9: "),
        (signature(input_message="shop.v1.Missing"), "shop.v1.Missing"),
        (signature(method="shop.v1.Orders/Refund"), "shop.v1.Orders/Place"),
        (signature(method="shop.v1.Orders"), "package.Service/Method"),
    ]
    for body, expected in cases:
        status, headers, answer = put_signature(wisp, orders, body)
        assert status == 400, answer
        assert headers["x-amzn-errortype"] == "InvalidParameterValueException"
        assert expected in json.loads(answer)["message"], answer


def test_a_method_is_served_by_one_function_only(wisp, lambda_client, orders):
    name = unique_name("orders-twin")
    lambda_client.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(HANDLER)})
    wait_until_ready(lambda_client, name)
    status, headers, answer = put_signature(wisp, name, signature())
    assert status == 409, answer
    assert orders in json.loads(answer)["message"]
    lambda_client.delete_function(FunctionName=name)


def test_wisp_cli_sets_a_protobuf_signature(wisp, lambda_client, channel, tmp_path):
    name = unique_name("cli-orders")
    source = tmp_path / "function"
    source.mkdir()
    (source / "handler.py").write_text(HANDLER)
    proto = tmp_path / "shop" / "v1" / "cancel.proto"
    proto.parent.mkdir(parents=True)
    # Another package, so the shared server's shop.v1.Orders/Place keeps its function.
    proto.write_text(PROTO.replace("package shop.v1;", "package cli%s;" % uuid.uuid4().hex[:6]))
    package = proto.read_text().split("package ")[1].split(";")[0]
    wisp.wisp_cli(
        "deploy", str(source), "--name", name, "--runtime", PYTHON_RUNTIME, "--handler", "handler.handler",
        "--proto", "shop/v1/cancel.proto", "--input-message", package + ".PlaceRequest", "--output-message", package + ".PlaceReply",
        "--grpc-method", package + ".Orders/Cancel", cwd=tmp_path,
    )
    shown = json.loads(wisp.wisp_cli("signature", name).stdout)
    assert shown["GrpcMethod"] == package + ".Orders/Cancel"
    assert list(shown["Input"]["Protobuf"]["Files"]) == ["shop/v1/cancel.proto"]
    reply = raw_call(channel, "/%s.Orders/Cancel" % package, b"\x0a\x01z\x12\x05\x0a\x01a\x10\x07", credentials(wisp))
    # total = 7 * 3 (field 1, varint), customer = "z" (field 2)
    assert reply == b"\x08\x15\x12\x01z"
    lambda_client.delete_function(FunctionName=name)
    with pytest.raises(grpc.RpcError) as raised:
        raw_call(channel, "/%s.Orders/Cancel" % package, b"", credentials(wisp))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


class CallDetails(collections.namedtuple("CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")), grpc.ClientCallDetails):
    pass


class Credentials(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the authorization metadata to calls made by code that takes no metadata (the reflection client)."""

    def __init__(self, metadata):
        self.metadata = list(metadata)

    def _details(self, details):
        return CallDetails(details.method, details.timeout, list(details.metadata or []) + self.metadata, details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def test_a_protobuf_typed_destination_that_cannot_take_the_record_is_refused(lambda_client, orders):
    source = unique_name("orders-source")
    lambda_client.create_function(FunctionName=source, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(HANDLER)})
    wait_until_ready(lambda_client, source)
    target_arn = lambda_client.get_function(FunctionName=orders)["Configuration"]["FunctionArn"]
    error = expect_error(
        "InvalidParameterValueException",
        400,
        lambda_client.put_function_event_invoke_config,
        FunctionName=source,
        DestinationConfig={"OnSuccess": {"Destination": target_arn}},
    )
    # shop.v1.PlaceRequest has no field for the invocation record's `requestContext`.
    assert "does not accept" in str(error) and "requestContext" in str(error), error
    lambda_client.delete_function(FunctionName=source)


def test_the_manifest_sets_a_protobuf_signature(wisp, lambda_client, channel, tmp_path):
    name = unique_name("manifest-orders")
    package = "manifest%s" % uuid.uuid4().hex[:6]
    source = tmp_path / "function"
    (source / "protos").mkdir(parents=True)
    (source / "handler.py").write_text(HANDLER)
    (source / "protos" / "shop.proto").write_text(PROTO.replace("package shop.v1;", "package %s;" % package))
    (source / "wisp.toml").write_text(
        'runtime = "%s"\nhandler = "handler.handler"\nprotos = ["protos/shop.proto"]\n'
        'input_message = "%s.PlaceRequest"\noutput_message = "%s.PlaceReply"\ngrpc_method = "%s.Orders/Place"\n'
        % (PYTHON_RUNTIME, package, package, package)
    )
    wisp.wisp_cli("deploy", str(source), "--name", name)
    shown = json.loads(wisp.wisp_cli("signature", name).stdout)
    assert list(shown["Output"]["Protobuf"]["Files"]) == ["protos/shop.proto"]
    assert shown["GrpcMethod"] == package + ".Orders/Place"
    reply = raw_call(channel, "/%s.Orders/Place" % package, b"\x0a\x01m", credentials(wisp))
    assert reply == b"\x12\x01m"  # total 0 is the default, so only customer = "m" is on the wire
    lambda_client.delete_function(FunctionName=name)


def test_a_protobuf_typed_source_is_checked_against_its_destination(wisp, lambda_client):
    # The source sends what maps onto its messages: `total` is an int64, which protobuf's JSON mapping
    # may write as a string, so a destination that insists on a JSON integer is refused.
    source = unique_name("typed-source")
    lambda_client.create_function(FunctionName=source, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(HANDLER)})
    wait_until_ready(lambda_client, source)
    status, _, body = put_signature(wisp, source, signature(method=None))
    assert status == 200, body

    def destination(total_schema):
        name = unique_name("typed-destination")
        arn = lambda_client.create_function(
            FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip("def handler(event, context):\n    return None\n")}
        )["FunctionArn"]
        schema = {"type": "object", "properties": {"responsePayload": {"type": "object", "properties": {"total": total_schema}}}}
        status, _, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % name, json.dumps({"Input": {"JsonSchema": schema}}).encode())
        assert status == 200, body
        return arn

    strict = destination({"type": "integer"})
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException) as refused:
        lambda_client.put_function_event_invoke_config(FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": strict}})
    message = refused.value.response["Error"]["Message"]
    assert "/responsePayload/total" in message and "expected integer" in message and "string" in message, message
    lenient = destination({"type": ["integer", "string", "null"]})
    lambda_client.put_function_event_invoke_config(FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": lenient}})


ROUTED_PROTO = """
syntax = "proto3";
package %s;

message PlaceRequest { string customer_id = 1; int32 quantity = 2; }
message PlaceReply { int64 total = 1; string handler = 2; }
message CancelRequest { string order_id = 1; }
message CancelReply { bool cancelled = 1; string order_id = 2; string handler = 3; }

service Orders {
  rpc Place(PlaceRequest) returns (PlaceReply);
  rpc Cancel(CancelRequest) returns (CancelReply);
  rpc Watch(CancelRequest) returns (stream CancelReply);
}
"""

# One function, one module, a handler per method; its own handler is never called here.
ROUTED_APP = """
import json

def place(event, context):
    return {"total": str(event["quantity"] * 3), "handler": "place"}

def cancel(event, context):
    return {"cancelled": True, "orderId": event["orderId"], "handler": "cancel"}

def watch(event, context):
    # A server-streaming method's result: one message per line.
    lines = [json.dumps({"orderId": "%s-%d" % (event["orderId"], i), "handler": "watch"}) for i in range(3)]
    return ("\\n".join(lines) + "\\n").encode()

def handler(event, context):
    raise RuntimeError("the function's own handler is not routed to")
"""


def routed_signature(package, proto, request, reply):
    files = {"routed/orders.proto": proto}
    return {
        "Input": {"Protobuf": {"Files": files, "Message": "%s.%s" % (package, request)}},
        "Output": {"Protobuf": {"Files": files, "Message": "%s.%s" % (package, reply)}},
    }


@pytest.fixture(scope="module")
def routed(wisp, lambda_client, tmp_path_factory):
    """A function whose routes serve Orders/Place, Orders/Cancel and Orders/Watch (server-streaming), with stubs for its service."""
    from grpc_tools import protoc

    package = "routed%s" % uuid.uuid4().hex[:6]
    proto = ROUTED_PROTO % package
    name = unique_name("routed-orders")
    lambda_client.create_function(
        FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler", Timeout=5, Code={"ZipFile": zip_files({"app.py": ROUTED_APP})}
    )
    wait_until_ready(lambda_client, name)
    routes = [
        {"Name": "place", "Match": {"GrpcMethod": package + ".Orders/Place"}, "Handler": "app.place", "Signature": routed_signature(package, proto, "PlaceRequest", "PlaceReply")},
        {"Name": "cancel", "Match": {"GrpcMethod": package + ".Orders/Cancel"}, "Handler": "app.cancel", "Signature": routed_signature(package, proto, "CancelRequest", "CancelReply")},
        {"Name": "watch", "Match": {"GrpcMethod": package + ".Orders/Watch"}, "Handler": "app.watch", "Signature": routed_signature(package, proto, "CancelRequest", "CancelReply")},
    ]
    status, _, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/routes" % name, json.dumps({"Routes": routes}).encode())
    assert status == 200, body

    directory = tmp_path_factory.mktemp("routed-stubs")
    (directory / "routed_orders.proto").write_text(proto)
    assert protoc.main(["protoc", "-I%s" % directory, "--python_out=%s" % directory, "--grpc_python_out=%s" % directory, str(directory / "routed_orders.proto")]) == 0
    sys.path.insert(0, str(directory))
    try:
        yield name, package, importlib.import_module("routed_orders_pb2"), importlib.import_module("routed_orders_pb2_grpc")
    finally:
        sys.path.remove(str(directory))


def test_routes_bound_to_grpc_methods_call_their_handlers(wisp, channel, routed):
    _, _, routed_pb2, routed_pb2_grpc = routed
    stub = routed_pb2_grpc.OrdersStub(channel)
    placed = stub.Place(routed_pb2.PlaceRequest(customer_id="c-1", quantity=4), metadata=credentials(wisp), timeout=60)
    assert (placed.total, placed.handler) == (12, "place")
    cancelled = stub.Cancel(routed_pb2.CancelRequest(order_id="o-7"), metadata=credentials(wisp), timeout=60)
    assert (cancelled.cancelled, cancelled.order_id, cancelled.handler) == (True, "o-7", "cancel")


def test_a_route_can_bind_a_server_streaming_method(wisp, channel, routed):
    _, _, routed_pb2, routed_pb2_grpc = routed
    replies = routed_pb2_grpc.OrdersStub(channel).Watch(routed_pb2.CancelRequest(order_id="o-8"), metadata=credentials(wisp), timeout=60)
    assert [(reply.order_id, reply.handler) for reply in replies] == [("o-8-0", "watch"), ("o-8-1", "watch"), ("o-8-2", "watch")]


def test_reflection_lists_a_service_served_by_routes(wisp, channel, routed):
    _, package, _, _ = routed
    database = ProtoReflectionDescriptorDatabase(grpc.intercept_channel(channel, Credentials(credentials(wisp))))
    assert package + ".Orders" in database.get_services()
    service = descriptor_pool.DescriptorPool(database).FindServiceByName(package + ".Orders")
    assert sorted(method.name for method in service.methods) == ["Cancel", "Place", "Watch"]
    cancel = service.FindMethodByName("Cancel")
    assert cancel.input_type.full_name == package + ".CancelRequest"


def test_a_rest_invoke_takes_no_grpc_method_route(lambda_client, routed):
    name, _, _, _ = routed
    error = expect_error("NoMatchingRouteException", 400, invoke, lambda_client, name, {"orderId": "o-7"})
    assert "Orders/Cancel" in str(error)


def test_a_route_whose_messages_are_not_the_methods_is_refused(wisp, routed):
    name, package, _, _ = routed
    proto = ROUTED_PROTO % package
    wrong = [{"Name": "cancel", "Match": {"GrpcMethod": package + ".Orders/Cancel"}, "Handler": "app.cancel", "Signature": routed_signature(package, proto, "PlaceRequest", "PlaceReply")}]
    status, headers, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/routes" % name, json.dumps({"Routes": wrong}).encode())
    assert status == 400, body
    assert headers["x-amzn-errortype"] == "InvalidParameterValueException"
    assert "takes %s.CancelRequest" % package in json.loads(body)["message"], body


def test_compressed_requests_are_accepted(wisp, orders, stubs):
    shop_pb2, shop_pb2_grpc = stubs
    # Large enough that the client compresses it (grpcio leaves tiny messages alone).
    request = shop_pb2.PlaceRequest(customer_id="zip" * 400, lines=[shop_pb2.Line(sku="a" * 100, quantity=4)] * 20)
    for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        with grpc.insecure_channel(target(wisp), compression=compression) as compressing:
            stub = shop_pb2_grpc.OrdersStub(compressing)
            reply = stub.Place(request, metadata=credentials(wisp), timeout=60, compression=compression)
            assert (reply.total, reply.customer) == (240, "zip" * 400)
