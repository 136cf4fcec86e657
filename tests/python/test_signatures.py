"""Signatures: a function's input and output JSON Schemas, checked by the platform.

Input is checked before any instance is touched (a 400 naming the pointer and the rule, recorded with
nothing billed); output is checked before it is returned (a function error `Wisp.OutputSchemaViolation`);
events are checked when they are enqueued. Published versions keep the signature they were published with.
"""

import json
import time

import pytest

from support import PYTHON_RUNTIME, ROLE, expect_error, invoke, python_zip, signed_request, unique_name, wait_until_ready

ORDER = {
    "type": "object",
    "required": ["id", "quantity"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "quantity": {"type": "integer", "minimum": 1},
        "express": {"type": "boolean"},
    },
    "additionalProperties": False,
}

TOTAL = {
    "type": "object",
    "required": ["total"],
    "properties": {"total": {"type": "integer"}},
}

# Doubles the quantity; `{"broken": true}` makes it return a string total, which breaks TOTAL.
HANDLER = """
def handler(event, context):
    if event.get("id") == "broken":
        return {"total": "lots"}
    return {"total": event["quantity"] * 2, "request": context.aws_request_id}
"""


def put_signature(server, name, signature, expect=200):
    status, _, body = signed_request(server, "PUT", "/wisp/v1/functions/%s/signature" % name, json.dumps(signature).encode())
    assert status == expect, body
    return json.loads(body) if body else None


def get_signature(server, name, qualifier=None):
    path = "/wisp/v1/functions/%s/signature" % name
    if qualifier:
        path += "?Qualifier=%s" % qualifier
    status, _, body = signed_request(server, "GET", path)
    assert status == 200, body
    return json.loads(body)


def record(server, request_id):
    deadline = time.time() + 10
    while True:
        status, _, body = signed_request(server, "GET", "/wisp/v1/invocations/%s" % request_id)
        if status == 200 or time.time() > deadline:
            assert status == 200, body
            return json.loads(body)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def typed_function(wisp, lambda_client):
    name = unique_name("typed")
    lambda_client.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(HANDLER)})
    wait_until_ready(lambda_client, name)
    shown = put_signature(wisp, name, {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": TOTAL}})
    assert shown == {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": TOTAL}}
    return name


def test_a_conforming_event_runs(lambda_client, typed_function):
    response, body = invoke(lambda_client, typed_function, {"id": "a1", "quantity": 3})
    assert "FunctionError" not in response, body
    assert body["total"] == 6


def test_a_string_where_an_integer_is_expected_is_refused_before_any_instance(wisp, lambda_client, typed_function):
    response = expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=typed_function, Payload=json.dumps({"id": "a1", "quantity": "5"}))
    message = response["Error"]["Message"]
    assert "/quantity" in message and "integer" in message and "/properties/quantity/type" in message, message
    # The refusal is recorded, with nothing billed.
    request_id = response["ResponseMetadata"]["RequestId"]
    refused = record(wisp, request_id)
    assert refused["status"] == "failed" and refused["error_type"] == "InputSchemaViolationException"
    assert refused["billed_duration_ms"] == 0 and refused["duration_us"] == 0


def test_every_broken_rule_is_named(lambda_client, typed_function):
    response = expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=typed_function, Payload=json.dumps({"quantity": 0, "colour": "red"}))
    message = response["Error"]["Message"]
    for expected in ("required", "/quantity", "minimum", "additionalProperties"):
        assert expected in message, (expected, message)


def test_an_empty_payload_is_checked_as_an_empty_object(lambda_client, typed_function):
    response = expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=typed_function)
    assert "required" in response["Error"]["Message"]


def test_a_result_that_breaks_the_output_type_becomes_a_function_error(wisp, lambda_client, typed_function):
    response, body = invoke(lambda_client, typed_function, {"id": "broken", "quantity": 1})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Wisp.OutputSchemaViolation"
    assert "/total" in body["errorMessage"] and "integer" in body["errorMessage"], body
    failed = record(wisp, response["ResponseMetadata"]["RequestId"])
    assert failed["status"] == "failed" and failed["error_type"] == "Wisp.OutputSchemaViolation"


def test_a_bad_event_is_refused_at_enqueue_not_retried(lambda_client, typed_function):
    expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=typed_function, InvocationType="Event", Payload=json.dumps({"id": 7, "quantity": 1}))
    accepted = lambda_client.invoke(FunctionName=typed_function, InvocationType="Event", Payload=json.dumps({"id": "ok", "quantity": 1}))
    assert accepted["StatusCode"] == 202


def test_a_published_version_keeps_its_signature(wisp, lambda_client):
    name = unique_name("typed-versions")
    lambda_client.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(HANDLER)})
    wait_until_ready(lambda_client, name)
    put_signature(wisp, name, {"Input": {"JsonSchema": ORDER}})
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    # $LATEST now takes quantities as strings; version 1 still wants integers.
    loose = json.loads(json.dumps(ORDER))
    loose["properties"]["quantity"] = {"type": "string"}
    put_signature(wisp, name, {"Input": {"JsonSchema": loose}})
    assert get_signature(wisp, name, version)["Input"]["JsonSchema"] == ORDER
    assert get_signature(wisp, name)["Input"]["JsonSchema"] == loose
    expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=name, Qualifier=version, Payload=json.dumps({"id": "a", "quantity": "2"}))
    expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=name, Payload=json.dumps({"id": "a", "quantity": 2}))
    # An alias on the version checks with the version's signature.
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    response, body = invoke(lambda_client, name, {"id": "a", "quantity": 2}, Qualifier="live")
    assert body["total"] == 4
    # Removing the signature of $LATEST leaves the version's.
    status, _, _ = signed_request(wisp, "DELETE", "/wisp/v1/functions/%s/signature" % name)
    assert status == 204
    assert get_signature(wisp, name) == {}
    assert get_signature(wisp, name, version)["Input"]["JsonSchema"] == ORDER


def test_setting_a_signature_gives_latest_a_new_revision(wisp, lambda_client, typed_function):
    before = lambda_client.get_function_configuration(FunctionName=typed_function)["RevisionId"]
    put_signature(wisp, typed_function, {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": TOTAL}})
    after = lambda_client.get_function_configuration(FunctionName=typed_function)["RevisionId"]
    assert before != after
    status, _, body = signed_request(
        wisp, "PUT", "/wisp/v1/functions/%s/signature?RevisionId=%s" % (typed_function, before), json.dumps({"Input": {"JsonSchema": ORDER}}).encode()
    )
    assert status == 412, body


@pytest.mark.parametrize(
    "signature, fragment",
    [
        ({"Input": {"JsonSchema": {"type": "integr"}}}, b"input schema is not a valid JSON Schema"),
        ({"Output": {"JsonSchema": {"minimum": "three"}}}, b"output schema is not a valid JSON Schema"),
        ({"Input": {"JsonSchema": {"$ref": "https://example.com/schema.json"}}}, b"input schema is not a valid JSON Schema"),
        ({"Input": {"Protobof": {}}}, b"the signature is not valid"),
        ({"Inputs": {"JsonSchema": {}}}, b"the signature is not valid"),
    ],
)
def test_invalid_signatures_are_refused_with_a_clear_error(wisp, typed_function, signature, fragment):
    status, headers, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % typed_function, json.dumps(signature).encode())
    assert status == 400 and headers.get("x-amzn-errortype") == "InvalidParameterValueException", body
    assert fragment in body, body


def test_a_signature_for_a_missing_function_is_not_found(wisp):
    status, _, _ = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % unique_name("nobody"), json.dumps({"Input": {"JsonSchema": ORDER}}).encode())
    assert status == 404


def test_the_cli_deploys_with_schemas_and_shows_them(wisp, lambda_client, tmp_path):
    source = tmp_path / "orders"
    source.mkdir()
    (source / "handler.py").write_text(HANDLER)
    (source / "order.json").write_text(json.dumps(ORDER))
    (source / "wisp.toml").write_text('runtime = "%s"\nhandler = "handler.handler"\ninput_schema = "order.json"\n' % PYTHON_RUNTIME)
    name = unique_name("typed-cli")
    total = tmp_path / "total.json"
    total.write_text(json.dumps(TOTAL))
    published = json.loads(wisp.wisp_cli("--output", "json", "deploy", str(source), "--name", name, "--output-schema", str(total), "--publish").stdout)
    assert published["Version"] == "1"
    shown = json.loads(wisp.wisp_cli("signature", name, "--qualifier", "1").stdout)
    assert shown == {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": TOTAL}}
    described = json.loads(wisp.wisp_cli("get", name).stdout)
    assert described["Signature"]["Input"]["JsonSchema"] == ORDER
    expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=name, Qualifier="1", Payload=json.dumps({"id": "a"}))
    cleared = wisp.wisp_cli("signature", name, "--clear")
    assert json.loads(cleared.stdout) == {}
    _, body = invoke(lambda_client, name, {"anything": True, "quantity": 1})
    assert body["total"] == 2, "without a signature $LATEST takes any event"
    refused = wisp.wisp_cli("invoke", name, "--qualifier", "1", "--payload", '{"quantity": "x"}', check=False)
    assert refused.returncode != 0 and "InputSchemaViolationException" in refused.stderr + refused.stdout


# What a destination of a typed function receives: Lambda's invocation record with the source's types inside.
RECEIPT_TAKER = {
    "type": "object",
    "required": ["requestPayload", "responsePayload"],
    "properties": {
        "requestPayload": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        "responsePayload": {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}},
    },
}


def make(client, name, source=HANDLER):
    client.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(source)})
    wait_until_ready(client, name)
    return client.get_function_configuration(FunctionName=name)["FunctionArn"]


def test_a_destination_that_accepts_the_records_can_be_wired_and_receives_them(wisp, lambda_client, typed_function):
    taker = unique_name("taker")
    taker_arn = make(lambda_client, taker, "def handler(event, context):\n    print('GOT', event['responsePayload']['total'])\n    return event['responsePayload']\n")
    put_signature(wisp, taker, {"Input": {"JsonSchema": RECEIPT_TAKER}})
    lambda_client.put_function_event_invoke_config(FunctionName=typed_function, DestinationConfig={"OnSuccess": {"Destination": taker_arn}})
    lambda_client.invoke(FunctionName=typed_function, InvocationType="Event", Payload=json.dumps({"id": "wired", "quantity": 21}))
    deadline = time.time() + 20
    while time.time() < deadline:
        status, _, body = signed_request(wisp, "GET", "/wisp/v1/functions/%s/logs" % taker)
        if status == 200 and b"GOT 42" in body:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the destination never received the record: %r" % body)
    lambda_client.delete_function_event_invoke_config(FunctionName=typed_function)


def test_a_destination_that_would_refuse_the_records_is_refused_with_the_path(wisp, lambda_client, typed_function):
    picky = unique_name("picky")
    picky_arn = make(lambda_client, picky)
    wants_text = json.loads(json.dumps(RECEIPT_TAKER))
    wants_text["properties"]["responsePayload"]["properties"]["total"] = {"type": "string"}
    put_signature(wisp, picky, {"Input": {"JsonSchema": wants_text}})
    response = expect_error(
        "InvalidParameterValueException", 400, lambda_client.put_function_event_invoke_config, FunctionName=typed_function, DestinationConfig={"OnSuccess": {"Destination": picky_arn}}
    )
    message = response["Error"]["Message"]
    assert "/responsePayload/total" in message and "expected string" in message and "found integer" in message, message
    # A failure destination gets no responsePayload guarantee, so a taker that requires one is refused too.
    response = expect_error(
        "InvalidParameterValueException", 400, lambda_client.put_function_event_invoke_config, FunctionName=typed_function, DestinationConfig={"OnFailure": {"Destination": picky_arn}}
    )
    assert "/responsePayload" in response["Error"]["Message"]


def test_an_untyped_source_cannot_feed_a_typed_destination(wisp, lambda_client):
    loose = unique_name("loose")
    make(lambda_client, loose)
    strict = unique_name("strict")
    strict_arn = make(lambda_client, strict)
    put_signature(wisp, strict, {"Input": {"JsonSchema": RECEIPT_TAKER}})
    response = expect_error("InvalidParameterValueException", 400, lambda_client.put_function_event_invoke_config, FunctionName=loose, DestinationConfig={"OnSuccess": {"Destination": strict_arn}})
    assert "/requestPayload" in response["Error"]["Message"] and "any JSON value" in response["Error"]["Message"]
    # An untyped destination takes anything.
    anything_arn = make(lambda_client, unique_name("anything"))
    lambda_client.put_function_event_invoke_config(FunctionName=loose, DestinationConfig={"OnSuccess": {"Destination": anything_arn}})


def test_wisp_check_finds_wiring_a_later_change_broke(server_factory):
    server = server_factory("wiring")
    client = server.client()
    source = unique_name("source")
    make(client, source)
    put_signature(server, source, {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": TOTAL}})
    taker = unique_name("taker")
    taker_arn = make(client, taker)
    put_signature(server, taker, {"Input": {"JsonSchema": RECEIPT_TAKER}})
    client.put_function_event_invoke_config(FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": taker_arn}})
    clean = server.wisp_cli("check")
    assert clean.returncode == 0 and "1 wiring(s) checked, 0 broken" in clean.stdout, clean.stdout
    # The source's output changes so that `total` becomes a string: the wiring is now broken.
    put_signature(server, source, {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": {"type": "object", "required": ["total"], "properties": {"total": {"type": "string"}}}}})
    broken = server.wisp_cli("check", check=False)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "BROKEN" in broken.stdout and "/responsePayload/total" in broken.stdout, broken.stdout
    report = json.loads(server.wisp_cli("--output", "json", "check", check=False).stdout)
    assert report["Problems"] == 1 and report["Wirings"][0]["Kind"] == "OnSuccess destination"
    # A deleted target is broken wiring too.
    put_signature(server, source, {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": TOTAL}})
    assert server.wisp_cli("check").returncode == 0
    client.delete_function(FunctionName=taker)
    gone = server.wisp_cli("check", check=False)
    assert gone.returncode == 1 and "does not exist" in gone.stdout, gone.stdout


def test_moving_an_alias_to_a_version_with_an_incompatible_signature_is_refused(wisp, lambda_client):
    # `taker` versions: 1 takes records whose total is a number, 2 wants it as a string.
    taker = unique_name("alias-taker")
    make(lambda_client, taker)
    put_signature(wisp, taker, {"Input": {"JsonSchema": RECEIPT_TAKER}})
    first = lambda_client.publish_version(FunctionName=taker)["Version"]
    wants_text = json.loads(json.dumps(RECEIPT_TAKER))
    wants_text["properties"]["responsePayload"]["properties"]["total"] = {"type": "string"}
    put_signature(wisp, taker, {"Input": {"JsonSchema": wants_text}})
    second = lambda_client.publish_version(FunctionName=taker)["Version"]
    live = lambda_client.create_alias(FunctionName=taker, Name="live", FunctionVersion=first)["AliasArn"]
    source = unique_name("alias-source")
    make(lambda_client, source)
    put_signature(wisp, source, {"Input": {"JsonSchema": ORDER}, "Output": {"JsonSchema": TOTAL}})
    lambda_client.put_function_event_invoke_config(FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": live}})
    response = expect_error("InvalidParameterValueException", 400, lambda_client.update_alias, FunctionName=taker, Name="live", FunctionVersion=second)
    message = response["Error"]["Message"]
    assert "/responsePayload/total" in message and source in message, message
    assert lambda_client.get_alias(FunctionName=taker, Name="live")["FunctionVersion"] == first, "nothing changed"
    # Sending a share of traffic to the incompatible version is refused too.
    expect_error(
        "InvalidParameterValueException", 400, lambda_client.update_alias, FunctionName=taker, Name="live", RoutingConfig={"AdditionalVersionWeights": {second: 0.1}}
    )
    # A compatible move goes through.
    put_signature(wisp, taker, {"Input": {"JsonSchema": RECEIPT_TAKER}})
    third = lambda_client.publish_version(FunctionName=taker)["Version"]
    assert lambda_client.update_alias(FunctionName=taker, Name="live", FunctionVersion=third)["FunctionVersion"] == third


PLACE_PROTO = """
syntax = "proto3";
package wire.v1;
message Place { string sku = 1; int32 quantity = 2; }
"""

# A hook's own copy of `Place`, with `quantity` declared as given.
GATE_PROTO = """
syntax = "proto3";
package gate.v1;
message Order { string sku = 1; %s; }
message GateCall { string function_arn = 1; string request_id = 2; Order event = 3; }
"""

PASSING_GATE = "def handler(call, context):\n    print('GATE', call['event'])\n    return {'action': 'pass'}\n"


def test_protobuf_to_protobuf_wiring_is_checked_by_field_numbers_and_types(wisp, lambda_client):
    placer = unique_name("placer")
    make(lambda_client, placer)
    put_signature(wisp, placer, {"Input": {"Protobuf": {"Files": {"wire/v1/place.proto": PLACE_PROTO}, "Message": "wire.v1.Place"}}})

    def gate(quantity):
        name = unique_name("proto-gate")
        make(lambda_client, name, PASSING_GATE)
        put_signature(wisp, name, {"Input": {"Protobuf": {"Files": {"gate/v1/gate.proto": GATE_PROTO % quantity}, "Message": "gate.v1.GateCall"}}})
        return name

    def put_pre_hook(hook):
        return signed_request(wisp, "PUT", "/wisp/v1/functions/%s/hooks" % placer, json.dumps({"Pre": hook}).encode())

    # As JSON the two messages agree; as protobuf `quantity` is field 2 on one side, 3 on the other.
    status, _, body = put_pre_hook(gate("int32 quantity = 3"))
    assert status == 400, body
    assert b"at /event/quantity: expected int32 (field 3), found int32 (field 2)" in body, body
    # A narrower type under the same number is refused too.
    status, _, body = put_pre_hook(gate("sint32 quantity = 2"))
    assert status == 400 and b"at /event/quantity: expected sint32 (field 2), found int32 (field 2)" in body, body
    # The same number, widened to int64: accepted, and the hook runs.
    widened = gate("int64 quantity = 2")
    status, _, body = put_pre_hook(widened)
    assert status == 200, body
    response, result = invoke(lambda_client, placer, {"sku": "tea", "quantity": 4})
    assert "FunctionError" not in response and result["total"] == 8, result
    status, _, body = signed_request(wisp, "GET", "/wisp/v1/check")
    assert status == 200, body
    ours = [wiring for wiring in json.loads(body)["Wirings"] if wiring["Target"] == widened]
    assert len(ours) == 1 and "Problem" not in ours[0], ours
