"""Shutdown hooks: what a runtime is told when its instance is stopped, how its hook is metered and
logged, and that a runtime which ignores SIGTERM is killed after the grace period (docs/SHUTDOWN.md).

The batching tests need PostgreSQL on 127.0.0.1:5432 (trust auth), `slirp4netns` for
`--function-network egress`, and pip access to PyPI for pg8000: without them they fail, they do not skip.
"""

import json
import signal
import subprocess
import sys
import time
import uuid

import pg8000.native
import pytest

from support import (
    NODE_RUNTIME,
    PROVIDED_RUNTIME,
    PYTHON_RUNTIME,
    REPO_ROOT,
    ROLE,
    function_processes,
    invoke,
    python_zip,
    signed_request,
    unique_name,
    wait_for_no_processes,
    wait_until_ready,
    zip_directory,
    zip_files,
)

GRACE_SECONDS = 2

PYTHON_HOOK = """
import time

import wisp


@wisp.on_shutdown
def goodbye(reason):
    left = wisp.remaining_shutdown_time_in_millis()
    time.sleep(0.2)
    print("python hook ran: reason=%s left_ms=%d" % (reason, left), flush=True)


def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"ok": True}
"""

NODE_HOOK = """
wisp.onShutdown(async (reason) => {
  await new Promise((resolve) => setTimeout(resolve, 300));
  console.log(`node hook ran after its await: reason=${reason}`);
});

exports.handler = async () => ({ ok: true });
"""

OVERRUNNING_HOOK = """
import time

import wisp


def never_finishes(reason):
    print("overrunning hook started", flush=True)
    time.sleep(60)
    print("overrunning hook finished", flush=True)


wisp.on_shutdown(never_finishes)


def handler(event, context):
    return {"ok": True}
"""

# A custom runtime whose bootstrap (pid 1 of the sandbox) catches SIGTERM and carries on; a child
# process serves invocations through the Runtime API.
IGNORING_BOOTSTRAP = """#!/bin/bash
trap 'echo "bootstrap: got SIGTERM, ignoring it"' TERM
python3 /var/task/serve.py &
while true; do
  wait
done
"""

SERVE = """
import os
import urllib.request

base = "http://%s/2018-06-01/runtime/invocation/" % os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(base + "next") as response:
        request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
    urllib.request.urlopen(urllib.request.Request(base + request_id + "/response", data=b'"served"', method="POST")).read()
"""


def create(client, name, code, runtime=PYTHON_RUNTIME, handler="handler.handler", **extra):
    client.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": code}, **extra)
    wait_until_ready(client, name)


def records_of(server, name):
    status, _, body = signed_request(server, "GET", "/wisp/v1/functions/%s/invocations?limit=100" % name)
    assert status == 200, body
    return json.loads(body)["Invocations"]


def shutdown_record(server, name, timeout=20):
    """The record of the function's shutdown hook run, once it is written."""
    deadline = time.time() + timeout
    while True:
        found = [record for record in records_of(server, name) if record.get("phase") == "shutdown"]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.time() < deadline, "no shutdown record for %s: %r\n%s" % (name, records_of(server, name), server.log_tail())
        time.sleep(0.2)


def wisp_logs(server, name):
    return server.wisp_cli("logs", name, "--limit", "1000").stdout


def hook_lines(logs, request_id):
    """The lines between the hook's START and its REPORT, both included."""
    lines = logs.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("START RequestId: %s " % request_id))
    end = next(index for index, line in enumerate(lines) if line.startswith("REPORT RequestId: %s\t" % request_id))
    return lines[start : end + 1]


def stop_events(server, name):
    status, _, body = signed_request(server, "GET", "/wisp/v1/events?limit=1000&type=InstanceStopped")
    assert status == 200, body
    return [event for event in json.loads(body)["Events"] if event["Resource"].split(":")[6] == name]


def stop_reasons(server, name, timeout=10):
    """The `Reason` of the function's InstanceStopped events, once there is one (they are written in
    the background, possibly after the instance is gone)."""
    deadline = time.time() + timeout
    while not stop_events(server, name) and time.time() < deadline:
        time.sleep(0.05)
    return [event["Reason"] for event in stop_events(server, name)]


@pytest.fixture(scope="module")
def idle_server(server_factory):
    """Instances are stopped one second after their last invocation."""
    return server_factory("shutdown-idle", ["--idle-timeout", "1", "--shutdown-grace", str(GRACE_SECONDS)])


def test_python_hook_runs_on_idle_scale_in_with_reason_spindown_and_is_metered(idle_server):
    client = idle_server.client()
    name = unique_name("py-hook")
    create(client, name, python_zip(PYTHON_HOOK), MemorySize=256)
    response, payload = invoke(client, name, {})
    assert payload == {"ok": True}
    assert wait_for_no_processes(name, timeout=20) == []

    record = shutdown_record(idle_server, name)
    assert record["invocation_type"] == "Shutdown"
    assert record["shutdown_reason"] == "spindown"
    assert record["status"] == "succeeded"
    # The hook sleeps 200 ms: it is billed for at least that, and not for the whole grace period.
    assert 200_000 <= record["duration_us"] < GRACE_SECONDS * 1_000_000, record
    assert record["billed_duration_ms"] >= 200
    assert record["memory_size_mb"] == 256
    assert record["request_id"] != response["ResponseMetadata"]["RequestId"]

    logs = wisp_logs(idle_server, name)
    lines = hook_lines(logs, record["request_id"])
    assert lines[0] == "START RequestId: %s Version: $LATEST Phase: shutdown Reason: spindown" % record["request_id"], lines
    ran = [line for line in lines if line.startswith("python hook ran: reason=spindown")]
    assert ran, lines
    # The runtime is told its deadline: close to the grace period when the hook starts.
    left_ms = int(ran[0].rsplit("=", 1)[1])
    assert 0 < left_ms <= GRACE_SECONDS * 1000, ran
    assert lines[-2] == "END RequestId: %s" % record["request_id"], lines
    assert "\tPhase: shutdown\tReason: spindown" in lines[-1] and "Billed Duration: %d ms" % record["billed_duration_ms"] in lines[-1], lines
    assert "Status:" not in lines[-1]

    # The lifecycle event keeps the detailed reason.
    assert stop_reasons(idle_server, name) == ["idle"]


def test_redeploy_runs_the_old_instances_hook_with_reason_spindown(server_factory):
    server = server_factory("shutdown-redeploy", ["--shutdown-grace", str(GRACE_SECONDS)])
    client = server.client()
    name = unique_name("py-redeploy")
    create(client, name, python_zip(PYTHON_HOOK))
    assert invoke(client, name, {})[1] == {"ok": True}
    client.update_function_code(FunctionName=name, ZipFile=python_zip(PYTHON_HOOK.replace('"ok": True', '"ok": 2')))
    wait_until_ready(client, name)
    record = shutdown_record(server, name)
    assert record["shutdown_reason"] == "spindown" and record["status"] == "succeeded", record
    assert stop_reasons(server, name) == ["function changed"]
    assert invoke(client, name, {})[1] == {"ok": 2}


def test_node_async_hook_is_awaited_before_the_runtime_exits(idle_server):
    client = idle_server.client()
    name = unique_name("node-hook")
    create(client, name, zip_files({"index.js": NODE_HOOK}), runtime=NODE_RUNTIME, handler="index.handler")
    assert invoke(client, name, {})[1] == {"ok": True}
    record = shutdown_record(idle_server, name)
    assert record["shutdown_reason"] == "spindown" and record["status"] == "succeeded", record
    assert record["duration_us"] >= 300_000, record
    lines = hook_lines(wisp_logs(idle_server, name), record["request_id"])
    # console.log inside the hook carries the hook's request id, as in an invocation.
    assert any(
        "\t%s\tINFO\tnode hook ran after its await: reason=spindown" % record["request_id"] in line for line in lines
    ), lines


def test_function_without_a_hook_stops_at_once_and_writes_no_hook_record(idle_server):
    client = idle_server.client()
    name = unique_name("no-hook")
    create(client, name, python_zip("def handler(event, context):\n    return 1\n"))
    assert invoke(client, name, {})[1] == 1
    assert function_processes(name)
    assert wait_for_no_processes(name, timeout=20) == []
    assert stop_reasons(idle_server, name) == ["idle"]
    time.sleep(0.5)
    assert [record.get("phase") for record in records_of(idle_server, name)] == [None]
    assert "Phase: shutdown" not in wisp_logs(idle_server, name)


def test_hook_after_a_timeout_gets_reason_timeout(idle_server):
    client = idle_server.client()
    name = unique_name("py-timeout")
    create(client, name, python_zip(PYTHON_HOOK), Timeout=1)
    _, payload = invoke(client, name, {"sleep": 30})
    assert payload["errorType"] == "Sandbox.Timedout", payload
    record = shutdown_record(idle_server, name)
    assert record["shutdown_reason"] == "timeout" and record["status"] == "succeeded", record
    lines = hook_lines(wisp_logs(idle_server, name), record["request_id"])
    assert any(line.startswith("python hook ran: reason=timeout") for line in lines), lines
    # The timed-out instance is gone long before a 30 s handler would have finished.
    assert wait_for_no_processes(name, timeout=GRACE_SECONDS + 3) == []
    assert stop_reasons(idle_server, name) == ["failed"]


def test_overrunning_hook_is_cut_off_at_the_grace_period_and_reported(idle_server):
    client = idle_server.client()
    name = unique_name("py-overrun")
    create(client, name, python_zip(OVERRUNNING_HOOK))
    assert invoke(client, name, {})[1] == {"ok": True}
    record = shutdown_record(idle_server, name, timeout=30)
    assert record["status"] == "timed_out" and record["error_type"] == "Sandbox.Timedout", record
    # Cut off at the grace period: billed close to it, not the 60 s the hook wanted.
    assert (GRACE_SECONDS - 0.5) * 1_000_000 <= record["duration_us"] <= (GRACE_SECONDS + 0.5) * 1_000_000, record
    lines = hook_lines(wisp_logs(idle_server, name), record["request_id"])
    assert "overrunning hook started" in lines, lines
    assert "overrunning hook finished" not in lines, lines
    assert any("Shutdown hook cut off: the runtime was killed after the 2.00 seconds grace period" in line for line in lines), lines
    assert lines[-1].endswith("\tStatus: timeout\t"), lines


def test_runtime_ignoring_sigterm_is_killed_after_the_grace_period(server_factory):
    grace = 3
    server = server_factory("shutdown-ignore", ["--idle-timeout", "1", "--shutdown-grace", str(grace)])
    client = server.client()
    name = unique_name("ignores-term")
    code = zip_files({"bootstrap": (IGNORING_BOOTSTRAP, 0o755), "serve.py": SERVE})
    create(client, name, code, runtime=PROVIDED_RUNTIME, handler="unused")
    assert invoke(client, name, {})[1] == "served"
    assert function_processes(name)

    deadline = time.time() + 20
    while not stop_events(server, name):
        assert time.time() < deadline, "the idle instance was not stopped:\n" + server.log_tail()
        time.sleep(0.05)
    signalled = time.time()
    assert wait_for_no_processes(name, timeout=grace + 5) == []
    gone_after = time.time() - signalled
    # It lived on through the grace period (SIGTERM was caught and ignored), then SIGKILL ended it.
    assert grace - 0.6 <= gone_after <= grace + 1.5, gone_after
    # Written a moment after the stop ends.
    deadline = time.time() + 10
    while "bootstrap: got SIGTERM, ignoring it" not in wisp_logs(server, name):
        assert time.time() < deadline, wisp_logs(server, name)
        time.sleep(0.1)
    # It never asked for the shutdown notice: no hook run was metered.
    assert [record.get("phase") for record in records_of(server, name)] == [None]


# A streamed response over the buffered limit leaves the instance unusable while its runtime lives on:
# it is replaced, and its hook is told `failure`. The hook then fails too.
NODE_FAILING = """
wisp.onShutdown(async (reason) => {
  console.log(`node hook told: reason=${reason}`);
  throw new TypeError('cleanup went wrong');
});

exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const chunk = 'x'.repeat(1024 * 1024);
  for (let i = 0; i < 7; i++) {
    responseStream.write(chunk);
  }
  responseStream.end();
});
"""


def test_hook_of_an_instance_replaced_after_a_failure_gets_reason_failure_and_its_error_is_recorded(idle_server):
    client = idle_server.client()
    name = unique_name("node-failure")
    create(client, name, zip_files({"index.js": NODE_FAILING}), runtime=NODE_RUNTIME, handler="index.handler")
    _, payload = invoke(client, name, {})
    assert payload["errorType"] == "Function.ResponseSizeTooLarge", payload
    record = shutdown_record(idle_server, name)
    assert record["shutdown_reason"] == "failure", record
    assert record["status"] == "failed" and record["error_type"] == "TypeError", record
    lines = hook_lines(wisp_logs(idle_server, name), record["request_id"])
    assert any(line.endswith("node hook told: reason=failure") for line in lines), lines
    assert any("Shutdown hook failed" in line and "cleanup went wrong" in line for line in lines), lines
    assert lines[-1].endswith("\tStatus: error\t"), lines


# A custom runtime that uses the Runtime API's shutdown routes itself, as docs/SHUTDOWN.md describes.
CUSTOM_RUNTIME = """
import json
import os
import signal
import urllib.error
import urllib.request

api = "http://%s/2018-06-01/runtime/" % os.environ["AWS_LAMBDA_RUNTIME_API"]


def post(path, body=b""):
    try:
        with urllib.request.urlopen(urllib.request.Request(api + path, data=body, method="POST")) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def on_sigterm(signum, frame):
    status, body = post("wisp/shutdown/done")
    print("done before the notice: %d %s" % (status, json.loads(body)["errorType"]), flush=True)
    status, body = post("wisp/shutdown")
    notice = json.loads(body)
    print("custom notice: %d %s %s %d" % (status, notice["reason"], notice["requestId"], notice["deadlineMs"]), flush=True)
    post("wisp/shutdown/done", json.dumps({"errorType": "CustomCleanupError"}).encode())
    os._exit(0)


signal.signal(signal.SIGTERM, on_sigterm)
status, body = post("wisp/shutdown")
print("notice outside a stop: %d %s" % (status, json.loads(body)["errorType"]), flush=True)
while True:
    with urllib.request.urlopen(api + "invocation/next") as response:
        request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
    post("invocation/%s/response" % request_id, b'"custom"')
"""


def test_custom_runtime_uses_the_shutdown_routes_and_reports_a_failed_hook(idle_server):
    client = idle_server.client()
    name = unique_name("custom-hook")
    code = zip_files({"bootstrap": ("#!/bin/sh\nexec python3 /var/task/runtime.py\n", 0o755), "runtime.py": CUSTOM_RUNTIME})
    create(client, name, code, runtime=PROVIDED_RUNTIME, handler="unused")
    before_ms = time.time() * 1000
    assert invoke(client, name, {})[1] == "custom"
    record = shutdown_record(idle_server, name)
    assert record["status"] == "failed" and record["error_type"] == "CustomCleanupError", record
    assert record["shutdown_reason"] == "spindown"
    logs = wisp_logs(idle_server, name)
    assert "notice outside a stop: 409 InstanceNotStopping" in logs, logs
    lines = hook_lines(logs, record["request_id"])
    assert "done before the notice: 409 ShutdownHookNotStarted" in lines, lines
    notice = next(line for line in lines if line.startswith("custom notice: "))
    status, reason, request_id, deadline_ms = notice.split()[2:]
    assert (status, reason, request_id) == ("200", "spindown", record["request_id"]), notice
    assert before_ms < int(deadline_ms) < time.time() * 1000 + GRACE_SECONDS * 1000, notice
    assert lines[-1].endswith("\tStatus: error\t"), lines


# --- batching across invocations, flushed on shutdown (examples/batching-python) ---------------


def database():
    return pg8000.native.Connection("postgres", host="127.0.0.1", port=5432, database="postgres")


@pytest.fixture(scope="module")
def rows_table():
    name = "wisp_batch_%s" % uuid.uuid4().hex[:10]
    connection = database()
    connection.run("CREATE TABLE %s (batch text NOT NULL, seq integer NOT NULL, PRIMARY KEY (batch, seq))" % name)
    yield name
    connection.run("DROP TABLE %s" % name)
    connection.close()


@pytest.fixture(scope="module")
def batching_zip(tmp_path_factory):
    """The example function with pg8000 installed next to it."""
    directory = tmp_path_factory.mktemp("batching")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(directory), "pg8000"],
        check=True,
        timeout=300,
    )
    (directory / "handler.py").write_text((REPO_ROOT / "examples" / "batching-python" / "handler.py").read_text())
    return zip_directory(directory)


def stored_seqs(table, batch):
    connection = database()
    try:
        return sorted(row[0] for row in connection.run("SELECT seq FROM %s WHERE batch = :batch" % table, batch=batch))
    finally:
        connection.close()


def deploy_batching(server, table, batch_size):
    client = server.client()
    name = unique_name("batching")
    create(
        client,
        name,
        server.batching_zip,
        Timeout=10,
        Environment={"Variables": {"BATCH_TABLE": table, "BATCH_SIZE": str(batch_size)}},
    )
    return client, name


def send_rows(client, name, batch, count):
    for seq in range(count):
        _, payload = invoke(client, name, {"batch": batch, "seq": seq})
        assert payload["buffered"] >= 0, payload


@pytest.mark.parametrize("how", ["idle scale-in", "server SIGTERM", "server SIGINT"])
def test_batched_rows_are_all_written_on_scale_in_and_on_server_stop(server_factory, rows_table, batching_zip, how):
    idle = "2" if how == "idle scale-in" else "300"
    server = server_factory("batching", ["--function-network", "egress", "--idle-timeout", idle])
    server.batching_zip = batching_zip
    client, name = deploy_batching(server, rows_table, batch_size=10)
    batch = uuid.uuid4().hex
    # One instance gets 25 rows one after another: two full batches are written as they fill,
    # five rows wait in memory for the next batch or for the shutdown hook.
    send_rows(client, name, batch, 25)
    assert stored_seqs(rows_table, batch) == list(range(20))

    if how == "idle scale-in":
        deadline = time.time() + 20
        while stored_seqs(rows_table, batch) != list(range(25)):
            assert time.time() < deadline, "buffered rows not flushed on scale-in: %r\n%s" % (stored_seqs(rows_table, batch), server.log_tail())
            time.sleep(0.2)
        record = shutdown_record(server, name)
        assert record["shutdown_reason"] == "spindown", record
    else:
        server.process.send_signal(signal.SIGTERM if how == "server SIGTERM" else signal.SIGINT)
        assert server.process.wait(timeout=30) == 0, server.log_tail()
        assert stored_seqs(rows_table, batch) == list(range(25))
        # The hook's record and log lines were written before the server exited.
        server.start()
        record = shutdown_record(server, name)
        assert record["shutdown_reason"] == "spindown", record
        assert "flushed 5 rows on shutdown (spindown)" in "\n".join(hook_lines(wisp_logs(server, name), record["request_id"]))
