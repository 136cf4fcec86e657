"""Invocation hooks: a pre-invocation hook passes, rewrites or rejects each event before dispatch; a
post-invocation hook is sent each synchronous call's invocation record after the response has gone.
Hooks are functions like any other, checked like any wiring when they are set."""

import json
import time

from support import PYTHON_RUNTIME, ROLE, expect_error, invoke, python_zip, signed_request, unique_name, wait_until_ready

TARGET = """
def handler(event, context):
    return {"got": event}
"""

# Rejects events without a user; upper-cases `name`; passes the rest.
GATE = """
def handler(call, context):
    event = call["event"]
    if "user" not in event:
        return {"action": "reject", "reason": "no user in the event"}
    if "name" in event:
        event["name"] = event["name"].upper()
        return {"action": "rewrite", "event": event}
    return {"action": "pass"}
"""

AUDIT = """
def handler(record, context):
    print("AUDIT", record["requestContext"]["condition"], record["requestContext"]["requestId"], record["responsePayload"])
    return None
"""


def make(client, source, prefix):
    name = unique_name(prefix)
    client.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="handler.handler", Code={"ZipFile": python_zip(source)})
    wait_until_ready(client, name)
    return name


def put_hooks(server, name, hooks, expect=200):
    status, headers, body = signed_request(server, "PUT", "/wisp/v1/functions/%s/hooks" % name, json.dumps(hooks).encode())
    assert status == expect, body
    return headers, body


def logs_until(server, name, needle, timeout=20):
    deadline = time.time() + timeout
    while True:
        status, _, body = signed_request(server, "GET", "/wisp/v1/functions/%s/logs" % name)
        text = body.decode("utf-8", "replace")
        if needle in text:
            return text
        if time.time() > deadline:
            raise AssertionError("%r never appeared in the logs of %s:\n%s" % (needle, name, text[-2000:]))
        time.sleep(0.2)


def test_a_pre_hook_passes_rewrites_and_rejects(wisp, lambda_client):
    target = make(lambda_client, TARGET, "hooked")
    gate = make(lambda_client, GATE, "gate")
    put_hooks(wisp, target, {"Pre": gate})
    _, passed = invoke(lambda_client, target, {"user": "ann"})
    assert passed == {"got": {"user": "ann"}}
    _, rewritten = invoke(lambda_client, target, {"user": "ann", "name": "lamp"})
    assert rewritten == {"got": {"user": "ann", "name": "LAMP"}}
    response = expect_error("InvocationRejectedException", 400, lambda_client.invoke, FunctionName=target, Payload=json.dumps({"name": "x"}))
    assert "no user in the event" in response["Error"]["Message"] and gate in response["Error"]["Message"]
    refused = response["ResponseMetadata"]["RequestId"]
    deadline = time.time() + 10
    while True:
        status, _, body = signed_request(wisp, "GET", "/wisp/v1/invocations/%s" % refused)
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.1)
    record = json.loads(body)
    assert record["error_type"] == "InvocationRejectedException" and record["billed_duration_ms"] == 0
    # Events are gated when they are enqueued, so a rejected event is never queued.
    expect_error("InvocationRejectedException", 400, lambda_client.invoke, FunctionName=target, InvocationType="Event", Payload=json.dumps({"name": "x"}))
    # The hook itself is invoked without hooks of its own: calling it directly works.
    _, verdict = invoke(lambda_client, gate, {"functionArn": "x", "requestId": "y", "event": {}})
    assert verdict["action"] == "reject"


def test_a_failing_pre_hook_fails_closed(wisp, lambda_client):
    target = make(lambda_client, TARGET, "hooked")
    broken = make(lambda_client, "def handler(call, context):\n    raise ValueError('gate is down')\n", "broken-gate")
    put_hooks(wisp, target, {"Pre": broken})
    status, _, body = signed_request(wisp, "POST", "/2015-03-31/functions/%s/invocations" % target, b'{"user": "ann"}')
    assert status == 500 and b"gate is down" in body and b"was not run" in body, body
    nonsense = make(lambda_client, "def handler(call, context):\n    return {'action': 'maybe'}\n", "vague-gate")
    put_hooks(wisp, target, {"Pre": nonsense})
    status, _, body = signed_request(wisp, "POST", "/2015-03-31/functions/%s/invocations" % target, b'{"user": "ann"}')
    assert status == 500 and b"is not" in body, body


def test_a_post_hook_receives_each_sync_record(wisp, lambda_client):
    target = make(lambda_client, TARGET, "audited")
    audit = make(lambda_client, AUDIT, "audit")
    put_hooks(wisp, target, {"Post": audit})
    response, _ = invoke(lambda_client, target, {"user": "bob"})
    request_id = response["ResponseMetadata"]["RequestId"]
    text = logs_until(wisp, audit, "AUDIT Success %s" % request_id)
    assert "{'got': {'user': 'bob'}}" in text


def test_hooks_are_checked_like_any_wiring(wisp, lambda_client):
    target = make(lambda_client, TARGET, "hooked")
    status, _, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/signature" % target, json.dumps({"Input": {"JsonSchema": {"type": "object", "properties": {"user": {"type": "string"}}}}}).encode())
    assert status == 200, body
    strict_gate = make(lambda_client, GATE, "strict-gate")
    # The gate insists the user is an integer: the function's input says it is a string.
    status, _, body = signed_request(
        wisp, "PUT", "/wisp/v1/functions/%s/signature" % strict_gate,
        json.dumps({"Input": {"JsonSchema": {"type": "object", "properties": {"event": {"type": "object", "properties": {"user": {"type": "integer"}}}}}}}).encode(),
    )
    assert status == 200, body
    headers, body = put_hooks(wisp, target, {"Pre": strict_gate}, expect=400)
    assert b"/event/user" in body and b"expected integer" in body, body
    for hooks, words in [
        ({"Pre": target}, b"its own hook"),
        ({"Pre": unique_name("nobody")}, b"does not exist"),
        ({}, b"give Pre, Post or both"),
        ({"Before": "x"}, b"the hooks are not valid"),
    ]:
        _, body = put_hooks(wisp, target, hooks, expect=400)
        assert words in body, body


def test_the_cli_sets_shows_and_removes_hooks(wisp, lambda_client):
    target = make(lambda_client, TARGET, "hooked")
    audit = make(lambda_client, AUDIT, "audit")
    shown = json.loads(wisp.wisp_cli("hooks", target, "--post", audit).stdout)
    assert shown["Post"] == audit
    assert json.loads(wisp.wisp_cli("hooks", target).stdout)["Post"] == audit
    assert json.loads(wisp.wisp_cli("get", target).stdout)["Hooks"]["Post"] == audit
    wisp.wisp_cli("hooks", target, "--off")
    assert "Hooks" not in json.loads(wisp.wisp_cli("get", target).stdout)
    missing = wisp.wisp_cli("hooks", target, check=False)
    assert missing.returncode != 0 and "has no hooks" in missing.stderr


def test_wisp_check_reports_a_hook_that_was_deleted(server_factory):
    server = server_factory("hook-wiring")
    client = server.client()
    target = make(client, TARGET, "hooked")
    audit = make(client, AUDIT, "audit")
    put_hooks(server, target, {"Post": audit})
    assert "1 wiring(s) checked, 0 broken" in server.wisp_cli("check").stdout
    client.delete_function(FunctionName=audit)
    broken = server.wisp_cli("check", check=False)
    assert broken.returncode == 1 and "Post-invocation hook" in broken.stdout and "does not exist" in broken.stdout, broken.stdout


def test_a_post_hook_receives_cached_answers_too(wisp, lambda_client):
    target = make(lambda_client, TARGET, "cached")
    audit = make(lambda_client, AUDIT, "audit")
    status, _, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/memoization" % target, json.dumps({"TtlSeconds": 300}).encode())
    assert status == 200, body
    put_hooks(wisp, target, {"Post": audit})
    invoke(lambda_client, target, {"user": "ann"})
    # The cache is written in the background: call until an answer comes from it.
    deadline = time.time() + 20
    while True:
        response, document = invoke(lambda_client, target, {"user": "ann"})
        if "x-wisp-memoized" in response["ResponseMetadata"]["HTTPHeaders"]:
            break
        assert time.time() < deadline, "the answer was never cached"
        time.sleep(0.2)
    assert document == {"got": {"user": "ann"}}
    logs_until(wisp, audit, "AUDIT Success %s" % response["ResponseMetadata"]["RequestId"])
