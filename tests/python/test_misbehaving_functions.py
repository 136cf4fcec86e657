"""Functions that fail, hang, crash or exhaust their limits: each ends in a distinct, reported
error, the instance is replaced, and the server keeps serving this and other functions."""

import pytest

from support import assert_still_serves, function_zip, invoke, python_zip, wait_until_ready


def assert_function_error(response, payload, error_type):
    assert response["StatusCode"] == 200, response
    assert response.get("FunctionError") == "Unhandled", (response, payload)
    assert isinstance(payload, dict) and payload.get("errorType") == error_type, payload
    return payload


@pytest.mark.slow
def test_timeout_is_reported_as_sandbox_timedout(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-sleep-forever"), prefix="timeout", Timeout=1)["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Sandbox.Timedout")
    assert "Task timed out after 1.00 seconds" in payload["errorMessage"], payload
    assert invoke(lambda_client, name, {"ok": True})[1] == {"ok": True}
    assert_still_serves(lambda_client, healthy_function)


@pytest.mark.slow
def test_out_of_memory_is_reported_as_runtime_out_of_memory(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-oom"), prefix="oom", MemorySize=128, Timeout=30)["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Runtime.OutOfMemory")
    assert invoke(lambda_client, name, {"ok": True})[1] == {"ok": True}
    assert_still_serves(lambda_client, healthy_function)


@pytest.mark.slow
def test_memory_limit_is_the_configured_memory_size(lambda_client, make_function):
    # 384 MiB is three times the function's memory: /tmp being empty must not lend it room.
    name = make_function(function_zip("py-oom"), prefix="memlimit", MemorySize=128, Timeout=30)["FunctionName"]
    response, payload = invoke(lambda_client, name, {"mb": 384})
    assert_function_error(response, payload, "Runtime.OutOfMemory")


@pytest.mark.slow
def test_memory_within_the_memory_size_is_usable(lambda_client, make_function):
    name = make_function(function_zip("py-oom"), prefix="memok", MemorySize=256, Timeout=30)["FunctionName"]
    response, payload = invoke(lambda_client, name, {"mb": 128})
    assert "FunctionError" not in response, payload
    assert payload == {"allocated_mb": 128}


def test_exit_during_invoke_is_reported_as_runtime_exit_error(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-crash"), prefix="crash")["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Runtime.ExitError")
    assert invoke(lambda_client, name, {"ok": True})[1] == {"ok": True}
    assert_still_serves(lambda_client, healthy_function)


def test_exit_during_init_is_reported_as_runtime_init_error(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-exit-at-init"), prefix="initexit")["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Runtime.InitError")
    # A second try fails the same way instead of hanging on a dead instance.
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Runtime.InitError")
    assert_still_serves(lambda_client, healthy_function)


def test_import_error_is_reported_as_runtime_import_module_error(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-import-error"), prefix="import")["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Runtime.ImportModuleError")
    assert "wisp_module_that_does_not_exist" in payload["errorMessage"], payload
    assert_still_serves(lambda_client, healthy_function)


def test_missing_handler_is_reported_as_runtime_handler_not_found(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-missing-handler"), prefix="nohandler")["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Runtime.HandlerNotFound")
    assert_still_serves(lambda_client, healthy_function)


def test_fixed_code_recovers_from_init_failure(lambda_client, make_function):
    name = make_function(function_zip("py-import-error"), prefix="fixed")["FunctionName"]
    response, payload = invoke(lambda_client, name, {})
    assert_function_error(response, payload, "Runtime.ImportModuleError")
    lambda_client.update_function_code(FunctionName=name, ZipFile=function_zip("py-echo"))
    wait_until_ready(lambda_client, name)
    assert_still_serves(lambda_client, name)


@pytest.mark.slow
def test_fork_bomb_is_contained(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-fork-bomb"), prefix="forkbomb", MemorySize=512, Timeout=60)["FunctionName"]
    limit = 4000
    response, payload = invoke(lambda_client, name, {"max": limit, "child_seconds": 3})
    if "FunctionError" in response:
        # Killed for its own limits is acceptable containment, as long as it is reported.
        assert payload["errorType"] in ("Runtime.OutOfMemory", "Sandbox.Timedout", "Runtime.ExitError"), payload
    else:
        assert payload["forked"] < limit, "no process limit stopped the fork loop: %r" % payload
        assert payload["error"] == "EAGAIN", payload
    assert_still_serves(lambda_client, healthy_function)


@pytest.mark.slow
def test_writing_past_tmp_size_fails_with_no_space(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-fill-tmp"), prefix="filltmp", MemorySize=128, Timeout=60)["FunctionName"]
    limit_mb = 4096
    response, payload = invoke(lambda_client, name, {"max_mb": limit_mb})
    assert "FunctionError" not in response, payload
    assert payload["errno"] in ("ENOSPC", "EDQUOT", "EFBIG"), payload
    assert 0 < payload["written_mb"] < limit_mb, payload
    assert_still_serves(lambda_client, healthy_function)


def test_function_cannot_read_the_server_data_directory(lambda_client, make_function, wisp):
    name = make_function(function_zip("py-read-data-dir"), prefix="escape")["FunctionName"]
    response, payload = invoke(lambda_client, name, {"path": str(wisp.data_dir), "files": ["credentials"]})
    assert "FunctionError" not in response, payload
    assert payload["listed"] is False, payload
    assert payload["read"] is False, payload


def test_function_cannot_write_its_code_directory(lambda_client, make_function):
    source = (
        "def handler(event, context):\n"
        "    try:\n"
        "        open('/var/task/injected.py', 'w').write('x')\n"
        "        return 'written'\n"
        "    except OSError as error:\n"
        "        return error.strerror\n"
    )
    name = make_function(python_zip(source), prefix="readonly")["FunctionName"]
    _, payload = invoke(lambda_client, name, {})
    assert payload != "written"
