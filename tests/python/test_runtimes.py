"""Runtimes: a Rust function on the unmodified lambda_runtime crate, Python through AWS's
awslambdaric, and Node.js through Wisp's own bootstrap."""

import shutil

import pytest

from support import (
    FUNCTIONS_DIR,
    NODE_RUNTIME,
    PROVIDED_RUNTIME,
    function_zip,
    invoke,
    zip_directory,
    zip_files,
)


@pytest.fixture(scope="module")
def rust_zip(rust_echo_bootstrap):
    return zip_files({"bootstrap": (rust_echo_bootstrap.read_bytes(), 0o755)})


@pytest.fixture
def rust_function(rust_zip, make_function):
    return make_function(rust_zip, runtime=PROVIDED_RUNTIME, handler="bootstrap", prefix="rust")


@pytest.mark.slow
def test_rust_lambda_runtime_function_echoes(lambda_client, rust_function):
    name = rust_function["FunctionName"]
    response, payload = invoke(lambda_client, name, {"hello": "rust"})
    assert response["StatusCode"] == 200 and "FunctionError" not in response, payload
    assert payload["echo"] == {"hello": "rust"}
    assert payload["function"] == name
    assert payload["request_id"]


@pytest.mark.slow
def test_rust_lambda_runtime_error_is_a_function_error(lambda_client, rust_function):
    response, payload = invoke(lambda_client, rust_function["FunctionName"], {"fail": "no thanks"})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "EchoFailure"
    assert payload["errorMessage"] == "no thanks"


@pytest.mark.slow
def test_rust_lambda_runtime_serves_many_warm_invokes(lambda_client, rust_function):
    name = rust_function["FunctionName"]
    request_ids = set()
    for index in range(50):
        _, payload = invoke(lambda_client, name, {"index": index})
        assert payload["echo"] == {"index": index}
        request_ids.add(payload["request_id"])
    assert len(request_ids) == 50


@pytest.mark.slow
def test_rust_lambda_runtime_timeout(lambda_client, rust_zip, make_function):
    name = make_function(rust_zip, runtime=PROVIDED_RUNTIME, handler="bootstrap", prefix="rust-timeout", Timeout=1)[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {"sleep_ms": 5000})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Sandbox.Timedout"
    assert invoke(lambda_client, name, {"sleep_ms": 1})[1]["echo"] == {"sleep_ms": 1}


@pytest.fixture(scope="module")
def awslambdaric_zip(awslambdaric_dir, python_executable, tmp_path_factory):
    """py-ric with awslambdaric beside it and a bootstrap that starts it.

    awslambdaric's native client dies with SIGSEGV when a /runtime/invocation/next answer
    has no Content-Type header, so these tests also guard that header.
    """
    directory = tmp_path_factory.mktemp("py-ric")
    shutil.copytree(awslambdaric_dir, directory, dirs_exist_ok=True)
    shutil.copytree(FUNCTIONS_DIR / "py-ric", directory, dirs_exist_ok=True)
    bootstrap = directory / "bootstrap"
    bootstrap.write_text("#!/bin/sh\nexec %s -m awslambdaric handler.handler\n" % python_executable)
    bootstrap.chmod(0o755)
    return zip_directory(directory)


@pytest.mark.slow
def test_awslambdaric_function_as_provided_runtime(lambda_client, awslambdaric_zip, make_function):
    name = make_function(awslambdaric_zip, runtime=PROVIDED_RUNTIME, handler="handler.handler", prefix="ric", Timeout=30)[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {"via": "ric"})
    assert response["StatusCode"] == 200 and "FunctionError" not in response, payload
    assert payload["runtime"] == "awslambdaric"
    assert payload["echo"] == {"via": "ric"}
    assert payload["function_name"] == name
    assert payload["task_root"] == "/var/task"
    assert invoke(lambda_client, name, {"again": 1})[1]["echo"] == {"again": 1}


@pytest.mark.slow
def test_awslambdaric_exception_is_a_function_error(lambda_client, awslambdaric_zip, make_function):
    name = make_function(awslambdaric_zip, runtime=PROVIDED_RUNTIME, handler="handler.handler", prefix="ric-fail", Timeout=30)[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {"fail": "ric says no"})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "RuntimeError"
    assert payload["errorMessage"] == "ric says no"


def test_node_async_handler(lambda_client, make_function):
    name = make_function(function_zip("node-async"), runtime=NODE_RUNTIME, handler="index.handler", prefix="node-async")[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {"name": "Ada"})
    assert response["StatusCode"] == 200 and "FunctionError" not in response, payload
    assert payload["style"] == "async"
    assert payload["message"] == "Hello, Ada!"
    assert payload["functionName"] == name
    assert payload["requestId"]
    assert payload["node"].startswith("v")


def test_node_callback_handler(lambda_client, make_function):
    name = make_function(function_zip("node-sync"), runtime=NODE_RUNTIME, handler="index.handler", prefix="node-cb")[
        "FunctionName"
    ]
    _, first = invoke(lambda_client, name, {"n": 1})
    _, second = invoke(lambda_client, name, {"n": 2})
    assert first["style"] == "callback" and first["echo"] == {"n": 1}
    assert str(first["memoryLimitInMB"]) == "128"
    assert second["invocationsInThisProcess"] == first["invocationsInThisProcess"] + 1


def test_node_plain_sync_handler(lambda_client, make_function):
    name = make_function(function_zip("node-sync"), runtime=NODE_RUNTIME, handler="index.plain", prefix="node-plain")[
        "FunctionName"
    ]
    _, payload = invoke(lambda_client, name, {"n": 3})
    assert payload["style"] == "plain" and payload["echo"] == {"n": 3}


def test_node_thrown_error_is_a_function_error(lambda_client, make_function):
    name = make_function(function_zip("node-async"), runtime=NODE_RUNTIME, handler="index.handler", prefix="node-err")[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {"fail": "out of range"})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "RangeError"
    assert payload["errorMessage"] == "out of range"
    assert isinstance(payload["trace"], list) and payload["trace"][0].startswith("RangeError")


def test_node_missing_export_is_handler_not_found(lambda_client, make_function):
    name = make_function(function_zip("node-async"), runtime=NODE_RUNTIME, handler="index.nothere", prefix="node-nohandler")[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.HandlerNotFound"


def test_node_missing_file_is_import_module_error(lambda_client, make_function):
    name = make_function(function_zip("node-async"), runtime=NODE_RUNTIME, handler="nofile.handler", prefix="node-nofile")[
        "FunctionName"
    ]
    response, payload = invoke(lambda_client, name, {})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ImportModuleError"


def test_node_handler_in_a_subdirectory(lambda_client, make_function):
    code = zip_files({"src/app.js": "exports.main = async (event) => ({ nested: event });\n"})
    name = make_function(code, runtime=NODE_RUNTIME, handler="src/app.main", prefix="node-subdir")["FunctionName"]
    assert invoke(lambda_client, name, {"a": 1})[1] == {"nested": {"a": 1}}


def test_node_es_module_js_file_in_a_module_package(lambda_client, make_function):
    code = zip_files(
        {
            "package.json": '{"type": "module"}\n',
            "index.js": "export const handler = async (event) => ({ esm: true, event });\n",
        }
    )
    name = make_function(code, runtime=NODE_RUNTIME, handler="index.handler", prefix="node-esm")["FunctionName"]
    assert invoke(lambda_client, name, {"b": 2})[1] == {"esm": True, "event": {"b": 2}}


def test_node_commonjs_cjs_file(lambda_client, make_function):
    code = zip_files({"legacy.cjs": "module.exports.handler = (event, context, callback) => callback(null, 'cjs');\n"})
    name = make_function(code, runtime=NODE_RUNTIME, handler="legacy.handler", prefix="node-cjs")["FunctionName"]
    assert invoke(lambda_client, name, {})[1] == "cjs"
