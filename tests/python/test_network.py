"""Function networking: `wisp serve --function-network egress` lets functions reach the host's
loopback at WISP_HOST_ADDRESS (through slirp4netns); the default (isolated) reaches nothing.

slirp4netns is part of the test machine (CI installs it): without it these tests fail, they do not skip.
"""

import os
import shutil
import signal
import socket
import threading
import time

import pytest

import support

HOST_ADDRESS = "10.0.2.2"

FUNCTION = """
import os
import socket
import time


def handler(event, context):
    host = os.environ.get("WISP_HOST_ADDRESS")
    started = time.monotonic()
    try:
        with socket.create_connection((host or "%s", event["port"]), timeout=10) as connection:
            connection.sendall(b"hello from the function\\n")
            return {"host": host, "read": connection.makefile().readline()}
    except OSError as error:
        return {"host": host, "error": "%%s: %%s" %% (type(error).__name__, error), "seconds": time.monotonic() - started}
""" % HOST_ADDRESS


class HostService:
    """A TCP server on the host's 127.0.0.1 that greets each connection and keeps what it was sent."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.received = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(10)
                connection.sendall(b"hello from the host\n")
                try:
                    self.received.append(connection.makefile("rb").readline())
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def host_service():
    service = HostService()
    yield service
    service.close()


@pytest.fixture(scope="module")
def egress_server(server_factory):
    if shutil.which("slirp4netns") is None and not os.path.exists("/usr/bin/slirp4netns"):
        pytest.fail("slirp4netns is not installed (apt-get install -y slirp4netns); egress needs it")
    return server_factory("egress", extra_arguments=["--function-network", "egress"])


def create(client, prefix):
    name = support.unique_name(prefix)
    client.create_function(
        FunctionName=name,
        Runtime=support.PYTHON_RUNTIME,
        Role=support.ROLE,
        Handler="handler.handler",
        Code={"ZipFile": support.python_zip(FUNCTION)},
        Timeout=30,
    )
    support.wait_until_ready(client, name)
    return name


def test_egress_function_reaches_a_service_on_the_hosts_loopback(egress_server, host_service):
    client = egress_server.client()
    name = create(client, "egress")
    response, result = support.invoke(client, name, {"port": host_service.port})
    assert "FunctionError" not in response, result
    assert result == {"host": HOST_ADDRESS, "read": "hello from the host\n"}, result
    # The host's side reads the function's line on its own thread: give it a moment.
    deadline = time.monotonic() + 5
    while not host_service.received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host_service.received == [b"hello from the function\n"]
    client.delete_function(FunctionName=name)


def test_isolated_function_cannot_reach_the_host(lambda_client, make_function, host_service):
    name = make_function(support.python_zip(FUNCTION), prefix="isolated")["FunctionName"]
    started = time.monotonic()
    response, result = support.invoke(lambda_client, name, {"port": host_service.port})
    assert "FunctionError" not in response, result
    assert result["host"] is None, result
    assert "unreachable" in result["error"].lower(), result
    assert result["seconds"] < 2 and time.monotonic() - started < 10, result
    assert host_service.received == []


def slirp4netns_children(pid):
    """Pids of live slirp4netns processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open("/proc/%s/comm" % entry) as comm:
                command = comm.read().strip()
        except OSError:
            continue
        if command == "slirp4netns" and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_slirp4netns_goes_with_a_killed_server(server_factory, host_service):
    if shutil.which("slirp4netns") is None and not os.path.exists("/usr/bin/slirp4netns"):
        pytest.fail("slirp4netns is not installed (apt-get install -y slirp4netns); egress needs it")
    server = server_factory("egress-killed", extra_arguments=["--function-network", "egress"])
    client = server.client()
    name = create(client, "egress-killed")
    response, result = support.invoke(client, name, {"port": host_service.port})
    assert result.get("read") == "hello from the host\n", result
    helpers = slirp4netns_children(server.process.pid)
    assert helpers, "the warm instance has no slirp4netns"
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    deadline = time.time() + 10
    while any(alive(pid) for pid in helpers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in helpers), "slirp4netns outlived the server: %s" % helpers
    assert support.wait_for_no_processes(name) == []
