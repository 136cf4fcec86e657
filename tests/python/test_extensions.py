"""External extensions (agents) and the Extensions API, with a real agent shipped as a layer.

The recorder below is an ordinary extension, as one would write it for Lambda: a Python executable in
a layer's `extensions/` folder that registers for INVOKE, SHUTDOWN and (Wisp's addition) HEARTBEAT and
prints every event it gets. Its output goes to the function's log, which the tests read back through
`wisp logs`.
"""

import json
import time

from support import ROLE, PYTHON_RUNTIME, invoke, python_zip, unique_name, wait_until_ready, zip_files

RECORDER = r"""#!/usr/bin/env python3
import json
import os
import sys
import urllib.request

BASE = "http://%s/2020-01-01/extension" % os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = os.path.basename(__file__)
EVENTS = os.environ.get("RECORDER_EVENTS", "INVOKE,SHUTDOWN,HEARTBEAT").split(",")

register = urllib.request.Request(
    BASE + "/register",
    data=json.dumps({"events": EVENTS}).encode(),
    headers={"Lambda-Extension-Name": NAME, "Wisp-Heartbeat-Interval-Ms": "200"},
    method="POST",
)
with urllib.request.urlopen(register) as response:
    identifier = response.headers["Lambda-Extension-Identifier"]
    print("RECORDER registered " + json.dumps(json.load(response)), flush=True)
while True:
    request = urllib.request.Request(BASE + "/event/next", headers={"Lambda-Extension-Identifier": identifier})
    with urllib.request.urlopen(request) as response:
        event = json.load(response)
    print("RECORDER " + json.dumps(event), flush=True)
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""

HANDLER = """
def handler(event, context):
    return {"request_id": context.aws_request_id}
"""


def recorder_layer(client, name="recorder"):
    layer = client.publish_layer_version(
        LayerName=unique_name("agents"),
        Content={"ZipFile": zip_files({"extensions/" + name: (RECORDER, 0o755)})},
    )
    return layer["LayerVersionArn"]


def create_with_layers(client, layers, source=HANDLER, environment=None):
    name = unique_name("ext")
    client.create_function(
        FunctionName=name,
        Runtime=PYTHON_RUNTIME,
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": python_zip(source)},
        Layers=layers,
        Environment={"Variables": environment or {}},
    )
    wait_until_ready(client, name)
    return name


def log_text(server, name):
    return server.wisp_cli("logs", name, "--limit", "10000").stdout


def recorded(text):
    """The events the recorder printed, in order (registration included)."""
    events = []
    for line in text.splitlines():
        if line.startswith("RECORDER registered "):
            events.append({"eventType": "REGISTERED", "info": json.loads(line[len("RECORDER registered ") :])})
        elif line.startswith("RECORDER "):
            events.append(json.loads(line[len("RECORDER ") :]))
    return events


def wait_for_event(server, name, event_type, timeout=15):
    deadline = time.time() + timeout
    while True:
        events = recorded(log_text(server, name))
        if any(event["eventType"] == event_type for event in events) or time.time() > deadline:
            return events
        time.sleep(0.2)


def test_recorder_sees_invokes_heartbeats_and_a_spindown_shutdown_when_the_function_changes(
    wisp, lambda_client, account_id
):
    name = create_with_layers(lambda_client, [recorder_layer(lambda_client)])
    request_ids = []
    for _ in range(3):
        _, body = invoke(lambda_client, name, {})
        assert "request_id" in body, body
        request_ids.append(body["request_id"])
    time.sleep(1.2)  # idle: heartbeats every 200 ms
    lambda_client.update_function_configuration(FunctionName=name, Environment={"Variables": {"NEW": "1"}})
    events = wait_for_event(wisp, name, "SHUTDOWN")
    text = log_text(wisp, name)

    kinds = [event["eventType"] for event in events]
    assert kinds[0] == "REGISTERED", text
    info = events[0]["info"]
    assert info["functionName"] == name
    assert info["functionVersion"] == "$LATEST"
    assert info["handler"] == "handler.handler"
    assert info["accountId"] == account_id
    invokes = [event for event in events if event["eventType"] == "INVOKE"]
    assert [event["requestId"] for event in invokes] == request_ids, text
    for event in invokes:
        assert event["invokedFunctionArn"].endswith(":function:" + name)
        assert event["deadlineMs"] > time.time() * 1000 - 60_000
        assert event["tracing"]["type"] == "X-Amzn-Trace-Id"
    heartbeats = [event for event in events if event["eventType"] == "HEARTBEAT"]
    assert len(heartbeats) >= 3, text
    # Heartbeats only while idle: none between an INVOKE and the end of its invocation is possible
    # to see from here, but they all come after the first INVOKE (init is done by then).
    assert kinds.index("HEARTBEAT") > kinds.index("INVOKE")
    shutdown = events[-1]
    assert shutdown["eventType"] == "SHUTDOWN", text
    assert shutdown["shutdownReason"] == "spindown"
    assert shutdown["deadlineMs"] > time.time() * 1000 - 30_000
    # Every invocation notes how long the extensions took after the runtime's answer.
    for request_id in request_ids:
        assert "EXTENSIONS RequestId: %s\tPostRuntimeExtensionsDuration: " % request_id in text, text


def test_server_stop_sends_shutdown_with_reason_spindown(server_factory):
    server = server_factory("ext-stop")
    client = server.client()
    name = create_with_layers(client, [recorder_layer(client)])
    _, body = invoke(client, name, {})
    server.stop()
    server.start()
    events = wait_for_event(server, name, "SHUTDOWN", timeout=5)
    assert [event["requestId"] for event in events if event["eventType"] == "INVOKE"] == [body["request_id"]]
    assert events[-1] == {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": events[-1]["deadlineMs"]}
    server.stop()


def test_checkpoint_comes_before_shutdown_for_extensions_that_ask(wisp, lambda_client):
    name = create_with_layers(
        lambda_client,
        [recorder_layer(lambda_client)],
        environment={"RECORDER_EVENTS": "INVOKE,SHUTDOWN,CHECKPOINT"},
    )
    invoke(lambda_client, name, {})
    lambda_client.update_function_configuration(FunctionName=name, Environment={"Variables": {"RECORDER_EVENTS": "SHUTDOWN"}})
    events = wait_for_event(wisp, name, "SHUTDOWN")
    kinds = [event["eventType"] for event in events]
    assert kinds == ["REGISTERED", "INVOKE", "CHECKPOINT", "SHUTDOWN"], kinds
    assert events[2]["reason"] == "spindown"


def test_an_extension_that_exits_without_registering_fails_init_at_once(lambda_client):
    layer = lambda_client.publish_layer_version(
        LayerName=unique_name("agents"),
        Content={"ZipFile": zip_files({"extensions/quitter": ("#!/bin/sh\necho giving up\nexit 3\n", 0o755)})},
    )
    name = create_with_layers(lambda_client, [layer["LayerVersionArn"]])
    started = time.time()
    response = lambda_client.invoke(FunctionName=name, Payload=b"{}")
    body = json.loads(response["Payload"].read())
    assert time.time() - started < 5
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Extension.InitError"
    assert "extension quitter exited without registering" in body["errorMessage"]


def test_an_extension_that_never_registers_fails_init_after_the_init_limit(wisp, lambda_client):
    layer = lambda_client.publish_layer_version(
        LayerName=unique_name("agents"),
        Content={"ZipFile": zip_files({"extensions/silent": ("#!/bin/sh\nsleep 60\n", 0o755)})},
    )
    name = create_with_layers(lambda_client, [layer["LayerVersionArn"]])
    response = lambda_client.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    body = json.loads(response["Payload"].read())
    assert body["errorType"] == "Extension.InitError"
    assert "extension silent did not register with the Extensions API within 10 seconds" in body["errorMessage"]
    deadline = time.time() + 10
    while "Extension.InitError: extension silent" not in log_text(wisp, name) and time.time() < deadline:
        time.sleep(0.2)
    assert "Extension.InitError: extension silent did not register" in log_text(wisp, name)


PROBE = r"""
import json
import os
import urllib.error
import urllib.request

BASE = "http://%s/2020-01-01/extension" % os.environ["AWS_LAMBDA_RUNTIME_API"]


def call(path, method="GET", headers=None, body=None):
    request = urllib.request.Request(BASE + path, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def handler(event, context):
    return {
        "no_name": call("/register", "POST", {}, b'{"events":["INVOKE"]}'),
        "bad_event": call("/register", "POST", {"Lambda-Extension-Name": "x"}, b'{"events":["LOGS"]}'),
        "bad_interval": call("/register", "POST", {"Lambda-Extension-Name": "x", "Wisp-Heartbeat-Interval-Ms": "5"}, b'{"events":["HEARTBEAT"]}'),
        "late": call("/register", "POST", {"Lambda-Extension-Name": "late"}, b'{"events":["INVOKE"]}'),
        "no_id": call("/event/next"),
        "unknown_id": call("/event/next", headers={"Lambda-Extension-Identifier": "nope"}),
    }
"""


def test_extensions_api_errors_are_in_lambdas_shape(lambda_client):
    name = create_with_layers(lambda_client, [], source=PROBE)
    _, answers = invoke(lambda_client, name, {})
    expected = {
        "no_name": (400, "Extension.InvalidRequest", "Lambda-Extension-Name header is missing"),
        "bad_event": (400, "Extension.InvalidRequest", 'unknown event "LOGS"'),
        "bad_interval": (400, "Extension.InvalidRequest", "at least 100"),
        "late": (403, "Extension.ForbiddenOperation", "registered after init completed"),
        "no_id": (403, "Extension.MissingExtensionIdentifier", "Lambda-Extension-Identifier header is missing"),
        "unknown_id": (403, "Extension.UnknownExtensionIdentifier", '"nope"'),
    }
    for key, (status, error_type, message) in expected.items():
        got_status, document = answers[key]
        assert got_status == status, (key, answers[key])
        assert document["errorType"] == error_type, (key, document)
        assert message in document["errorMessage"], (key, document)


TELEMETRY_AGENT = r"""#!/usr/bin/env python3
import json
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = os.path.basename(__file__)
OUT = "/tmp/telemetry.jsonl"


def write(entry):
    with open(OUT, "a") as out:
        out.write(json.dumps(entry) + "\n")


class Listener(BaseHTTPRequestHandler):
    def do_POST(self):
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        write({"batch": batch})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *arguments):
        pass


server = HTTPServer(("sandbox.localdomain", 4243), Listener)
threading.Thread(target=server.serve_forever, daemon=True).start()


def call(path, method, headers, body):
    request = urllib.request.Request("http://%s/%s" % (API, path), data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


_, headers, _ = call(
    "2020-01-01/extension/register", "POST", {"Lambda-Extension-Name": NAME}, json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode()
)
identifier = headers["Lambda-Extension-Identifier"]
bad = call("2022-07-01/telemetry", "PUT", {"Lambda-Extension-Identifier": identifier}, json.dumps({"schemaVersion": "2022-12-13", "types": ["platform"], "buffering": {"timeoutMs": 5}, "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/"}}).encode())
write({"bad_subscribe": [bad[0], json.loads(bad[2])]})
subscription = {
    "schemaVersion": "2022-12-13",
    "types": ["platform", "function", "extension"],
    "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
    "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/telemetry"},
}
good = call("2022-07-01/telemetry", "PUT", {"Lambda-Extension-Identifier": identifier}, json.dumps(subscription).encode())
write({"subscribe": [good[0], good[2].decode()]})
print("AGENT-SAYS subscribed", flush=True)
while True:
    _, _, body = call("2020-01-01/extension/event/next", "GET", {"Lambda-Extension-Identifier": identifier}, None)
    if json.loads(body)["eventType"] == "SHUTDOWN":
        break
"""

TELEMETRY_HANDLER = """
import json
import time


def handler(event, context):
    if event.get("read"):
        time.sleep(0.3)  # a batch waits at most timeoutMs (25 ms) before it is sent
        with open("/tmp/telemetry.jsonl") as lines:
            return [json.loads(line) for line in lines]
    print("HANDLER-SAYS " + context.aws_request_id)
    return {"request_id": context.aws_request_id}
"""


def test_telemetry_api_delivers_platform_and_function_events_to_the_agents_listener(lambda_client):
    layer = lambda_client.publish_layer_version(
        LayerName=unique_name("agents"),
        Content={"ZipFile": zip_files({"extensions/telemetry-agent": (TELEMETRY_AGENT, 0o755)})},
    )
    name = create_with_layers(lambda_client, [layer["LayerVersionArn"]], source=TELEMETRY_HANDLER)
    request_ids = []
    for _ in range(2):
        _, body = invoke(lambda_client, name, {})
        assert "request_id" in body, body
        request_ids.append(body["request_id"])
    _, entries = invoke(lambda_client, name, {"read": True})

    assert entries[0]["bad_subscribe"][0] == 400
    assert entries[0]["bad_subscribe"][1]["errorType"] == "ValidationError"
    assert "timeoutMs must be a whole number from 25 to 30000" in entries[0]["bad_subscribe"][1]["errorMessage"]
    assert entries[1]["subscribe"] == [200, '"OK"']
    batches = [entry["batch"] for entry in entries if "batch" in entry]
    assert batches and all(isinstance(batch, list) and batch for batch in batches)
    events = [event for batch in batches for event in batch]
    for event in events:
        assert event["time"].endswith("Z") and "T" in event["time"]
    types = [event["type"] for event in events]
    # Init, from before the subscription, is delivered too.
    assert "platform.initStart" in types
    assert "platform.initReport" in types
    extension = next(event for event in events if event["type"] == "platform.extension")
    assert extension["record"] == {"name": "telemetry-agent", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]}
    subscribed = next(event for event in events if event["type"] == "platform.telemetrySubscription")
    assert subscribed["record"]["types"] == ["platform", "function", "extension"]
    # What the agent prints is the extension stream, not the function's.
    assert {"extension"} == {event["type"] for event in events if event["record"] == "AGENT-SAYS subscribed"}
    for request_id in request_ids:
        mine = [event for event in events if isinstance(event["record"], dict) and event["record"].get("requestId") == request_id]
        assert [event["type"] for event in mine] == ["platform.start", "platform.runtimeDone", "platform.report"], mine
        assert mine[1]["record"]["status"] == "success"
        report = mine[2]["record"]
        assert report["status"] == "success"
        assert report["metrics"]["durationMs"] > 0
        assert report["metrics"]["billedDurationMs"] >= 1
        assert report["metrics"]["memorySizeMB"] == 128
        function_lines = [event["record"] for event in events if event["type"] == "function"]
        assert "HANDLER-SAYS " + request_id in function_lines, function_lines


REPORTER = r"""#!/usr/bin/env python3
import json
import os
import sys
import urllib.request

BASE = "http://%s/2020-01-01/extension" % os.environ["AWS_LAMBDA_RUNTIME_API"]
MODE = os.environ["REPORTER_MODE"]


def post(path, identifier, error_type, message):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps({"errorMessage": message, "errorType": error_type}).encode(),
        headers={"Lambda-Extension-Identifier": identifier, "Lambda-Extension-Function-Error-Type": error_type},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        return response.status


register = urllib.request.Request(
    BASE + "/register",
    data=b'{"events":["INVOKE","SHUTDOWN"]}',
    headers={"Lambda-Extension-Name": "reporter"},
    method="POST",
)
with urllib.request.urlopen(register) as response:
    identifier = response.headers["Lambda-Extension-Identifier"]
if MODE == "init":
    print("REPORTER init/error answered %d" % post("/init/error", identifier, "Extension.ConfigInvalid", "no API key"), flush=True)
    sys.exit(1)
while True:
    request = urllib.request.Request(BASE + "/event/next", headers={"Lambda-Extension-Identifier": identifier})
    with urllib.request.urlopen(request) as response:
        event = json.load(response)
    print("REPORTER " + json.dumps(event), flush=True)
    if event["eventType"] == "INVOKE":
        print("REPORTER exit/error answered %d" % post("/exit/error", identifier, "Extension.Crash", "lost my socket"), flush=True)
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""

INSTANCE_HANDLER = """
import uuid

INSTANCE = uuid.uuid4().hex


def handler(event, context):
    return {"instance": INSTANCE}
"""


def reporter_function(lambda_client, mode):
    layer = lambda_client.publish_layer_version(
        LayerName=unique_name("agents"),
        Content={"ZipFile": zip_files({"extensions/reporter": (REPORTER, 0o755)})},
    )
    return create_with_layers(
        lambda_client, [layer["LayerVersionArn"]], source=INSTANCE_HANDLER, environment={"REPORTER_MODE": mode}
    )


def test_init_error_from_an_extension_fails_the_invocation_with_its_error(lambda_client):
    name = reporter_function(lambda_client, "init")
    response = lambda_client.invoke(FunctionName=name, Payload=b"{}")
    body = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Extension.ConfigInvalid"
    assert body["errorMessage"] == "extension reporter reported Extension.ConfigInvalid: no API key"


def test_exit_error_retires_the_instance_and_its_extensions_get_shutdown_failure(wisp, lambda_client):
    name = reporter_function(lambda_client, "exit")
    _, first = invoke(lambda_client, name, {})
    _, second = invoke(lambda_client, name, {})
    assert first["instance"] != second["instance"]
    text = ""
    deadline = time.time() + 15
    while time.time() < deadline:
        text = log_text(wisp, name)
        if '"shutdownReason": "failure"' in text:
            break
        time.sleep(0.2)
    assert "REPORTER exit/error answered 202" in text
    events = [json.loads(line[len("REPORTER ") :]) for line in text.splitlines() if line.startswith("REPORTER {")]
    shutdowns = [event for event in events if event["eventType"] == "SHUTDOWN"]
    assert shutdowns and shutdowns[0]["shutdownReason"] == "failure", text
