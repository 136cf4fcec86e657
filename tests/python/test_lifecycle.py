"""Lifecycle events: every control-plane change and instance start/stop, read back with
`GET /wisp/v1/events` and `wisp events tail` (see docs/LIFECYCLE.md)."""

import json
import os
import queue
import subprocess
import threading
import time

import pytest

import support
from support import invoke, python_zip, unique_name

HANDLER = "def handler(event, context):\n    return {'ok': True}\n"
OTHER_HANDLER = "def handler(event, context):\n    return {'ok': 2}\n"


@pytest.fixture(scope="module")
def server(server_factory):
    """A private server (so its event stream is this module's alone) that stops idle instances fast."""
    return server_factory("lifecycle", extra_arguments=["--idle-timeout", "1"])


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def all_events(server):
    status, _, body = support.signed_request(server, "GET", "/wisp/v1/events?from=1&limit=10000")
    assert status == 200, body
    return json.loads(body)["Events"]


def events_of(server, name):
    """Events whose resource is the function `name` or one of its versions and aliases."""
    return [
        event
        for event in all_events(server)
        if event["Resource"].split(":")[6:7] == [name]
    ]


def wait_for_event(server, name, predicate, timeout=20):
    deadline = time.time() + timeout
    while True:
        found = [event for event in events_of(server, name) if predicate(event)]
        if found or time.time() > deadline:
            return found
        time.sleep(0.2)


def create(client, name, source=HANDLER):
    configuration = client.create_function(
        FunctionName=name,
        Runtime=support.PYTHON_RUNTIME,
        Role=support.ROLE,
        Handler="handler.handler",
        Code={"ZipFile": python_zip(source)},
        Timeout=3,
    )
    support.wait_until_ready(client, name)
    return configuration


def test_every_control_plane_change_appends_its_event(server, client):
    name = unique_name("life")
    created = create(client, name)
    arn = created["FunctionArn"]
    client.update_function_configuration(FunctionName=name, Timeout=9)
    client.update_function_code(FunctionName=name, ZipFile=python_zip(OTHER_HANDLER))
    support.wait_until_ready(client, name)
    published = client.publish_version(FunctionName=name)
    client.create_alias(FunctionName=name, Name="live", FunctionVersion=published["Version"])
    client.update_alias(FunctionName=name, Name="live", Description="moved")
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    client.delete_function_concurrency(FunctionName=name)
    client.delete_alias(FunctionName=name, Name="live")
    client.delete_function(FunctionName=name)

    events = [event for event in events_of(server, name) if not event["Type"].startswith("Instance")]
    assert [event["Type"] for event in events] == [
        "FunctionCreated",
        "FunctionConfigurationUpdated",
        "FunctionCodeUpdated",
        "VersionPublished",
        "AliasCreated",
        "AliasUpdated",
        "ConcurrencyChanged",
        "ConcurrencyChanged",
        "AliasDeleted",
        "FunctionDeleted",
    ]
    for event in events:
        assert event["Actor"] == server.access_key, event
        assert event["Account"] == arn.split(":")[4]
        assert event["SchemaVersion"] == 1
        assert event["Time"].endswith("Z") and len(event["Time"]) == len("2026-12-04T20:31:07.123Z")
        assert event["Reason"] is None
    by_type = {}
    for event in events:
        by_type.setdefault(event["Type"], []).append(event)

    created_event = by_type["FunctionCreated"][0]
    assert created_event["Resource"] == arn
    assert created_event["Before"] is None
    assert created_event["After"]["Timeout"] == 3

    updated = by_type["FunctionConfigurationUpdated"][0]
    assert updated["Resource"] == arn
    assert (updated["Before"]["Timeout"], updated["After"]["Timeout"]) == (3, 9)

    code = by_type["FunctionCodeUpdated"][0]
    assert code["Before"]["CodeSha256"] == created["CodeSha256"]
    assert code["After"]["CodeSha256"] == support.code_sha256(python_zip(OTHER_HANDLER))

    version = by_type["VersionPublished"][0]
    assert version["Resource"] == arn + ":" + published["Version"]
    assert version["After"]["Version"] == published["Version"]

    alias_arn = arn + ":live"
    assert by_type["AliasCreated"][0]["Resource"] == alias_arn
    assert by_type["AliasCreated"][0]["After"]["FunctionVersion"] == published["Version"]
    alias_updated = by_type["AliasUpdated"][0]
    assert (alias_updated["Before"]["Description"], alias_updated["After"]["Description"]) == ("", "moved")
    alias_deleted = by_type["AliasDeleted"][0]
    assert (alias_deleted["Resource"], alias_deleted["After"]) == (alias_arn, None)
    assert alias_deleted["Before"]["Name"] == "live"

    reserved, unreserved = by_type["ConcurrencyChanged"]
    assert reserved["Resource"] == arn
    assert (reserved["Before"], reserved["After"]) == (None, {"ReservedConcurrentExecutions": 5})
    assert (unreserved["Before"], unreserved["After"]) == ({"ReservedConcurrentExecutions": 5}, None)

    deleted = by_type["FunctionDeleted"][0]
    assert deleted["Resource"] == arn
    assert deleted["After"] is None
    assert deleted["Before"]["Timeout"] == 9

    assert len({event["Id"] for event in events}) == len(events)


def test_a_failed_change_appends_nothing(server, client):
    name = unique_name("life-bad")
    create(client, name)
    before = len(events_of(server, name))
    support.expect_error(
        "InvalidParameterValueException",
        400,
        server.client(validate=False).update_function_configuration,
        FunctionName=name,
        Timeout=0,
    )
    assert len(events_of(server, name)) == before
    client.delete_function(FunctionName=name)


def test_instances_start_and_stop_when_idle_with_the_reason(server, client):
    name = unique_name("life-idle")
    create(client, name)
    invoke(client, name, {})
    started = wait_for_event(server, name, lambda event: event["Type"] == "InstanceStarted")
    assert started, events_of(server, name)
    assert started[0]["Actor"] == "wisp"
    assert started[0]["Resource"].endswith(":function:%s:$LATEST" % name)
    assert started[0]["After"]["Version"] == "$LATEST"
    instance = started[0]["After"]["InstanceId"]
    stopped = wait_for_event(server, name, lambda event: event["Type"] == "InstanceStopped")
    assert stopped, events_of(server, name)
    assert stopped[0]["Reason"] == "idle"
    assert stopped[0]["Before"]["InstanceId"] == instance
    assert stopped[0]["Actor"] == "wisp"
    client.delete_function(FunctionName=name)


def test_a_changed_function_stops_its_instances_with_that_reason(server_factory):
    # A long idle timeout, so the instance is still warm when the function changes.
    server = server_factory("lifecycle-change")
    client = server.client()
    name = unique_name("life-change")
    create(client, name)
    invoke(client, name, {})
    client.update_function_configuration(FunctionName=name, Timeout=5)
    stopped = wait_for_event(server, name, lambda event: event["Type"] == "InstanceStopped")
    assert stopped, events_of(server, name)
    assert stopped[0]["Reason"] == "function changed"


def test_events_tail_follow_prints_a_later_event(server, client):
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WISP_"))}
    environment.update(
        {
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    follower = subprocess.Popen(
        [str(server.binary), "--endpoint", server.endpoint, "events", "tail", "--follow", "--type", "FunctionCreated"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        time.sleep(1.5)
        name = unique_name("life-tail")
        create(client, name)
        deadline = time.time() + 30
        seen = []
        while time.time() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if ":function:%s " % name in line:
                break
        else:
            pytest.fail("wisp events tail --follow did not print the new function; it printed %r" % seen)
        assert "FunctionCreated" in line and ("by %s" % server.access_key) in line, line
        assert follower.poll() is None, "the follower should still be running"
    finally:
        follower.kill()
        follower.wait(timeout=10)
    client.delete_function(FunctionName=name)


def test_events_tail_filters_by_type(server, client):
    name = unique_name("life-type")
    create(client, name)
    client.update_function_configuration(FunctionName=name, Timeout=7)
    completed = server.wisp_cli("--output", "json", "events", "tail", "--type", "FunctionConfigurationUpdated", "--limit", "1000")
    printed = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    assert printed and all(event["Type"] == "FunctionConfigurationUpdated" for event in printed), printed
    assert any(event["Resource"].endswith(":function:" + name) for event in printed)
    client.delete_function(FunctionName=name)


def test_events_long_poll_answers_when_one_arrives(server, client):
    status, _, body = support.signed_request(server, "GET", "/wisp/v1/events?limit=1")
    assert status == 200
    following = json.loads(body)["NextOffset"]
    answered = {}

    def poll():
        started = time.time()
        answered["reply"] = support.signed_request(server, "GET", "/wisp/v1/events?from=%d&wait=20" % following)
        answered["seconds"] = time.time() - started

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(1)
    name = unique_name("life-poll")
    create(client, name)
    poller.join(timeout=30)
    status, _, body = answered["reply"]
    assert status == 200
    events = json.loads(body)["Events"]
    assert events and events[0]["Offset"] == following
    assert answered["seconds"] < 15
    client.delete_function(FunctionName=name)


def test_events_survive_a_crash_and_restart(server_factory):
    server = server_factory("lifecycle-restart")
    client = server.client()
    name = unique_name("life-crash")
    create(client, name)
    client.publish_version(FunctionName=name)
    before = [event["Id"] for event in events_of(server, name) if not event["Type"].startswith("Instance")]
    assert len(before) == 2
    server.kill()
    server.start()
    after = [event["Id"] for event in events_of(server, name) if not event["Type"].startswith("Instance")]
    assert after == before
    client = server.client()
    client.delete_function(FunctionName=name)
    assert events_of(server, name)[-1]["Type"] == "FunctionDeleted"


def test_events_need_a_signed_request(server):
    status, _, _ = support.signed_request(server, "GET", "/wisp/v1/events", sign=False)
    assert status in (401, 403)


def test_a_graceful_stop_records_its_instances_stopping(server_factory):
    server = server_factory("lifecycle-stop")
    client = server.client()
    name = unique_name("life-stop")
    create(client, name)
    invoke(client, name, {})
    assert wait_for_event(server, name, lambda event: event["Type"] == "InstanceStarted")
    server.stop()
    server.start()
    stopped = [event for event in events_of(server, name) if event["Type"] == "InstanceStopped"]
    assert [event["Reason"] for event in stopped] == ["server stopping"], events_of(server, name)


def test_an_unknown_type_is_refused_with_the_known_ones(server):
    completed = server.wisp_cli("events", "tail", "--type", "FunctionCreatd", check=False)
    assert completed.returncode != 0
    assert "FunctionCreatd" in completed.stderr and "InstanceStopped" in completed.stderr, completed.stderr


def test_events_filter_by_several_types_on_the_server(server, client):
    name = unique_name("life-types")
    create(client, name)
    client.update_function_configuration(FunctionName=name, Timeout=4)
    status, _, body = support.signed_request(
        server, "GET", "/wisp/v1/events?from=1&limit=10000&type=FunctionCreated%2CFunctionConfigurationUpdated"
    )
    assert status == 200, body
    mine = [event["Type"] for event in json.loads(body)["Events"] if event["Resource"].split(":")[6:7] == [name]]
    assert mine == ["FunctionCreated", "FunctionConfigurationUpdated"]
    client.delete_function(FunctionName=name)


def test_wisp_settings_changes_append_their_events(server, client):
    name = unique_name("life-settings")
    arn = create(client, name)["FunctionArn"]
    server.wisp_cli("pure", name, "--ttl", "60")
    server.wisp_cli("idempotency", name, "--key-header")
    server.wisp_cli("receipts", name, "--on")
    client.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    client.delete_function_event_invoke_config(FunctionName=name)
    server.wisp_cli("idempotency", name, "--off")
    events = [event for event in events_of(server, name) if not event["Type"].startswith("Instance")]
    assert [event["Type"] for event in events] == [
        "FunctionCreated",
        "MemoizationChanged",
        "IdempotencyChanged",
        "ReceiptsChanged",
        "EventInvokeConfigChanged",
        "EventInvokeConfigChanged",
        "IdempotencyChanged",
    ]
    assert all(event["Actor"] == server.access_key for event in events)
    receipts = events[3]
    assert (receipts["Resource"], receipts["Before"], receipts["After"]) == (arn, {"Enabled": False}, {"Enabled": True})
    put, deleted = events[4], events[5]
    assert put["Resource"] == arn + ":$LATEST" and put["Before"] is None
    assert put["After"]["MaximumRetryAttempts"] == 1
    assert deleted["Before"]["MaximumRetryAttempts"] == 1 and deleted["After"] is None
    assert events[2]["Before"] is None and events[6]["After"] is None and events[6]["Before"] is not None
    client.delete_function(FunctionName=name)


def test_layer_versions_published_and_deleted_append_their_events(server, client):
    name = unique_name("life-layer")
    published = client.publish_layer_version(
        LayerName=name, Content={"ZipFile": support.zip_files({"python/lifehelper.py": "X = 1\n"})}
    )
    client.delete_layer_version(LayerName=name, VersionNumber=published["Version"])
    client.delete_layer_version(LayerName=name, VersionNumber=published["Version"])
    events = events_of(server, name)
    assert [event["Type"] for event in events] == ["LayerVersionPublished", "LayerVersionDeleted"]
    assert all(event["Resource"] == published["LayerVersionArn"] for event in events)
    assert events[0]["After"]["Version"] == published["Version"] and events[0]["Before"] is None
    assert events[1]["Before"]["Version"] == published["Version"] and events[1]["After"] is None
