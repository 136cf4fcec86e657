"""The event bus: topics, publishing, rules with EventBridge-style patterns, delivery to functions
(at least once, surviving a crash), dead letters, lifecycle events routed through the same bus, and
a function publishing from inside its sandbox (egress mode).

Functions here record what they receive as `GOT <json>` lines in their logs, read back through
`/wisp/v1/functions/{name}/logs`.
"""

import json
import os
import shutil
import time

import pytest

import support

RECORDER = """
import json


def handler(event, context):
    print("GOT " + json.dumps(event, sort_keys=True))
    return event
"""


@pytest.fixture(scope="module")
def bus(server_factory):
    """A server of its own: these tests read whole topics and kill the server."""
    return server_factory("bus")


def api(server, method, path, body=None):
    """A signed call to Wisp's API; returns (status, decoded JSON or None, headers)."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, headers, raw = support.signed_request(server, method, path, data)
    return status, (json.loads(raw) if raw else None), headers


def create_recorder(client, prefix="recorder"):
    name = support.unique_name(prefix)
    client.create_function(
        FunctionName=name,
        Runtime=support.PYTHON_RUNTIME,
        Role=support.ROLE,
        Handler="handler.handler",
        Code={"ZipFile": support.python_zip(RECORDER)},
    )
    support.wait_until_ready(client, name)
    return name


def received(server, function):
    """Every event the recorder has logged so far, in log order."""
    status, page, _ = api(server, "GET", "/wisp/v1/functions/%s/logs?from=1&limit=10000" % function)
    assert status == 200, page
    events = []
    for record in page["Records"]:
        for line in record["Text"].splitlines():
            if "GOT " in line:
                events.append(json.loads(line.split("GOT ", 1)[1]))
    return events


def wait_received(server, function, count, timeout=60):
    deadline = time.time() + timeout
    while True:
        events = received(server, function)
        if len(events) >= count or time.time() > deadline:
            return events
        time.sleep(0.2)


def new_topic(server):
    name = support.unique_name("topic")
    status, body, _ = api(server, "POST", "/wisp/v1/topics", {"TopicName": name})
    assert status == 201, body
    return name


def put_rule(server, topic, rule, pattern, targets):
    return api(
        server,
        "PUT",
        "/wisp/v1/topics/%s/rules/%s" % (topic, rule),
        {"EventPattern": pattern, "Targets": targets},
    )


def publish(server, topic, events):
    status, body, _ = api(server, "POST", "/wisp/v1/topics/%s/events" % topic, events)
    assert status == 200, body
    return body["Events"]


def test_topics_are_created_listed_and_deleted_with_the_cli(bus):
    name = support.unique_name("orders")
    assert "created topic %s" % name in bus.wisp_cli("topic", "create", name).stdout
    listed = bus.wisp_cli("topic", "ls").stdout.splitlines()
    assert "wisp.lifecycle  (built in)" in listed
    assert name in listed
    again = bus.wisp_cli("topic", "create", name, check=False)
    assert again.returncode != 0 and "ResourceConflictException" in again.stderr
    reserved = bus.wisp_cli("topic", "create", "wisp.mine", check=False)
    assert reserved.returncode != 0 and "reserved" in reserved.stderr
    status, body, headers = api(bus, "POST", "/wisp/v1/topics", {"TopicName": "a/b"})
    assert status == 400 and headers["x-amzn-errortype"] == "InvalidParameterValueException", body
    builtin = bus.wisp_cli("topic", "rm", "wisp.lifecycle", check=False)
    assert builtin.returncode != 0 and "built in" in builtin.stderr
    bus.wisp_cli("topic", "rm", name)
    assert name not in bus.wisp_cli("topic", "ls").stdout.splitlines()
    status, body, headers = api(bus, "GET", "/wisp/v1/topics/%s" % name)
    assert status == 404 and headers["x-amzn-errortype"] == "ResourceNotFoundException", body


def test_published_events_get_an_id_a_time_and_an_offset(bus):
    topic = new_topic(bus)
    one = publish(bus, topic, {"orderId": 1})
    assert len(one) == 1 and one[0]["Id"] and one[0]["Time"].endswith("Z") and one[0]["Offset"] == 1
    batch = publish(bus, topic, [{"orderId": 2}, {"orderId": 3}])
    assert [event["Offset"] for event in batch] == [2, 3]
    printed = bus.wisp_cli("topic", "publish", topic, '{"orderId": 4}').stdout
    assert "offset 4" in printed
    status, page, _ = api(bus, "GET", "/wisp/v1/topics/%s/events?from=1" % topic)
    assert status == 200
    assert [event["Detail"]["orderId"] for event in page["Events"]] == [1, 2, 3, 4]
    first = page["Events"][0]
    assert first["Id"] == one[0]["Id"] and first["Topic"] == topic and first["Actor"] == bus.access_key
    assert first["SchemaVersion"] == 1 and first["Account"].isdigit()


@pytest.mark.parametrize(
    "body, status, error, words",
    [
        (b"", 400, "InvalidRequestContentException", "empty"),
        (b"{nope", 400, "InvalidRequestContentException", "json"),
        (b"[1]", 400, "InvalidRequestContentException", "not a JSON object"),
        (b"[]", 400, "InvalidParameterValueException", "no events"),
        (json.dumps([{"i": i} for i in range(101)]).encode(), 400, "InvalidParameterValueException", "limit is 100"),
        (json.dumps({"big": "x" * (256 * 1024)}).encode(), 413, "RequestTooLargeException", "limit is 262144"),
    ],
)
def test_bad_events_are_refused_with_aws_shaped_errors(bus, body, status, error, words):
    topic = new_topic(bus)
    answer, headers, raw = support.signed_request(bus, "POST", "/wisp/v1/topics/%s/events" % topic, body)
    assert answer == status, raw
    assert headers["x-amzn-errortype"] == error
    assert words.lower() in json.loads(raw)["Message"].lower(), raw
    status, page, _ = api(bus, "GET", "/wisp/v1/topics/%s/events?from=1" % topic)
    assert page["Events"] == [], "a refused request stores nothing"


def test_publishing_to_a_missing_or_the_built_in_topic_is_refused(bus):
    status, body, headers = api(bus, "POST", "/wisp/v1/topics/no-such-topic/events", {"a": 1})
    assert status == 404 and "wisp topic create" in body["Message"]
    status, body, headers = api(bus, "POST", "/wisp/v1/topics/wisp.lifecycle/events", {"Type": "FunctionDeleted"})
    assert status == 403 and headers["x-amzn-errortype"] == "AccessDeniedException", body


def test_rules_are_checked_when_they_are_put(bus, account_id_of):
    client = bus.client()
    topic = new_topic(bus)
    target = create_recorder(client)
    status, body, headers = put_rule(bus, topic, "r", {"Detail": {"n": [{"numeric": [">", "1"]}]}}, [target])
    assert status == 400 and headers["x-amzn-errortype"] == "InvalidEventPatternException", body
    assert 'field "Detail.n"' in body["Message"], body
    status, body, headers = put_rule(bus, topic, "r", {"Type": "FunctionCreated"}, [target])
    assert status == 400 and "must be a list of matchers" in body["Message"], body
    status, body, headers = put_rule(bus, topic, "r", {"a": ["b"]}, ["no-such-function"])
    assert status == 404 and "does not exist" in body["Message"], body
    other = "arn:aws:lambda:us-east-1:000000000000:function:%s" % target
    status, body, headers = put_rule(bus, topic, "r", {"a": ["b"]}, [other])
    assert status == 403 and headers["x-amzn-errortype"] == "AccessDeniedException", body
    status, body, headers = put_rule(bus, topic, "r", {"a": ["b"]}, [target] * 6)
    assert status == 400 and "at most 5" in body["Message"], body
    status, body, _ = put_rule(bus, topic, "r", {"a": ["b"]}, [target + ":$LATEST"])
    assert status == 200, body
    assert body["Targets"] == [
        {
            "FunctionName": target,
            "Qualifier": "$LATEST",
            "Arn": "arn:aws:lambda:us-east-1:%s:function:%s:$LATEST" % (account_id_of(client), target),
        }
    ]
    listed = bus.wisp_cli("rule", "ls", topic).stdout
    assert listed.startswith("r  ") and target in listed
    bus.wisp_cli("rule", "rm", topic, "r")
    status, body, _ = api(bus, "GET", "/wisp/v1/topics/%s/rules/r" % topic)
    assert status == 404
    client.delete_function(FunctionName=target)


@pytest.fixture(scope="module")
def account_id_of():
    def find(client):
        name = support.unique_name("whoami")
        configuration = client.create_function(
            FunctionName=name,
            Runtime=support.PYTHON_RUNTIME,
            Role=support.ROLE,
            Handler="handler.handler",
            Code={"ZipFile": support.python_zip("def handler(event, context):\n    return None\n")},
        )
        client.delete_function(FunctionName=name)
        return configuration["FunctionArn"].split(":")[4]

    return find


def test_matching_events_reach_every_target_and_others_none(bus):
    client = bus.client()
    topic = new_topic(bus)
    big, everything = create_recorder(client, "big"), create_recorder(client, "all")
    pattern = {"Detail": {"amount": [{"numeric": [">", 100]}], "currency": [{"prefix": "EU"}, "USD"]}}
    bus.wisp_cli("rule", "put", topic, "big-orders", "--pattern", json.dumps(pattern), "--target", big)
    bus.wisp_cli("rule", "put", topic, "all", "--pattern", "{}", "--target", everything)
    events = [
        {"id": 1, "amount": 500, "currency": "EUR"},
        {"id": 2, "amount": 50, "currency": "EUR"},
        {"id": 3, "amount": 101, "currency": "USD"},
        {"id": 4, "amount": 900, "currency": "GBP"},
        {"id": 5, "currency": "USD"},
    ]
    published = publish(bus, topic, events)
    got_all = wait_received(bus, everything, 5)
    assert sorted(event["Detail"]["id"] for event in got_all) == [1, 2, 3, 4, 5]
    got_big = wait_received(bus, big, 2)
    time.sleep(1)  # anything wrongly routed would have arrived by now
    got_big = received(bus, big)
    assert sorted(event["Detail"]["id"] for event in got_big) == [1, 3]
    # Targets receive the event exactly as stored: the envelope with the publisher's Detail.
    by_id = {event["Id"]: event for event in got_all}
    assert set(by_id) == {receipt["Id"] for receipt in published}
    assert all(event["Topic"] == topic for event in got_all)
    for name in (big, everything):
        client.delete_function(FunctionName=name)


def test_a_rule_sees_only_events_published_after_it(bus):
    client = bus.client()
    topic = new_topic(bus)
    target = create_recorder(client)
    publish(bus, topic, {"when": "before"})
    status, body, _ = put_rule(bus, topic, "later", {}, [target])
    assert status == 200 and body["FromOffset"] == 2, body
    publish(bus, topic, {"when": "after"})
    got = wait_received(bus, target, 1)
    time.sleep(1)
    got = received(bus, target)
    assert [event["Detail"]["when"] for event in got] == ["after"]
    client.delete_function(FunctionName=target)


def test_an_event_for_a_deleted_target_goes_to_the_topics_dead_letters(bus):
    client = bus.client()
    topic = new_topic(bus)
    gone, alive = create_recorder(client, "gone"), create_recorder(client, "alive")
    status, body, _ = put_rule(bus, topic, "both", {"Detail": {"k": [{"exists": True}]}}, [gone, alive])
    assert status == 200, body
    client.delete_function(FunctionName=gone)
    receipt = publish(bus, topic, {"k": "v"})[0]
    assert len(wait_received(bus, alive, 1)) == 1
    deadline = time.time() + 30
    while True:
        status, page, _ = api(bus, "GET", "/wisp/v1/topics/%s/dlq" % topic)
        if page["DeadLetters"] or time.time() > deadline:
            break
        time.sleep(0.2)
    [letter] = page["DeadLetters"]
    assert letter["Condition"] == "FunctionNotFound", letter
    assert letter["Rule"] == "both" and letter["Target"].endswith(":function:" + gone)
    assert letter["Event"]["Id"] == receipt["Id"] and letter["Offset"] == receipt["Offset"]
    assert "FunctionNotFound" in bus.wisp_cli("topic", "dlq", topic).stdout
    client.delete_function(FunctionName=alive)


def test_a_lifecycle_rule_routes_code_updates_to_a_compliance_function(bus, account_id_of):
    client = bus.client()
    compliance = create_recorder(client, "compliance")
    watched = create_recorder(client, "watched")
    arn = "arn:aws:lambda:us-east-1:%s:function:%s" % (account_id_of(client), watched)
    pattern = {"Type": ["FunctionCodeUpdated"], "Resource": [arn]}
    status, body, _ = put_rule(bus, "wisp.lifecycle", support.unique_name("code"), pattern, [compliance])
    assert status == 200, body
    # Other changes to the watched function do not match.
    client.update_function_configuration(FunctionName=watched, Timeout=7)
    new_code = support.python_zip(RECORDER + "\n# version 2\n")
    client.update_function_code(FunctionName=watched, ZipFile=new_code)
    [event] = wait_received(bus, compliance, 1)
    assert event["Type"] == "FunctionCodeUpdated" and event["Resource"] == arn, event
    assert event["After"]["CodeSha256"] == support.code_sha256(new_code)
    assert event["Before"]["CodeSha256"] != event["After"]["CodeSha256"]
    assert event["Actor"] == bus.access_key
    time.sleep(1)
    assert len(received(bus, compliance)) == 1, "only the code update matches"
    # The event is the one the lifecycle topic holds, delivered unchanged.
    status, page, _ = api(bus, "GET", "/wisp/v1/events?limit=1000&type=FunctionCodeUpdated")
    stored = [stored for stored in page["Events"] if stored["Id"] == event["Id"]]
    assert len(stored) == 1 and stored[0]["Resource"] == arn
    for name in (compliance, watched):
        client.delete_function(FunctionName=name)


def test_events_published_before_a_crash_are_all_delivered_after_the_restart(server_factory):
    server = server_factory("bus-restart")
    client = server.client()
    topic = new_topic(server)
    target = create_recorder(client)
    status, body, _ = put_rule(server, topic, "all", {}, [target])
    assert status == 200, body
    publish(server, topic, [{"n": n} for n in range(50)])
    server.kill()
    server.start()
    got = wait_received(server, target, 50, timeout=120)
    assert sorted({event["Detail"]["n"] for event in got}) == list(range(50)), (
        "every event is delivered at least once (%d deliveries)" % len(got)
    )
    # The dispatcher resumed from its stored position: new events flow too.
    publish(server, topic, {"n": 50})
    got = wait_received(server, target, len(got) + 1)
    assert 50 in {event["Detail"]["n"] for event in got}


PUBLISHER = """
import datetime
import hashlib
import hmac
import json
import os
import urllib.request


def _key(secret, day, region):
    key = ("AWS4" + secret).encode()
    for part in (day, region, "lambda", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def handler(event, context):
    host = "%s:%s" % (os.environ["WISP_HOST_ADDRESS"], os.environ["BUS_PORT"])
    path = "/wisp/v1/topics/%s/events" % event["topic"]
    body = json.dumps(event["event"]).encode()
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    region = os.environ["AWS_REGION"]
    body_hash = hashlib.sha256(body).hexdigest()
    headers = "host:%s\\nx-amz-content-sha256:%s\\nx-amz-date:%s\\n" % (host, body_hash, stamp)
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\\n".join(["POST", path, "", headers, signed, body_hash])
    scope = "%s/%s/lambda/aws4_request" % (day, region)
    text = "\\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(_key(os.environ["BUS_SECRET"], day, region), text.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        "http://" + host + path,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Amz-Date": stamp,
            "X-Amz-Content-Sha256": body_hash,
            "Authorization": "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
            % (os.environ["BUS_KEY_ID"], scope, signed, signature),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
"""


def test_a_function_publishes_through_the_api_when_egress_is_on(server_factory):
    if shutil.which("slirp4netns") is None and not os.path.exists("/usr/bin/slirp4netns"):
        pytest.fail("slirp4netns is not installed (apt-get install -y slirp4netns); egress needs it")
    server = server_factory("bus-egress", extra_arguments=["--function-network", "egress"])
    client = server.client()
    topic = new_topic(server)
    name = support.unique_name("publisher")
    port = server.endpoint.rsplit(":", 1)[1]
    client.create_function(
        FunctionName=name,
        Runtime=support.PYTHON_RUNTIME,
        Role=support.ROLE,
        Handler="handler.handler",
        Code={"ZipFile": support.python_zip(PUBLISHER)},
        Timeout=30,
        Environment={"Variables": {"BUS_PORT": port, "BUS_KEY_ID": server.access_key, "BUS_SECRET": server.secret_key}},
    )
    support.wait_until_ready(client, name)
    response, result = support.invoke(client, name, {"topic": topic, "event": {"from": "inside"}})
    assert "FunctionError" not in response, result
    [receipt] = result["Events"]
    status, page, _ = api(server, "GET", "/wisp/v1/topics/%s/events?from=1" % topic)
    assert [(event["Id"], event["Detail"]) for event in page["Events"]] == [(receipt["Id"], {"from": "inside"})]
    client.delete_function(FunctionName=name)


def test_a_typed_target_must_accept_what_the_rule_delivers(bus):
    client = bus.client()
    target = create_recorder(client, "typed")
    only_code_updates = {
        "type": "object",
        "required": ["Type", "Resource"],
        "properties": {"Type": {"enum": ["FunctionCodeUpdated"]}, "Resource": {"type": "string"}},
    }
    status, body, _ = api(bus, "PUT", "/wisp/v1/functions/%s/signature" % target, {"Input": {"JsonSchema": only_code_updates}})
    assert status == 200, body
    # Every lifecycle event could reach it: refused, saying where and why.
    status, body, headers = put_rule(bus, "wisp.lifecycle", "too-wide", {"Resource": [{"prefix": "arn:"}]}, [target])
    assert status == 400 and headers["x-amzn-errortype"] == "InvalidParameterValueException", body
    assert "at /Type" in body["Message"] and "FunctionCreated" in body["Message"], body
    # A pattern that pins Type to what it accepts makes the wiring sound.
    status, body, _ = put_rule(bus, "wisp.lifecycle", "code-only", {"Type": ["FunctionCodeUpdated"]}, [target])
    assert status == 200, body
    # A user topic's events are envelopes with any Detail: a target that needs Detail.orderId is refused.
    topic = new_topic(bus)
    orders = create_recorder(client, "orders")
    needs_order = {"type": "object", "required": ["Detail"], "properties": {"Detail": {"type": "object", "required": ["orderId"]}}}
    status, body, _ = api(bus, "PUT", "/wisp/v1/functions/%s/signature" % orders, {"Input": {"JsonSchema": needs_order}})
    assert status == 200, body
    status, body, _ = put_rule(bus, topic, "orders", {}, [orders])
    assert status == 400 and "/Detail" in body["Message"] and "orderId" in body["Message"], body
    # wisp check re-checks rules: loosen nothing, but break the sound one by changing its target's type.
    status, body, _ = api(bus, "PUT", "/wisp/v1/functions/%s/signature" % target, {"Input": {"JsonSchema": {"type": "object", "required": ["Missing"]}}})
    assert status == 200, body
    checked = bus.wisp_cli("check", check=False)
    assert checked.returncode != 0, checked.stdout
    assert "code-only" in checked.stdout + checked.stderr and "Missing" in checked.stdout + checked.stderr, checked.stdout
    api(bus, "DELETE", "/wisp/v1/topics/wisp.lifecycle/rules/code-only")
    for name in (target, orders):
        client.delete_function(FunctionName=name)


def test_an_alias_move_that_would_break_a_rule_is_refused(bus):
    client = bus.client()
    target = create_recorder(client, "aliased")
    loose = {"type": "object", "required": ["Detail"]}
    status, body, _ = api(bus, "PUT", "/wisp/v1/functions/%s/signature" % target, {"Input": {"JsonSchema": loose}})
    assert status == 200, body
    first = client.publish_version(FunctionName=target)["Version"]
    strict = {"type": "object", "required": ["Detail"], "properties": {"Detail": {"type": "object", "required": ["orderId"]}}}
    status, body, _ = api(bus, "PUT", "/wisp/v1/functions/%s/signature" % target, {"Input": {"JsonSchema": strict}})
    assert status == 200, body
    second = client.publish_version(FunctionName=target)["Version"]
    client.create_alias(FunctionName=target, Name="live", FunctionVersion=first)
    topic = new_topic(bus)
    status, body, _ = put_rule(bus, topic, "to-live", {}, ["%s:live" % target])
    assert status == 200, body
    # Version 2 needs Detail.orderId, which the topic's events do not promise: the move is refused.
    with pytest.raises(client.exceptions.InvalidParameterValueException) as refused:
        client.update_alias(FunctionName=target, Name="live", FunctionVersion=second)
    message = refused.value.response["Error"]["Message"]
    assert "to-live" in message and "orderId" in message, message
    assert client.get_alias(FunctionName=target, Name="live")["FunctionVersion"] == first
