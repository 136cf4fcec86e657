"""Durability: what the control plane acknowledged survives `kill -9` of the server."""

import pytest

from support import (
    PYTHON_RUNTIME,
    ROLE,
    code_sha256,
    function_processes,
    invoke,
    python_zip,
    unique_name,
    wait_for_no_processes,
    wait_until_ready,
)


def version_source(tag):
    return "def handler(event, context):\n    return {'version': %r}\n" % tag


@pytest.fixture(scope="module")
def restarted(server_factory):
    """A private server holding a function with two versions and an alias, killed and restarted.

    Yields (server, name, code of $LATEST, the key pair from before the restart, and the
    function's processes still alive 10 s after the kill).
    """
    server = server_factory("restart")
    client = server.client()
    name = unique_name("durable")
    first_code = python_zip(version_source("one"))
    latest_code = python_zip(version_source("two"))
    client.create_function(
        FunctionName=name,
        Runtime=PYTHON_RUNTIME,
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": first_code},
        Environment={"Variables": {"GREETING": "kept"}},
        MemorySize=256,
    )
    wait_until_ready(client, name)
    assert client.publish_version(FunctionName=name)["Version"] == "1"
    client.update_function_code(FunctionName=name, ZipFile=latest_code)
    wait_until_ready(client, name)
    client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    assert invoke(client, name, {})[1] == {"version": "two"}

    keys_before = (server.access_key, server.secret_key)
    assert function_processes(name), "no warm instance to orphan"
    server.kill()
    orphans = wait_for_no_processes(name)
    server.start()
    yield server, name, latest_code, keys_before, orphans
    server.stop()


@pytest.mark.slow
def test_restart_keeps_the_function_listed(restarted):
    server, name, _, _, _ = restarted
    names = [function["FunctionName"] for function in server.client().list_functions()["Functions"]]
    assert name in names


@pytest.mark.slow
def test_restart_keeps_the_configuration_and_code(restarted):
    server, name, latest_code, _, _ = restarted
    configuration = server.client().get_function_configuration(FunctionName=name)
    assert configuration["MemorySize"] == 256
    assert configuration["Environment"]["Variables"] == {"GREETING": "kept"}
    assert configuration["CodeSha256"] == code_sha256(latest_code)


@pytest.mark.slow
def test_restart_keeps_published_versions(restarted):
    server, name, _, _, _ = restarted
    versions = [version["Version"] for version in server.client().list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1"]


@pytest.mark.slow
def test_restart_keeps_aliases(restarted):
    server, name, _, _, _ = restarted
    assert server.client().get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"


@pytest.mark.slow
def test_restart_keeps_reserved_concurrency(restarted):
    server, name, _, _, _ = restarted
    assert server.client().get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"] == 3


@pytest.mark.slow
def test_restart_keeps_every_qualifier_invocable(restarted):
    server, name, _, _, _ = restarted
    client = server.client()
    assert invoke(client, name, {})[1] == {"version": "two"}
    response, payload = invoke(client, name, {}, Qualifier="1")
    assert (payload, response["ExecutedVersion"]) == ({"version": "one"}, "1")
    response, payload = invoke(client, name, {}, Qualifier="live")
    assert (payload, response["ExecutedVersion"]) == ({"version": "one"}, "1")


@pytest.mark.slow
def test_restart_keeps_the_credentials(restarted):
    server, _, _, keys_before, _ = restarted
    # The key read after the restart is the one written on first start, and it still works.
    assert (server.access_key, server.secret_key) == keys_before
    server.client().list_functions(MaxItems=1)


@pytest.mark.slow
def test_kill_9_of_the_server_leaves_no_function_process_behind(restarted):
    _, _, _, _, orphans = restarted
    assert orphans == [], "function processes outlived their server: %r" % orphans


@pytest.mark.slow
def test_server_stop_ends_its_instances(server_factory):
    server = server_factory("stop")
    client = server.client()
    name = unique_name("stopped")
    client.create_function(
        FunctionName=name,
        Runtime=PYTHON_RUNTIME,
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": python_zip(version_source("one"))},
    )
    wait_until_ready(client, name)
    invoke(client, name, {})
    assert function_processes(name)
    server.process.terminate()
    server.process.wait(timeout=30)
    assert wait_for_no_processes(name) == []
