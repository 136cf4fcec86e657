"""Routes: one function, several entry points, each with its own handler and signature.

The platform picks the route (a JSON pointer that equals a value or one of several, or an HTTP method
and path), checks the event against the route's input type, and tells the runtime which handler to
call (`Wisp-Handler`); Wisp's python and node runtimes call it.
"""

import io
import json
import zipfile

from support import PYTHON_RUNTIME, ROLE, expect_error, invoke, python_zip, signed_request, unique_name, wait_until_ready

SHOP = """
def create(event, context):
    return {"route": "create", "id": event["item"]}

def remove(event, context):
    return {"route": "remove", "id": event["id"]}

def get_order(event, context):
    return {"route": "get", "path": event["rawPath"]}

def handler(event, context):
    return {"route": "default"}
"""

ROUTES = [
    {
        "Name": "create",
        "Match": {"Pointer": "/action", "Equals": "create"},
        "Handler": "handler.create",
        "Signature": {"Input": {"JsonSchema": {"type": "object", "required": ["item"], "properties": {"item": {"type": "string"}}}}},
    },
    {"Name": "remove", "Match": {"Pointer": "/action", "AnyOf": ["delete", "remove"]}, "Handler": "handler.remove"},
    {"Name": "get-order", "Match": {"HttpMethod": "GET", "HttpPath": "/orders/{id}"}, "Handler": "handler.get_order"},
]


def put_routes(server, name, routes, expect=200):
    status, headers, body = signed_request(server, "PUT", "/wisp/v1/functions/%s/routes" % name, json.dumps({"Routes": routes}).encode())
    assert status == expect, body
    return status, headers, body


def shop(lambda_client, wisp, source=SHOP, runtime=PYTHON_RUNTIME, handler="handler.handler", code=None):
    name = unique_name("shop")
    lambda_client.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": code or python_zip(source)})
    wait_until_ready(lambda_client, name)
    return name


def test_three_routes_call_three_handlers(wisp, lambda_client):
    name = shop(lambda_client, wisp)
    put_routes(wisp, name, ROUTES)
    _, created = invoke(lambda_client, name, {"action": "create", "item": "book"})
    assert created == {"route": "create", "id": "book"}
    _, removed = invoke(lambda_client, name, {"action": "delete", "id": 7})
    assert removed == {"route": "remove", "id": 7}
    _, fetched = invoke(lambda_client, name, {"rawPath": "/orders/17", "requestContext": {"http": {"method": "GET"}}})
    assert fetched == {"route": "get", "path": "/orders/17"}
    # Routes are tried in order and shown back as set.
    status, _, body = signed_request(wisp, "GET", "/wisp/v1/functions/%s/routes" % name)
    assert status == 200 and json.loads(body)["Routes"] == ROUTES
    assert json.loads(wisp.wisp_cli("get", name).stdout)["Routes"] == ROUTES


def test_an_event_that_matches_no_route_is_refused_with_the_routes_listed(wisp, lambda_client):
    name = shop(lambda_client, wisp)
    put_routes(wisp, name, ROUTES)
    response = expect_error("NoMatchingRouteException", 400, lambda_client.invoke, FunctionName=name, Payload=json.dumps({"action": "refund"}))
    message = response["Error"]["Message"]
    for route in ("create", "remove", "get-order", "handler.get_order"):
        assert route in message, message
    expect_error("NoMatchingRouteException", 400, lambda_client.invoke, FunctionName=name, InvocationType="Event", Payload=json.dumps({"action": "refund"}))


def test_each_route_checks_its_own_signature(wisp, lambda_client):
    name = shop(lambda_client, wisp)
    put_routes(wisp, name, ROUTES)
    response = expect_error("InputSchemaViolationException", 400, lambda_client.invoke, FunctionName=name, Payload=json.dumps({"action": "create", "item": 5}))
    assert "/item" in response["Error"]["Message"]
    # The remove route has no signature of its own: anything goes there.
    _, removed = invoke(lambda_client, name, {"action": "remove", "id": "x"})
    assert removed["route"] == "remove"


def test_a_route_to_a_missing_handler_fails_that_invocation_only(wisp, lambda_client):
    name = shop(lambda_client, wisp)
    put_routes(wisp, name, ROUTES + [{"Name": "ghost", "Match": {"Pointer": "/action", "Equals": "ghost"}, "Handler": "handler.nowhere"}])
    response, body = invoke(lambda_client, name, {"action": "ghost"})
    assert response["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.HandlerNotFound", body
    _, created = invoke(lambda_client, name, {"action": "create", "item": "pen"})
    assert created["route"] == "create", "the instance still serves the other routes"


def test_node_runtime_follows_routes(wisp, lambda_client):
    source = b"exports.create = async (event) => ({ route: 'create', id: event.item });\nexports.handler = async () => ({ route: 'default' });\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.js", source)
    name = shop(lambda_client, wisp, runtime="nodejs20.x", handler="index.handler", code=buffer.getvalue())
    put_routes(wisp, name, [{"Name": "create", "Match": {"Pointer": "/action", "Equals": "create"}, "Handler": "index.create"}])
    _, created = invoke(lambda_client, name, {"action": "create", "item": "lamp"})
    assert created == {"route": "create", "id": "lamp"}


def test_published_versions_keep_their_routes(wisp, lambda_client):
    name = shop(lambda_client, wisp)
    put_routes(wisp, name, ROUTES)
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    status, _, _ = signed_request(wisp, "DELETE", "/wisp/v1/functions/%s/routes" % name)
    assert status == 204
    _, latest = invoke(lambda_client, name, {"action": "create", "item": "cup"})
    assert latest == {"route": "default"}, "without routes $LATEST calls the function's handler"
    _, pinned = invoke(lambda_client, name, {"action": "create", "item": "cup"}, Qualifier=version)
    assert pinned["route"] == "create"
    status, _, body = signed_request(wisp, "GET", "/wisp/v1/functions/%s/routes?Qualifier=%s" % (name, version))
    assert json.loads(body)["Routes"] == ROUTES


def test_invalid_routes_are_refused(wisp, lambda_client):
    name = shop(lambda_client, wisp)
    for routes, words in [
        ([{"Name": "a", "Match": {}, "Handler": "handler.create"}], b"Match is empty"),
        ([{"Name": "a", "Match": {"Pointer": "/x", "Equals": 1}, "Handler": "h.a"}, {"Name": "a", "Match": {"Pointer": "/x", "Equals": 2}, "Handler": "h.b"}], b"used twice"),
        ([{"Name": "bad name", "Match": {"Pointer": "/x", "Equals": 1}, "Handler": "h.a"}], b"route name"),
        ([{"Name": "a", "Match": {"Pointer": "/x", "Equals": 1}, "Handler": "h.a", "Signature": {"Input": {"JsonSchema": {"type": 7}}}}], b"not a valid JSON Schema"),
        ([{"Name": "a", "Match": {"Pointer": "/x", "Equals": 1}}], b"the routes are not valid"),
    ]:
        status, headers, body = put_routes(wisp, name, routes, expect=400)
        assert headers.get("x-amzn-errortype") == "InvalidParameterValueException" and words in body, body


def test_the_cli_sets_and_shows_routes(wisp, lambda_client, tmp_path):
    name = shop(lambda_client, wisp)
    file = tmp_path / "routes.json"
    file.write_text(json.dumps({"Routes": ROUTES}))
    assert json.loads(wisp.wisp_cli("routes", name, "--file", str(file)).stdout)["Routes"] == ROUTES
    assert json.loads(wisp.wisp_cli("routes", name).stdout)["Routes"] == ROUTES
    assert json.loads(wisp.wisp_cli("routes", name, "--clear").stdout) == {"Routes": []}


def test_a_destination_whose_records_may_match_none_of_its_routes_is_refused(wisp, lambda_client):
    # The destination routes on the record's condition: a success record always takes `ok`; a failure
    # record may carry a condition no route takes, until a route covers every one.
    outcomes = shop(lambda_client, wisp, source="def ok(event, context):\n    return 'ok'\n\ndef failed(event, context):\n    return 'failed'\n")
    condition = "/requestContext/condition"
    put_routes(wisp, outcomes, [
        {"Name": "ok", "Match": {"Pointer": condition, "Equals": "Success"}, "Handler": "handler.ok"},
        {"Name": "failed", "Match": {"Pointer": condition, "AnyOf": ["RetriesExhausted", "EventAgeExceeded"]}, "Handler": "handler.failed"},
    ])
    source = shop(lambda_client, wisp)
    target = lambda_client.get_function(FunctionName=outcomes)["Configuration"]["FunctionArn"]
    lambda_client.put_function_event_invoke_config(FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": target}})
    error = expect_error(
        "InvalidParameterValueException", 400, lambda_client.put_function_event_invoke_config, FunctionName=source, DestinationConfig={"OnFailure": {"Destination": target}}
    )
    message = error["Error"]["Message"]
    assert condition in message and '"FunctionNotFound"' in message and "matches no route" in message, message
    put_routes(wisp, outcomes, [
        {"Name": "ok", "Match": {"Pointer": condition, "Equals": "Success"}, "Handler": "handler.ok"},
        {"Name": "failed", "Match": {"Pointer": "/version", "Equals": "1.0"}, "Handler": "handler.failed"},
        {"Name": "other", "Match": {"Pointer": condition, "AnyOf": ["RetriesExhausted", "EventAgeExceeded", "FunctionNotFound", "DeliveryLimitExceeded", "IdempotencyKeyMismatch"]}, "Handler": "handler.failed"},
    ])
    lambda_client.put_function_event_invoke_config(FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": target}, "OnFailure": {"Destination": target}})
    # A later change of the routes that leaves success records unrouted is found by `wisp check`.
    put_routes(wisp, outcomes, [{"Name": "failed", "Match": {"Pointer": condition, "AnyOf": ["RetriesExhausted"]}, "Handler": "handler.failed"}])
    status, _, body = signed_request(wisp, "GET", "/wisp/v1/check")
    report = json.loads(body)
    problems = [wiring for wiring in report["Wirings"] if wiring.get("Problem") and wiring["Source"].split(":")[-1] in (source, "$LATEST") and outcomes in wiring["Target"]]
    assert len(problems) == 2, report


def test_a_routed_source_sends_its_destinations_what_each_route_takes(wisp, lambda_client):
    # The destination needs `requestPayload.item` to be a string; the source's `create` route requires it,
    # its `remove` route takes anything, so the source may send records without it.
    wants_item = shop(lambda_client, wisp)
    schema = {"type": "object", "required": ["requestPayload"], "properties": {"requestPayload": {"type": "object", "required": ["item"], "properties": {"item": {"type": "string"}}}}}
    status, _, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % wants_item, json.dumps({"Input": {"JsonSchema": schema}}).encode())
    assert status == 200, body
    target = lambda_client.get_function(FunctionName=wants_item)["Configuration"]["FunctionArn"]
    source = shop(lambda_client, wisp)
    put_routes(wisp, source, ROUTES[:2])
    error = expect_error(
        "InvalidParameterValueException", 400, lambda_client.put_function_event_invoke_config, FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": target}}
    )
    assert "/requestPayload" in error["Error"]["Message"], error
    typed_remove = dict(ROUTES[1], Signature=ROUTES[0]["Signature"])
    put_routes(wisp, source, [ROUTES[0], typed_remove])
    lambda_client.put_function_event_invoke_config(FunctionName=source, DestinationConfig={"OnSuccess": {"Destination": target}})
