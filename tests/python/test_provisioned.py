"""Provisioned concurrency: Put/Get/List/DeleteProvisionedConcurrencyConfig with Lambda's rules and
errors, instances initialised before any invoke (no cold start, no Init Duration), replaced when they
die, spill-over to on-demand instances when all are busy, and re-provisioned after a restart."""

import json
import os
import signal
import threading
import time

import pytest

from support import (
    PYTHON_RUNTIME,
    ROLE,
    decode_log,
    expect_error,
    function_processes,
    invoke,
    python_zip,
    unique_name,
    wait_until_ready,
)

# Initialisation takes a second, so an invocation that pays for it is easy to tell apart.
SLOW_INIT = """
import os, time, uuid
time.sleep(1)
INSTANCE = uuid.uuid4().hex
INIT_TYPE = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")

def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"instance": INSTANCE, "init_type": INIT_TYPE, "version": context.function_version}
"""

FAILING_INIT = "raise RuntimeError('no database at init')\n\ndef handler(event, context):\n    return 1\n"


def eventually(check, timeout=30, interval=0.1):
    """Retry `check` until it returns a true value or the time is up; return its last value."""
    deadline = time.time() + timeout
    while True:
        result = check()
        if result or time.time() > deadline:
            return result
        time.sleep(interval)


def create_versioned(client, source=SLOW_INIT, versions=1, prefix="pc", **arguments):
    """A function with `versions` published versions; returns its name."""
    name = unique_name(prefix)
    arguments.setdefault("Timeout", 30)
    client.create_function(
        FunctionName=name,
        Runtime=PYTHON_RUNTIME,
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": python_zip(source)},
        **arguments,
    )
    wait_until_ready(client, name)
    for number in range(1, versions + 1):
        client.update_function_configuration(FunctionName=name, Description="v%d" % number)
        wait_until_ready(client, name)
        assert client.publish_version(FunctionName=name)["Version"] == str(number)
    return name


@pytest.fixture
def versioned(lambda_client):
    created = []

    def make(**arguments):
        name = create_versioned(lambda_client, **arguments)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            lambda_client.delete_function(FunctionName=name)
        except Exception:
            pass


def wait_ready(client, name, qualifier, timeout=30):
    config = eventually(
        lambda: (lambda c: c if c["Status"] != "IN_PROGRESS" else None)(
            client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        ),
        timeout=timeout,
    )
    assert config and config["Status"] == "READY", config or client.get_provisioned_concurrency_config(
        FunctionName=name, Qualifier=qualifier
    )
    return config


def provisioned_pids(name, version=None):
    """Host pids of the function's runtime processes started as provisioned instances."""
    found = []
    for pid in function_processes(name):
        try:
            with open("/proc/%d/environ" % pid, "rb") as environ:
                variables = dict(
                    entry.split(b"=", 1) for entry in environ.read().split(b"\0") if b"=" in entry
                )
        except OSError:
            continue
        if variables.get(b"AWS_LAMBDA_INITIALIZATION_TYPE") != b"provisioned-concurrency":
            continue
        if version is not None and variables.get(b"AWS_LAMBDA_FUNCTION_VERSION") != str(version).encode():
            continue
        found.append(pid)
    return found


def runtime_pids(pids):
    """Only the runtime processes (python3), not the launcher or a wrapper around it."""
    result = []
    for pid in pids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
                if b"bootstrap.py" in cmdline.read():
                    result.append(pid)
        except OSError:
            continue
    return result


def records(wisp, name):
    return json.loads(wisp.wisp_cli("--output", "json", "invocations", name, "--limit", "100").stdout)


def report_line(response):
    lines = [line for line in decode_log(response).splitlines() if line.startswith("REPORT RequestId:")]
    assert len(lines) == 1, decode_log(response)
    return lines[0]


# ---------------------------------------------------------------- control plane


def test_put_get_list_and_delete_a_version_config(lambda_client, versioned):
    name = versioned()
    put = lambda_client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY")
    assert put["LastModified"]

    ready = wait_ready(lambda_client, name, "1")
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert "StatusReason" not in ready

    listed = lambda_client.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert len(listed) == 1
    assert listed[0]["FunctionArn"].endswith(":function:%s:1" % name)
    assert listed[0]["Status"] == "READY"
    assert len(runtime_pids(provisioned_pids(name))) == 2

    deleted = lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    expect_error(
        "ProvisionedConcurrencyConfigNotFoundException",
        404,
        lambda_client.get_provisioned_concurrency_config,
        FunctionName=name,
        Qualifier="1",
    )
    assert lambda_client.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []
    # Deleting the configuration stops its instances.
    assert eventually(lambda: not provisioned_pids(name), timeout=15), provisioned_pids(name)


def test_errors_follow_lambda(lambda_client, raw_client, versioned):
    name = versioned()
    missing = unique_name("missing")
    put = lambda_client.put_provisioned_concurrency_config
    get = lambda_client.get_provisioned_concurrency_config
    delete = lambda_client.delete_provisioned_concurrency_config

    for call in (put, get, delete):
        arguments = {"ProvisionedConcurrentExecutions": 1} if call is put else {}
        expect_error("InvalidParameterValueException", 400, call, FunctionName=name, Qualifier="$LATEST", **arguments)
        expect_error("ResourceNotFoundException", 404, call, FunctionName=missing, Qualifier="1", **arguments)
        expect_error("ResourceNotFoundException", 404, call, FunctionName=name, Qualifier="9", **arguments)
        expect_error("ResourceNotFoundException", 404, call, FunctionName=name, Qualifier="nosuchalias", **arguments)
    expect_error("ResourceNotFoundException", 404, lambda_client.list_provisioned_concurrency_configs, FunctionName=missing)

    # No configuration yet: Get says so with its own error, Delete succeeds as Lambda's does.
    expect_error("ProvisionedConcurrencyConfigNotFoundException", 404, get, FunctionName=name, Qualifier="1")
    assert delete(FunctionName=name, Qualifier="1")["ResponseMetadata"]["HTTPStatusCode"] == 204

    # An alias of $LATEST is not a published version either.
    lambda_client.create_alias(FunctionName=name, Name="edge", FunctionVersion="$LATEST")
    expect_error("InvalidParameterValueException", 400, put, FunctionName=name, Qualifier="edge", ProvisionedConcurrentExecutions=1)

    # Counts: at least 1, within reserved concurrency, within the account's unreserved concurrency.
    expect_error(
        "InvalidParameterValueException", 400, raw_client.put_provisioned_concurrency_config,
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=0,
    )
    expect_error(
        "InvalidParameterValueException", 400, put, FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=5000
    )
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    refused = expect_error(
        "InvalidParameterValueException", 400, put, FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
    )
    assert "reserved concurrency of 1" in refused["Error"]["Message"], refused
    put(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    # Reserved concurrency cannot then go below what is provisioned.
    expect_error(
        "InvalidParameterValueException", 400, lambda_client.put_function_concurrency,
        FunctionName=name, ReservedConcurrentExecutions=0,
    )
    delete(FunctionName=name, Qualifier="1")
    lambda_client.delete_function_concurrency(FunctionName=name)


def test_a_version_and_an_alias_routing_to_it_cannot_both_have_one(lambda_client, versioned):
    name = versioned(versions=2)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    put = lambda_client.put_provisioned_concurrency_config

    put(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    expect_error("ResourceConflictException", 409, put, FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")

    put(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    expect_error("ResourceConflictException", 409, put, FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    # Version 2 is free; an alias with a configuration cannot then be moved onto it.
    put(FunctionName=name, Qualifier="2", ProvisionedConcurrentExecutions=1)
    expect_error("ResourceConflictException", 409, lambda_client.update_alias, FunctionName=name, Name="live", FunctionVersion="2")

    # Deleting the alias or the version removes its configuration.
    lambda_client.delete_alias(FunctionName=name, Name="live")
    lambda_client.delete_function(FunctionName=name, Qualifier="2")
    assert lambda_client.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []
    assert eventually(lambda: not provisioned_pids(name), timeout=15), provisioned_pids(name)


def test_deleting_the_function_stops_its_provisioned_instances(lambda_client):
    name = create_versioned(lambda_client, prefix="pcgone")
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    wait_ready(lambda_client, name, "1")
    assert provisioned_pids(name)
    lambda_client.delete_function(FunctionName=name)
    assert eventually(lambda: not function_processes(name), timeout=15), function_processes(name)


# ---------------------------------------------------------------- warm instances


def test_first_invoke_after_ready_is_warm(wisp, lambda_client, versioned):
    name = versioned()
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    wait_ready(lambda_client, name, "live")

    started = time.monotonic()
    response, payload = invoke(lambda_client, name, {}, Qualifier="live", LogType="Tail")
    warm_seconds = time.monotonic() - started
    assert payload["init_type"] == "provisioned-concurrency", payload
    assert payload["version"] == "1"
    assert "Init Duration" not in report_line(response)
    # The same version invoked directly uses the same provisioned instance.
    again, direct = invoke(lambda_client, name, {}, Qualifier="1")
    assert direct["instance"] == payload["instance"]

    # $LATEST has no provisioned instance: its first invoke pays the one-second init.
    started = time.monotonic()
    cold_response, cold = invoke(lambda_client, name, {}, LogType="Tail")
    cold_seconds = time.monotonic() - started
    assert cold["init_type"] == "on-demand"
    assert "Init Duration" in report_line(cold_response)
    assert cold_seconds >= 1.0, cold_seconds
    assert warm_seconds < 0.5, "the first invoke of a provisioned version took %.3f s" % warm_seconds

    request_id = response["ResponseMetadata"]["RequestId"]
    cold_id = cold_response["ResponseMetadata"]["RequestId"]
    found = eventually(lambda: {r["request_id"]: r for r in records(wisp, name) if r["request_id"] in (request_id, cold_id)}
                       if len([r for r in records(wisp, name) if r["request_id"] in (request_id, cold_id)]) == 2 else None)
    assert found, records(wisp, name)
    assert found[request_id]["cold_start"] is False
    assert "init_duration_us" not in found[request_id]
    assert found[cold_id]["cold_start"] is True


def test_busy_provisioned_instances_spill_over_to_on_demand(lambda_client, versioned):
    name = versioned()
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    wait_ready(lambda_client, name, "1")

    busy = {}
    thread = threading.Thread(target=lambda: busy.update(invoke(lambda_client, name, {"sleep": 2}, Qualifier="1")[1]))
    thread.start()
    time.sleep(0.5)
    response, spilled = invoke(lambda_client, name, {}, Qualifier="1", LogType="Tail")
    thread.join()
    assert busy["init_type"] == "provisioned-concurrency", busy
    assert spilled["init_type"] == "on-demand", spilled
    assert "Init Duration" in report_line(response)
    # Once free, the provisioned instance is used first again.
    _, after = invoke(lambda_client, name, {}, Qualifier="1")
    assert after["instance"] == busy["instance"]


def test_a_killed_provisioned_instance_is_replaced(lambda_client, versioned):
    name = versioned()
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2)
    wait_ready(lambda_client, name, "1")
    before = runtime_pids(provisioned_pids(name))
    assert len(before) == 2, before

    os.kill(before[0], signal.SIGKILL)
    replaced = eventually(
        lambda: (lambda pids: pids if len(pids) == 2 and before[0] not in pids else None)(runtime_pids(provisioned_pids(name))),
        timeout=20,
    )
    assert replaced, runtime_pids(provisioned_pids(name))
    config = wait_ready(lambda_client, name, "1")
    assert config["AvailableProvisionedConcurrentExecutions"] == 2
    _, payload = invoke(lambda_client, name, {}, Qualifier="1")
    assert payload["init_type"] == "provisioned-concurrency"


def test_a_provisioned_instance_killed_for_its_timeout_is_replaced(lambda_client, versioned):
    name = versioned(Timeout=2)
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    wait_ready(lambda_client, name, "1")
    _, first = invoke(lambda_client, name, {}, Qualifier="1")
    response, _ = invoke(lambda_client, name, {"sleep": 5}, Qualifier="1")
    assert response.get("FunctionError") == "Unhandled", response
    config = wait_ready(lambda_client, name, "1")
    assert config["AvailableProvisionedConcurrentExecutions"] == 1
    _, after = invoke(lambda_client, name, {}, Qualifier="1")
    assert after["init_type"] == "provisioned-concurrency"
    assert after["instance"] != first["instance"], "the timed-out instance was not replaced"


def test_changing_the_count_scales_up_and_down(lambda_client, versioned):
    name = versioned()
    put = lambda_client.put_provisioned_concurrency_config
    put(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    wait_ready(lambda_client, name, "1")
    put(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=3)
    assert wait_ready(lambda_client, name, "1")["AvailableProvisionedConcurrentExecutions"] == 3
    assert len(runtime_pids(provisioned_pids(name))) == 3
    put(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    assert eventually(lambda: len(runtime_pids(provisioned_pids(name))) == 1, timeout=15), provisioned_pids(name)
    assert wait_ready(lambda_client, name, "1")["AvailableProvisionedConcurrentExecutions"] == 1


def test_weighted_alias_spreads_instances_over_both_versions(lambda_client, versioned):
    name = versioned(versions=2)
    lambda_client.create_alias(
        FunctionName=name, Name="canary", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="canary", ProvisionedConcurrentExecutions=2)
    config = wait_ready(lambda_client, name, "canary")
    assert config["AvailableProvisionedConcurrentExecutions"] == 2
    assert len(runtime_pids(provisioned_pids(name, version=1))) == 1
    assert len(runtime_pids(provisioned_pids(name, version=2))) == 1


def test_an_init_failure_makes_the_config_failed(lambda_client, versioned):
    name = versioned(source=FAILING_INIT)
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    config = eventually(
        lambda: (lambda c: c if c["Status"] == "FAILED" else None)(
            lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        ),
        timeout=20,
    )
    assert config, lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert "no database at init" in config["StatusReason"], config
    assert config["AvailableProvisionedConcurrentExecutions"] == 0


# ---------------------------------------------------------------- clients


def test_aws_cli_manages_provisioned_concurrency(wisp, lambda_client, versioned):
    name = versioned()
    put = wisp.aws_cli(
        "lambda", "put-provisioned-concurrency-config", "--function-name", name,
        "--qualifier", "1", "--provisioned-concurrent-executions", "1",
    )
    assert json.loads(put.stdout)["RequestedProvisionedConcurrentExecutions"] == 1
    wait_ready(lambda_client, name, "1")
    got = json.loads(wisp.aws_cli("lambda", "get-provisioned-concurrency-config", "--function-name", name, "--qualifier", "1").stdout)
    assert got["Status"] == "READY"
    listed = json.loads(wisp.aws_cli("lambda", "list-provisioned-concurrency-configs", "--function-name", name).stdout)
    assert [item["FunctionArn"].rsplit(":", 1)[1] for item in listed["ProvisionedConcurrencyConfigs"]] == ["1"]
    wisp.aws_cli("lambda", "delete-provisioned-concurrency-config", "--function-name", name, "--qualifier", "1")
    missing = wisp.aws_cli("lambda", "get-provisioned-concurrency-config", "--function-name", name, "--qualifier", "1", check=False)
    assert missing.returncode != 0 and "ProvisionedConcurrencyConfigNotFoundException" in missing.stderr


def test_wisp_cli_sets_shows_and_removes_provisioned_concurrency(wisp, lambda_client, versioned):
    name = versioned()
    set_output = wisp.wisp_cli("provisioned", name, "--qualifier", "1", "--count", "1").stdout
    assert "QUALIFIER" in set_output and "\n1 " in set_output, set_output
    wait_ready(lambda_client, name, "1")
    assert "READY" in wisp.wisp_cli("provisioned", name).stdout
    shown = json.loads(wisp.wisp_cli("--output", "json", "provisioned", name, "--qualifier", "1").stdout)
    assert shown["AvailableProvisionedConcurrentExecutions"] == 1
    wisp.wisp_cli("provisioned", name, "--qualifier", "1", "--delete")
    assert "ProvisionedConcurrencyConfigNotFoundException" in wisp.wisp_cli(
        "provisioned", name, "--qualifier", "1", check=False
    ).stderr


# ---------------------------------------------------------------- restart


@pytest.mark.slow
def test_configs_are_provisioned_again_after_a_restart(server_factory):
    server = server_factory("pcrestart")
    client = server.client()
    name = create_versioned(client, prefix="pcrestart")
    client.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    wait_ready(client, name, "1")

    server.kill()
    assert eventually(lambda: not function_processes(name), timeout=15), function_processes(name)
    server.start()
    client = server.client()
    config = wait_ready(client, name, "1")
    assert config["AvailableProvisionedConcurrentExecutions"] == 1
    assert len(runtime_pids(provisioned_pids(name))) == 1
    started = time.monotonic()
    response, payload = invoke(client, name, {}, Qualifier="1", LogType="Tail")
    assert time.monotonic() - started < 0.5
    assert payload["init_type"] == "provisioned-concurrency"
    assert "Init Duration" not in report_line(response)
    server.stop()
