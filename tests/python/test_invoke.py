"""Synchronous Invoke through boto3: payloads, logs, dry runs, qualifiers and name forms."""

import base64
import json
import math
import re
import threading

import pytest

from support import decode_log, function_zip, invoke, python_zip, unique_name, wait_until_ready, zip_files


def version_source(tag):
    return "def handler(event, context):\n    return {'version': %r}\n" % tag


@pytest.fixture
def echo_function(make_function):
    return make_function(function_zip("py-echo"), prefix="echo", Environment={"Variables": {"GREETING": "Hola"}})


@pytest.fixture
def versioned_function(lambda_client, make_function):
    """$LATEST answers "two", version 1 answers "one"."""
    configuration = make_function(python_zip(version_source("one")), prefix="qualified")
    name = configuration["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(version_source("two")))
    wait_until_ready(lambda_client, name)
    return configuration


def test_invoke_request_response_returns_the_handler_result(lambda_client, echo_function):
    name = echo_function["FunctionName"]
    response, payload = invoke(lambda_client, name, {"name": "Ada"})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert payload["event"] == {"name": "Ada"}


def test_invoke_gives_the_handler_lambda_context(lambda_client, echo_function):
    name = echo_function["FunctionName"]
    _, payload = invoke(lambda_client, name, {})
    context = payload["context"]
    assert context["function_name"] == name
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == echo_function["FunctionArn"]
    assert str(context["memory_limit_in_mb"]) == "128"
    assert context["aws_request_id"]
    assert context["log_group_name"] == "/aws/lambda/" + name
    assert context["log_stream_name"]
    assert 0 < context["remaining_ms"] <= 3000


def test_invoke_request_id_is_the_runtime_request_id(lambda_client, echo_function):
    response, payload = invoke(lambda_client, echo_function["FunctionName"], {})
    assert payload["context"]["aws_request_id"] == response["ResponseMetadata"]["RequestId"]


def test_invoke_gives_the_function_lambda_environment(lambda_client, echo_function):
    name = echo_function["FunctionName"]
    _, payload = invoke(lambda_client, name, {})
    environment = payload["env"]
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert environment["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert environment["AWS_REGION"] == "us-east-1"
    assert environment["AWS_DEFAULT_REGION"] == "us-east-1"
    assert environment["LAMBDA_TASK_ROOT"] == "/var/task"
    assert environment["LAMBDA_RUNTIME_DIR"] == "/var/runtime"
    assert environment["_HANDLER"] == "handler.handler"
    assert environment["AWS_LAMBDA_RUNTIME_API"]
    assert environment["GREETING"] == "Hola"
    assert payload["cwd"] == "/var/task"


def test_invoke_passes_client_context_to_the_function(lambda_client, echo_function):
    client_context = base64.b64encode(json.dumps({"custom": {"tenant": "acme"}}).encode()).decode()
    _, payload = invoke(lambda_client, echo_function["FunctionName"], {}, ClientContext=client_context)
    assert payload["context"]["client_context_custom"] == {"tenant": "acme"}


def test_invoke_reuses_a_warm_instance(lambda_client, echo_function):
    name = echo_function["FunctionName"]
    _, first = invoke(lambda_client, name, {})
    _, second = invoke(lambda_client, name, {})
    assert second["instance"] == first["instance"]
    assert second["invocations_in_this_process"] == first["invocations_in_this_process"] + 1


def test_invoke_returns_null_for_a_handler_returning_none(lambda_client, make_function):
    name = make_function(python_zip("def handler(event, context):\n    return None\n"), prefix="none")["FunctionName"]
    response = lambda_client.invoke(FunctionName=name, Payload=b"{}")
    assert response["StatusCode"] == 200
    assert response["Payload"].read() == b"null"


def test_invoke_passes_non_object_json_payloads(lambda_client, make_function):
    name = make_function(python_zip("def handler(event, context):\n    return event\n"), prefix="scalar")["FunctionName"]
    for payload in ([1, 2, 3], "text", 42, None):
        assert invoke(lambda_client, name, json.dumps(payload))[1] == payload


def test_invoke_with_log_type_tail_returns_the_function_logs(lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="tail")["FunctionName"]
    marker = unique_name("marker")
    response, payload = invoke(lambda_client, name, {"marker": marker, "lines": 3}, LogType="Tail")
    assert payload == {"printed": 3}
    log = decode_log(response)
    for number in (1, 2, 3):
        assert "log line %d %s" % (number, marker) in log, log
    assert "stderr line %s" % marker in log, log
    assert "REPORT RequestId:" in log, log


def test_invoke_tail_log_report_line_has_lambda_fields(lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="report")["FunctionName"]
    response, _ = invoke(lambda_client, name, {}, LogType="Tail")
    report = [line for line in decode_log(response).splitlines() if line.startswith("REPORT RequestId:")]
    assert report, decode_log(response)
    for field in ("Duration:", "Billed Duration:", "Memory Size: 128 MB", "Max Memory Used:"):
        assert field in report[-1], report[-1]


def test_invoke_tail_log_is_at_most_4_kb(lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="tailsize")["FunctionName"]
    response, _ = invoke(lambda_client, name, {"lines": 2000, "marker": "x" * 40}, LogType="Tail")
    assert len(base64.b64decode(response["LogResult"])) <= 4096
    assert "REPORT RequestId:" in decode_log(response)


def test_invoke_dry_run_returns_204(lambda_client, echo_function):
    response = lambda_client.invoke(FunctionName=echo_function["FunctionName"], InvocationType="DryRun")
    assert response["StatusCode"] == 204


def test_invoke_with_qualifier_runs_that_version(lambda_client, versioned_function):
    name = versioned_function["FunctionName"]
    response, payload = invoke(lambda_client, name, {}, Qualifier="1")
    assert (payload, response["ExecutedVersion"]) == ({"version": "one"}, "1")
    response, payload = invoke(lambda_client, name, {}, Qualifier="$LATEST")
    assert (payload, response["ExecutedVersion"]) == ({"version": "two"}, "$LATEST")


def test_invoke_name_colon_qualifier(lambda_client, versioned_function):
    name = versioned_function["FunctionName"]
    response, payload = invoke(lambda_client, "%s:1" % name, {})
    assert (payload, response["ExecutedVersion"]) == ({"version": "one"}, "1")


def test_invoke_alias_name_colon_qualifier(lambda_client, versioned_function):
    name = versioned_function["FunctionName"]
    lambda_client.create_alias(FunctionName=name, Name="stable", FunctionVersion="1")
    response, payload = invoke(lambda_client, "%s:stable" % name, {})
    assert (payload, response["ExecutedVersion"]) == ({"version": "one"}, "1")


def test_invoke_partial_arn(lambda_client, versioned_function, account_id):
    name = versioned_function["FunctionName"]
    _, payload = invoke(lambda_client, "%s:function:%s" % (account_id, name), {})
    assert payload == {"version": "two"}


def test_invoke_full_arn(lambda_client, versioned_function):
    _, payload = invoke(lambda_client, versioned_function["FunctionArn"], {})
    assert payload == {"version": "two"}


def test_invoke_full_arn_with_version(lambda_client, versioned_function):
    response, payload = invoke(lambda_client, versioned_function["FunctionArn"] + ":1", {})
    assert (payload, response["ExecutedVersion"]) == ({"version": "one"}, "1")


def test_invoke_unhandled_exception_returns_function_error(lambda_client, make_function):
    name = make_function(function_zip("py-raise"), prefix="raise")["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "PaymentDeclined"
    assert payload["errorMessage"] == "card 4242 declined"
    assert any("handler.py" in frame and "raise PaymentDeclined" in frame for frame in payload["stackTrace"]), payload
    # The same instance keeps serving.
    assert invoke(lambda_client, name, {"ok": True})[1] == {"ok": True}


def test_invoke_unserialisable_result_is_a_marshal_error(lambda_client, make_function):
    name = make_function(python_zip("def handler(event, context):\n    return {1, 2}\n"), prefix="marshal")["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.MarshalError"


def test_invoke_python_handler_in_a_package(lambda_client, make_function):
    code = {
        "pkg/__init__.py": "",
        "pkg/inner/__init__.py": "",
        "pkg/inner/mod.py": "def fn(event, context):\n    return 'nested ' + event['via']\n",
    }
    zip_bytes = zip_files(code)
    slashed = make_function(zip_bytes, handler="pkg/inner/mod.fn", prefix="slashed")["FunctionName"]
    dotted = make_function(zip_bytes, handler="pkg.inner.mod.fn", prefix="dotted")["FunctionName"]
    assert invoke(lambda_client, slashed, {"via": "slash"})[1] == "nested slash"
    assert invoke(lambda_client, dotted, {"via": "dot"})[1] == "nested dot"


def test_invoke_large_response_under_the_limit(lambda_client, make_function):
    name = make_function(
        python_zip("def handler(event, context):\n    return 'x' * event['size']\n"), prefix="bigresponse"
    )["FunctionName"]
    _, payload = invoke(lambda_client, name, {"size": 5 * 1024 * 1024})
    assert payload == "x" * (5 * 1024 * 1024)


def test_invoke_response_over_6_mb_is_a_function_error(lambda_client, make_function):
    name = make_function(
        python_zip("def handler(event, context):\n    return 'x' * event['size']\n"), prefix="hugeresponse"
    )["FunctionName"]
    response, payload = invoke(lambda_client, name, {"size": 7 * 1024 * 1024})
    assert response.get("FunctionError") == "Unhandled", response
    assert "size" in payload["errorMessage"].lower() or "large" in payload["errorMessage"].lower(), payload


def test_invoke_round_trips_unicode(lambda_client, make_function):
    name = make_function(python_zip("def handler(event, context):\n    return event\n"), prefix="unicode")["FunctionName"]
    event = {"text": "héllo wörld ✓ 日本語 🚀", "escaped": "\u2028\u0000"}
    assert invoke(lambda_client, name, event)[1] == event


def test_invoke_payload_just_under_6_mb_is_accepted(lambda_client, make_function):
    name = make_function(
        python_zip("def handler(event, context):\n    return len(event)\n"), prefix="bigpayload-ok", MemorySize=512
    )["FunctionName"]
    text = "x" * (6 * 1024 * 1024 - 1024)
    response, payload = invoke(lambda_client, name, json.dumps(text))
    assert "FunctionError" not in response, payload
    assert payload == len(text)


def test_init_error_log_tail_shows_the_runtime_error(lambda_client, make_function):
    name = make_function(function_zip("py-import-error"), prefix="initlog")["FunctionName"]
    response, _ = invoke(lambda_client, name, {}, LogType="Tail")
    log = decode_log(response)
    assert "Runtime.ImportModuleError" in log, log


def test_unhandled_exception_log_tail_shows_the_traceback(lambda_client, make_function):
    name = make_function(function_zip("py-raise"), prefix="tracelog")["FunctionName"]
    response, _ = invoke(lambda_client, name, {}, LogType="Tail")
    log = decode_log(response)
    assert "[ERROR] PaymentDeclined: card 4242 declined" in log, log
    assert "Traceback (most recent call last):" in log, log


def test_node_console_log_appears_in_tail_with_request_id(lambda_client, make_function):
    name = make_function(function_zip("node-async"), runtime="nodejs20.x", handler="index.handler", prefix="nodelog")[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {}, LogType="Tail")
    log = decode_log(response)
    assert "\tINFO\thandled %s" % payload["requestId"] in log, log


def report_line(response):
    lines = [line for line in decode_log(response).splitlines() if line.startswith("REPORT RequestId:")]
    assert len(lines) == 1, decode_log(response)
    return lines[0]


def test_report_line_has_init_duration_on_cold_start_only(lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="initduration")["FunctionName"]
    cold, _ = invoke(lambda_client, name, {}, LogType="Tail")
    warm, _ = invoke(lambda_client, name, {}, LogType="Tail")
    assert "Init Duration:" in report_line(cold)
    assert "Init Duration:" not in report_line(warm)


def test_report_billed_duration_is_duration_rounded_up_to_1_ms(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="billing")["FunctionName"]
    for payload in ({}, {"sleep": 0.0123}):
        response, _ = invoke(lambda_client, name, payload, LogType="Tail")
        line = report_line(response)
        duration = float(re.search(r"\tDuration: ([0-9.]+) ms", line).group(1))
        billed = int(re.search(r"Billed Duration: (\d+) ms", line).group(1))
        assert billed == max(1, math.ceil(duration)), line


def test_report_max_memory_used_is_within_memory_size(lambda_client, make_function):
    name = make_function(function_zip("py-oom"), prefix="maxmemory", MemorySize=256, Timeout=30)["FunctionName"]
    response, _ = invoke(lambda_client, name, {"mb": 64}, LogType="Tail")
    line = report_line(response)
    used = int(re.search(r"Max Memory Used: (\d+) MB", line).group(1))
    assert 64 <= used <= 256, line


def test_log_tail_holds_only_this_invocation(lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="ownlog")["FunctionName"]
    invoke(lambda_client, name, {"marker": "first-invocation"})
    response, _ = invoke(lambda_client, name, {"marker": "second-invocation"}, LogType="Tail")
    log = decode_log(response)
    assert "second-invocation" in log
    assert "first-invocation" not in log, log


def test_concurrent_invocations_keep_their_logs_apart(lambda_client, make_function):
    source = (
        "import time\n\n"
        "def handler(event, context):\n"
        "    for _ in range(5):\n"
        "        print('tick', event['marker'])\n"
        "        time.sleep(0.1)\n"
        "    return event['marker']\n"
    )
    name = make_function(python_zip(source), prefix="apart", Timeout=10)["FunctionName"]
    results = {}

    def run(marker):
        results[marker] = invoke(lambda_client, name, {"marker": marker}, LogType="Tail")[0]

    threads = [threading.Thread(target=run, args=(marker,)) for marker in ("alpha", "bravo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alpha, bravo = decode_log(results["alpha"]), decode_log(results["bravo"])
    assert "tick alpha" in alpha and "tick bravo" not in alpha, alpha
    assert "tick bravo" in bravo and "tick alpha" not in bravo, bravo
