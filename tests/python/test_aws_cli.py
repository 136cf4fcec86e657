"""The aws CLI, unmodified, against the server with --endpoint-url."""

import json

from support import PYTHON_RUNTIME, ROLE, function_zip, unique_name, wait_until_ready


def test_aws_cli_invoke_writes_the_result(wisp, make_function, tmp_path):
    name = make_function(function_zip("py-echo"), prefix="awscli")["FunctionName"]
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps({"name": "Ada"}))
    out_file = tmp_path / "out.json"
    completed = wisp.aws_cli(
        "lambda", "invoke", "--function-name", name, "--payload", "fileb://%s" % payload_file, str(out_file)
    )
    summary = json.loads(completed.stdout)
    assert summary["StatusCode"] == 200
    assert summary["ExecutedVersion"] == "$LATEST"
    assert json.loads(out_file.read_text())["event"] == {"name": "Ada"}


def test_aws_cli_list_functions_shows_the_function(wisp, make_function):
    name = make_function(function_zip("py-echo"), prefix="awscli-ls")["FunctionName"]
    completed = wisp.aws_cli("lambda", "list-functions", "--output", "json")
    names = [function["FunctionName"] for function in json.loads(completed.stdout)["Functions"]]
    assert name in names


def test_aws_cli_create_function_from_zip_file(wisp, lambda_client, tmp_path):
    name = unique_name("awscli-create")
    zip_path = tmp_path / "code.zip"
    zip_path.write_bytes(function_zip("py-echo"))
    try:
        completed = wisp.aws_cli(
            "lambda",
            "create-function",
            "--function-name",
            name,
            "--runtime",
            PYTHON_RUNTIME,
            "--handler",
            "handler.handler",
            "--role",
            ROLE,
            "--zip-file",
            "fileb://%s" % zip_path,
        )
        assert json.loads(completed.stdout)["FunctionName"] == name
        wait_until_ready(lambda_client, name)
        out_file = tmp_path / "out.json"
        wisp.aws_cli("lambda", "invoke", "--function-name", name, str(out_file))
        assert json.loads(out_file.read_text())["context"]["function_name"] == name
    finally:
        wisp.aws_cli("lambda", "delete-function", "--function-name", name, check=False)


def test_aws_cli_reports_unknown_function(wisp, tmp_path):
    completed = wisp.aws_cli(
        "lambda", "invoke", "--function-name", "wisp-no-such-function", str(tmp_path / "out.json"), check=False
    )
    assert completed.returncode != 0
    assert "ResourceNotFoundException" in completed.stderr, completed.stderr
