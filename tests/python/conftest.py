"""Fixtures that run the real `wisp` binary and give tests real clients for it.

The server under test is `$WISP_BIN` (default `target/debug/wisp`, built once with
`cargo build -p wisp-cli` when missing), started as `wisp serve --listen 127.0.0.1:0
--data <tmp>`. It prints `wisp listening on http://HOST:PORT` when ready and writes the
root account's key to `<data>/credentials` (an AWS shared-credentials file) on first start.
"""

import configparser
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

import support

REGION = "us-east-1"
LISTENING = re.compile(r"wisp listening on (http://[^\s]+)")
START_TIMEOUT_SECONDS = 60

_build_lock = threading.Lock()
_client_lock = threading.Lock()


def wisp_binary():
    """The wisp executable: $WISP_BIN, else the debug build, built once if missing."""
    configured = os.environ.get("WISP_BIN")
    if configured:
        path = Path(configured)
        if not path.exists():
            pytest.fail("WISP_BIN=%s does not exist" % configured)
        return path
    path = support.REPO_ROOT / "target" / "debug" / "wisp"
    with _build_lock:
        if not path.exists():
            build = subprocess.run(
                ["cargo", "build", "-p", "wisp-cli"],
                cwd=support.REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if build.returncode != 0 or not path.exists():
                pytest.fail("cargo build -p wisp-cli failed:\n" + build.stdout[-4000:])
    return path


class WispServer:
    """One `wisp serve` process on a data directory; can be killed and started again."""

    def __init__(self, binary, data_dir, log_path, extra_arguments=()):
        self.binary = Path(binary)
        self.extra_arguments = list(extra_arguments)
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.process = None
        self.endpoint = None
        self.access_key = None
        self.secret_key = None

    def start(self):
        assert self.process is None or self.process.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        environment = dict(os.environ)
        environment.setdefault("RUST_BACKTRACE", "1")
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--listen", "127.0.0.1:0", "--data", str(self.data_dir), *self.extra_arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
        log.close()
        self.endpoint = self._wait_for_listening(offset)
        self._read_credentials()
        return self

    def _wait_for_listening(self, offset):
        deadline = time.time() + START_TIMEOUT_SECONDS
        while time.time() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                match = LISTENING.search(log.read().decode("utf-8", "replace"))
            if match:
                return match.group(1).rstrip("/")
            if self.process.poll() is not None:
                pytest.fail("wisp serve exited with %s before listening:\n%s" % (self.process.returncode, self.log_tail()))
            time.sleep(0.02)
        self.kill()
        pytest.fail("wisp serve did not print 'wisp listening on' within %ss:\n%s" % (START_TIMEOUT_SECONDS, self.log_tail()))

    def _read_credentials(self):
        path = self.data_dir / "credentials"
        deadline = time.time() + 10
        while not path.exists() and time.time() < deadline:
            time.sleep(0.02)
        parser = configparser.ConfigParser()
        if not parser.read(path) or not parser.has_section("default"):
            pytest.fail("%s has no [default] profile:\n%s" % (path, self.log_tail()))
        self.access_key = parser.get("default", "aws_access_key_id")
        self.secret_key = parser.get("default", "aws_secret_access_key")

    @property
    def credentials_file(self):
        return self.data_dir / "credentials"

    def kill(self):
        """SIGKILL to the server process alone, as a crash would stop it.

        Its sandboxes are left to fend for themselves, as they would be after a crash;
        `stop()` at the end of the test run sweeps up whatever is left of the process group.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self):
        """SIGTERM, then SIGKILL to everything left in the server's process group."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_tail(self, lines=60):
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def client(self, access_key=None, secret_key=None, validate=True, read_timeout=120):
        """A boto3 Lambda client for this server (no retries, long read timeout).

        Clients are made one at a time: boto3's default session is not thread-safe, and tests create
        clients from many threads at once.
        """
        with _client_lock:
            return boto3.client(
                "lambda",
                endpoint_url=self.endpoint,
                region_name=REGION,
                aws_access_key_id=access_key or self.access_key,
                aws_secret_access_key=secret_key or self.secret_key,
                config=Config(
                    # max_attempts counts retries; total_max_attempts=1 means no retry at all,
                    # so that a test sees the server's first answer.
                    retries={"total_max_attempts": 1},
                    read_timeout=read_timeout,
                    connect_timeout=10,
                    parameter_validation=validate,
                ),
            )

    def aws_cli_environment(self):
        """Environment for the aws CLI: this server's credentials file and region only."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AWS_")
        }
        environment.update(
            {
                "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_PAGER": "",
            }
        )
        return environment

    def aws_cli(self, *arguments, check=True, cwd=None):
        """Run `aws --endpoint-url <server> ...`; return the completed process."""
        command = [shutil.which("aws") or "aws", "--endpoint-url", self.endpoint, *arguments]
        completed = subprocess.run(
            command,
            env=self.aws_cli_environment(),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=180,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                "%s exited %d\nstdout: %s\nstderr: %s"
                % (" ".join(command), completed.returncode, completed.stdout, completed.stderr)
            )
        return completed

    def wisp_cli(self, *arguments, check=True, environment=None, cwd=None, timeout=180):
        """Run the `wisp` client against this server; return the completed process.

        Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY unless the caller
        passes its own environment.
        """
        if environment is None:
            environment = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WISP_"))}
            environment.update(
                {
                    "AWS_ACCESS_KEY_ID": self.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.secret_key,
                    "AWS_DEFAULT_REGION": REGION,
                }
            )
        command = [str(self.binary), "--endpoint", self.endpoint, *arguments]
        completed = subprocess.run(
            command,
            env=environment,
            cwd=cwd or support.REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                "%s exited %d\nstdout: %s\nstderr: %s"
                % (" ".join(command), completed.returncode, completed.stdout, completed.stderr)
            )
        return completed


@pytest.fixture(scope="session")
def wisp_bin():
    return wisp_binary()


@pytest.fixture(scope="session")
def server_factory(wisp_bin, tmp_path_factory):
    """Starts extra servers (each on its own data directory) and stops them at the end."""
    servers = []

    def start(name="wisp", extra_arguments=()):
        directory = tmp_path_factory.mktemp(name)
        server = WispServer(wisp_bin, directory / "data", directory / "server.log", extra_arguments)
        servers.append(server)
        _current_servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


# Servers whose log tail is attached to a failing test's report.
_current_servers = []


@pytest.fixture(scope="session")
def wisp(server_factory):
    """The shared server most tests use."""
    return server_factory("shared")


@pytest.fixture(scope="session")
def lambda_client(wisp):
    return wisp.client()


@pytest.fixture(scope="session")
def raw_client(wisp):
    """A client without boto3's parameter validation, to send what boto3 would refuse."""
    return wisp.client(validate=False)


@pytest.fixture(scope="session")
def account_id(lambda_client):
    """The account the root key belongs to, as the server puts it in ARNs."""
    name = support.unique_name("whoami")
    configuration = lambda_client.create_function(
        FunctionName=name,
        Runtime=support.PYTHON_RUNTIME,
        Role=support.ROLE,
        Handler="handler.handler",
        Code={"ZipFile": support.python_zip("def handler(event, context):\n    return None\n")},
    )
    lambda_client.delete_function(FunctionName=name)
    return configuration["FunctionArn"].split(":")[4]


@pytest.fixture
def make_function(lambda_client):
    """Create a function for this test; deleted when the test ends.

    `make_function(zip_bytes, runtime=..., handler=..., prefix=..., **create_arguments)`
    returns the CreateFunction response once the function is ready.
    """
    created = []

    def create(zip_bytes, runtime=support.PYTHON_RUNTIME, handler="handler.handler", prefix="fn", client=None, **arguments):
        client = client or lambda_client
        name = arguments.pop("FunctionName", None) or support.unique_name(prefix)
        configuration = client.create_function(
            FunctionName=name,
            Runtime=runtime,
            Role=support.ROLE,
            Handler=handler,
            Code={"ZipFile": zip_bytes},
            **arguments,
        )
        created.append((client, name))
        support.wait_until_ready(client, name)
        return configuration

    yield create
    for client, name in created:
        try:
            client.delete_function(FunctionName=name)
        except Exception:
            pass


@pytest.fixture(scope="session")
def healthy_function(lambda_client):
    """A long-lived echo function, to show the server still serves others after a failure."""
    name = support.unique_name("healthy")
    lambda_client.create_function(
        FunctionName=name,
        Runtime=support.PYTHON_RUNTIME,
        Role=support.ROLE,
        Handler="handler.handler",
        Code={"ZipFile": support.function_zip("py-echo")},
    )
    support.wait_until_ready(lambda_client, name)
    yield name
    try:
        lambda_client.delete_function(FunctionName=name)
    except Exception:
        pass


@pytest.fixture(scope="session")
def python_executable():
    """The absolute path of the host's python3 (the sandbox sees it at the same path)."""
    found = subprocess.run(
        ["python3", "-c", "import sys; print(sys.executable)"], stdout=subprocess.PIPE, text=True, check=True
    )
    return found.stdout.strip()


@pytest.fixture(scope="session")
def awslambdaric_dir(tmp_path_factory, python_executable):
    """awslambdaric pip-installed once per test run into a directory to copy into functions."""
    target = tmp_path_factory.mktemp("awslambdaric")
    installed = subprocess.run(
        [python_executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target), "awslambdaric"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if installed.returncode != 0:
        pytest.fail("pip install awslambdaric failed:\n" + installed.stdout[-4000:])
    return target


@pytest.fixture(scope="session")
def rust_echo_bootstrap():
    """target/debug/bootstrap of fixtures/rust-echo, built once per test run."""
    built = subprocess.run(
        ["cargo", "build", "-p", "rust-echo"],
        cwd=support.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    path = support.REPO_ROOT / "target" / "debug" / "bootstrap"
    if built.returncode != 0 or not path.exists():
        pytest.fail("cargo build -p rust-echo failed:\n" + built.stdout[-4000:])
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for server in _current_servers:
            report.sections.append(("wisp server log (%s)" % server.data_dir, server.log_tail()))


def pytest_report_header(config):
    return "wisp binary: %s" % (os.environ.get("WISP_BIN") or support.REPO_ROOT / "target" / "debug" / "wisp")
