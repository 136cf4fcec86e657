"""The `wisp` client commands against a running server, as a user types them."""

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from support import EXAMPLES_DIR, FUNCTIONS_DIR, expect_error, function_zip, invoke, unique_name


def eventually(check, timeout=10, interval=0.2):
    """Retry `check` until it returns a true value (records and logs are written off the hot path)."""
    deadline = time.time() + timeout
    while True:
        result = check()
        if result or time.time() > deadline:
            return result
        time.sleep(interval)


@pytest.fixture
def deployed_hello(wisp, lambda_client):
    name = unique_name("hello")
    wisp.wisp_cli("deploy", str(EXAMPLES_DIR / "hello-python"), "--name", name)
    yield name
    try:
        lambda_client.delete_function(FunctionName=name)
    except Exception:
        pass


def test_wisp_deploy_then_invoke_greets(wisp, deployed_hello):
    completed = wisp.wisp_cli("invoke", deployed_hello, "--payload", '{"name":"Ada"}')
    assert "Hello, Ada!" in completed.stdout, completed.stdout


def test_wisp_deploy_applies_the_manifest(lambda_client, deployed_hello):
    configuration = lambda_client.get_function_configuration(FunctionName=deployed_hello)
    assert configuration["Runtime"] == "python3.12"
    assert configuration["Handler"] == "handler.handler"
    assert configuration["MemorySize"] == 128
    assert configuration["Timeout"] == 3
    assert configuration["Environment"]["Variables"] == {"GREETING": "Hello"}


def test_wisp_deployed_function_is_invocable_with_boto3(lambda_client, deployed_hello):
    _, payload = invoke(lambda_client, deployed_hello, {"name": "Grace"})
    assert payload["message"] == "Hello, Grace!"


def test_wisp_deploy_again_updates_the_function(wisp, lambda_client, deployed_hello):
    wisp.wisp_cli("deploy", str(EXAMPLES_DIR / "hello-python"), "--name", deployed_hello)
    _, payload = invoke(lambda_client, deployed_hello, {"name": "Ada"})
    assert payload["message"] == "Hello, Ada!"


def test_wisp_deploy_node_example(wisp, lambda_client):
    name = unique_name("hello-node")
    try:
        wisp.wisp_cli("deploy", str(EXAMPLES_DIR / "hello-node"), "--name", name)
        completed = wisp.wisp_cli("invoke", name, "--payload", '{"name":"Ada"}')
        assert "Hello, Ada!" in completed.stdout, completed.stdout
    finally:
        wisp.wisp_cli("rm", name, check=False)


def test_wisp_invoke_output_json(wisp, deployed_hello):
    completed = wisp.wisp_cli("--output", "json", "invoke", deployed_hello, "--payload", '{"name":"Ada"}')
    document = json.loads(completed.stdout)
    assert "Hello, Ada!" in json.dumps(document), document


def test_wisp_ls_lists_the_function(wisp, deployed_hello):
    completed = wisp.wisp_cli("ls")
    assert deployed_hello in completed.stdout


def test_wisp_ls_output_json(wisp, deployed_hello):
    completed = wisp.wisp_cli("--output", "json", "ls")
    assert deployed_hello in json.dumps(json.loads(completed.stdout))


def test_wisp_get_shows_the_function(wisp, deployed_hello):
    completed = wisp.wisp_cli("get", deployed_hello)
    assert deployed_hello in completed.stdout
    assert "python3.12" in completed.stdout


def test_wisp_get_output_json(wisp, deployed_hello):
    completed = wisp.wisp_cli("--output", "json", "get", deployed_hello)
    document = json.loads(completed.stdout)
    assert deployed_hello in json.dumps(document)


def test_wisp_logs_shows_what_the_function_printed(wisp, lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="cli-logs")["FunctionName"]
    marker = unique_name("marker")
    invoke(lambda_client, name, {"marker": marker})

    def logs_show_marker():
        return marker in wisp.wisp_cli("logs", name).stdout

    assert eventually(logs_show_marker), wisp.wisp_cli("logs", name).stdout


def test_wisp_invocations_lists_each_invoke(wisp, lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="cli-records")["FunctionName"]
    response, _ = invoke(lambda_client, name, {})
    request_id = response["ResponseMetadata"]["RequestId"]
    found = eventually(lambda: request_id in wisp.wisp_cli("invocations", name).stdout)
    assert found, wisp.wisp_cli("invocations", name).stdout


def test_wisp_rm_deletes_the_function(wisp, lambda_client):
    name = unique_name("cli-rm")
    wisp.wisp_cli("deploy", str(EXAMPLES_DIR / "hello-python"), "--name", name)
    wisp.wisp_cli("rm", name)
    expect_error("ResourceNotFoundException", 404, lambda_client.get_function, FunctionName=name)


def test_wisp_invoke_unknown_function_fails_with_one_line_error(wisp):
    name = unique_name("cli-missing")
    completed = wisp.wisp_cli("invoke", name, "--payload", "{}", check=False)
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    assert name in lines[0], completed.stderr


def test_wisp_reads_credentials_from_the_data_directory(wisp, deployed_hello):
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WISP_"))}
    environment["WISP_DATA"] = str(wisp.data_dir)
    completed = wisp.wisp_cli("ls", environment=environment)
    assert deployed_hello in completed.stdout


def test_wisp_with_wrong_credentials_fails(wisp):
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WISP_"))}
    environment.update({"AWS_ACCESS_KEY_ID": wisp.access_key, "AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    completed = wisp.wisp_cli("ls", environment=environment, check=False)
    assert completed.returncode != 0
    assert completed.stderr.strip(), "no error message"


def test_wisp_invoke_log_prints_the_log_tail(wisp, deployed_hello):
    completed = wisp.wisp_cli("invoke", deployed_hello, "--payload", '{"name":"Ada"}', "--log")
    assert "Hello, Ada!" in completed.stdout
    assert "REPORT RequestId:" in completed.stderr, completed.stderr


def test_wisp_invoke_with_qualifier(wisp, deployed_hello):
    wisp.wisp_cli("publish", deployed_hello)
    completed = wisp.wisp_cli("invoke", deployed_hello, "--qualifier", "1", "--payload", '{"name":"Ada"}')
    assert "Hello, Ada!" in completed.stdout


def test_wisp_publish_creates_a_version(wisp, lambda_client, deployed_hello):
    completed = wisp.wisp_cli("--output", "json", "publish", deployed_hello, "--description", "first")
    assert json.loads(completed.stdout)["Version"] == "1"
    versions = lambda_client.list_versions_by_function(FunctionName=deployed_hello)["Versions"]
    assert [version["Version"] for version in versions] == ["$LATEST", "1"]


def test_wisp_alias_set_ls_rm(wisp, lambda_client, deployed_hello):
    wisp.wisp_cli("publish", deployed_hello)
    wisp.wisp_cli("alias", "set", deployed_hello, "live", "1")
    assert lambda_client.get_alias(FunctionName=deployed_hello, Name="live")["FunctionVersion"] == "1"
    assert "live" in wisp.wisp_cli("alias", "ls", deployed_hello).stdout
    wisp.wisp_cli("alias", "rm", deployed_hello, "live")
    expect_error("ResourceNotFoundException", 404, lambda_client.get_alias, FunctionName=deployed_hello, Name="live")


def test_wisp_alias_set_with_weight_routes_to_both_versions(wisp, lambda_client, deployed_hello):
    wisp.wisp_cli("publish", deployed_hello)
    wisp.wisp_cli("deploy", str(EXAMPLES_DIR / "hello-python"), "--name", deployed_hello, "--env", "GREETING=Hi")
    wisp.wisp_cli("publish", deployed_hello)
    wisp.wisp_cli("alias", "set", deployed_hello, "canary", "1", "--weight", "2=0.5")
    routing = lambda_client.get_alias(FunctionName=deployed_hello, Name="canary")["RoutingConfig"]
    assert routing["AdditionalVersionWeights"] == {"2": 0.5}
    greetings = {invoke(lambda_client, deployed_hello, {"name": "Ada"}, Qualifier="canary")[1]["message"] for _ in range(40)}
    assert greetings == {"Hello, Ada!", "Hi, Ada!"}


def test_wisp_deploy_flags_override_the_manifest(wisp, lambda_client, deployed_hello):
    wisp.wisp_cli(
        "deploy", str(EXAMPLES_DIR / "hello-python"), "--name", deployed_hello, "--memory", "256", "--timeout", "7"
    )
    configuration = lambda_client.get_function_configuration(FunctionName=deployed_hello)
    assert (configuration["MemorySize"], configuration["Timeout"]) == (256, 7)


def test_wisp_deploy_directory_without_manifest_needs_flags(wisp, lambda_client):
    name = unique_name("cli-flags")
    try:
        wisp.wisp_cli(
            "deploy",
            str(FUNCTIONS_DIR / "py-echo"),
            "--name",
            name,
            "--runtime",
            "python3.12",
            "--handler",
            "handler.handler",
        )
        _, payload = invoke(lambda_client, name, {"via": "flags"})
        assert payload["event"] == {"via": "flags"}
    finally:
        wisp.wisp_cli("rm", name, check=False)


def test_wisp_deploy_manifest_with_unknown_key_fails_naming_it(wisp, tmp_path):
    (tmp_path / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    (tmp_path / "wisp.toml").write_text('runtime = "python3.12"\nhandler = "handler.handler"\nmemroy = 256\n')
    completed = wisp.wisp_cli("deploy", str(tmp_path), "--name", unique_name("cli-badmanifest"), check=False)
    assert completed.returncode != 0
    assert "wisp.toml" in completed.stderr and "memroy" in completed.stderr, completed.stderr


@pytest.mark.slow
def test_wisp_deploy_rust_binary_as_the_hello_rust_readme_says(wisp, lambda_client, rust_echo_bootstrap, tmp_path):
    shutil.copy(rust_echo_bootstrap, tmp_path / "bootstrap")
    name = unique_name("hello-rust")
    try:
        wisp.wisp_cli(
            "deploy", str(tmp_path), "--name", name, "--runtime", "provided.al2023", "--handler", "bootstrap"
        )
        completed = wisp.wisp_cli("invoke", name, "--payload", '{"name":"Ada"}')
        assert json.loads(completed.stdout)["echo"] == {"name": "Ada"}
    finally:
        wisp.wisp_cli("rm", name, check=False)


def test_wisp_doctor_reports_isolation_mechanisms(wisp):
    completed = wisp.wisp_cli("doctor")
    assert completed.stdout.strip()
    assert "cgroup" in completed.stdout.lower(), completed.stdout


def test_wisp_logs_follow_prints_new_output(wisp, lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="cli-follow")["FunctionName"]
    marker = unique_name("followed")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "WISP_"))}
    environment.update({"AWS_ACCESS_KEY_ID": wisp.access_key, "AWS_SECRET_ACCESS_KEY": wisp.secret_key})
    follower = subprocess.Popen(
        [str(wisp.binary), "--endpoint", wisp.endpoint, "logs", name, "--follow"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        time.sleep(0.5)
        invoke(lambda_client, name, {"marker": marker})
        reader = threading.Thread(target=lambda: seen.extend(iter(follower.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.time() + 15
        while time.time() < deadline and not any(marker in line for line in seen):
            time.sleep(0.1)
    finally:
        follower.kill()
        follower.wait()
    assert any(marker in line for line in seen), "".join(seen)
