"""Bad requests and bad code get AWS's error shapes and status codes, and harm nothing."""

import datetime
import io
import json
import stat
import zipfile

from support import (
    PROVIDED_RUNTIME,
    PYTHON_RUNTIME,
    ROLE,
    assert_still_serves,
    expect_error,
    function_zip,
    invoke,
    python_zip,
    signed_request,
    unique_name,
    zip_files,
)

HANDLER_SOURCE = "def handler(event, context):\n    return event\n"


def create_arguments(**overrides):
    arguments = {
        "FunctionName": unique_name("bad"),
        "Runtime": PYTHON_RUNTIME,
        "Role": ROLE,
        "Handler": "handler.handler",
        "Code": {"ZipFile": python_zip(HANDLER_SOURCE)},
    }
    arguments.update(overrides)
    return arguments


def assert_not_created(client, name):
    expect_error("ResourceNotFoundException", 404, client.get_function, FunctionName=name)


def test_invoke_unknown_function_is_resource_not_found(lambda_client):
    expect_error("ResourceNotFoundException", 404, lambda_client.invoke, FunctionName=unique_name("missing"))


def test_get_unknown_function_is_resource_not_found(lambda_client):
    expect_error("ResourceNotFoundException", 404, lambda_client.get_function, FunctionName=unique_name("missing"))


def test_invoke_unknown_version_is_resource_not_found(lambda_client, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="nover")["FunctionName"]
    expect_error("ResourceNotFoundException", 404, lambda_client.invoke, FunctionName=name, Qualifier="42")


def test_error_response_has_aws_headers_and_body(wisp):
    status, headers, body = signed_request(wisp, "GET", "/2015-03-31/functions/%s" % unique_name("missing"))
    assert status == 404
    assert headers.get("x-amzn-errortype", "").startswith("ResourceNotFoundException"), headers
    assert headers.get("x-amzn-requestid"), headers
    document = json.loads(body)
    assert document.get("Message") or document.get("message"), document


def test_duplicate_create_is_resource_conflict(lambda_client, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="dup")["FunctionName"]
    expect_error("ResourceConflictException", 409, lambda_client.create_function, **create_arguments(FunctionName=name))


def test_invalid_function_name_is_refused(raw_client):
    expect_error(
        "InvalidParameterValueException", 400, raw_client.create_function, **create_arguments(FunctionName="bad name!")
    )


def test_too_long_function_name_is_refused(raw_client):
    expect_error(
        "InvalidParameterValueException", 400, raw_client.create_function, **create_arguments(FunctionName="f" * 65)
    )


def test_memory_size_below_128_is_refused(raw_client):
    arguments = create_arguments(MemorySize=100)
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)
    assert_not_created(raw_client, arguments["FunctionName"])


def test_memory_size_above_10240_is_refused(raw_client):
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **create_arguments(MemorySize=10241))


def test_timeout_zero_is_refused(raw_client):
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **create_arguments(Timeout=0))


def test_timeout_above_900_is_refused(raw_client):
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **create_arguments(Timeout=901))


def test_unknown_runtime_is_refused(raw_client):
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **create_arguments(Runtime="cobol85"))


def test_missing_handler_is_refused(raw_client):
    arguments = create_arguments()
    del arguments["Handler"]
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)


def test_update_configuration_with_invalid_memory_is_refused(raw_client, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="badupdate")["FunctionName"]
    expect_error(
        "InvalidParameterValueException", 400, raw_client.update_function_configuration, FunctionName=name, MemorySize=64
    )
    assert raw_client.get_function_configuration(FunctionName=name)["MemorySize"] == 128


def test_code_that_is_not_a_zip_is_refused(raw_client):
    arguments = create_arguments(Code={"ZipFile": b"this is not a zip archive"})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)
    assert_not_created(raw_client, arguments["FunctionName"])


def test_zip_slip_entry_is_refused(raw_client):
    code = zip_files({"handler.py": HANDLER_SOURCE, "../../../../tmp/wisp-zip-slip.py": "owned = True\n"})
    arguments = create_arguments(Code={"ZipFile": code})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)
    assert_not_created(raw_client, arguments["FunctionName"])


def test_zip_absolute_path_entry_is_refused(raw_client):
    code = zip_files({"handler.py": HANDLER_SOURCE, "/etc/wisp-absolute.py": "owned = True\n"})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **create_arguments(Code={"ZipFile": code}))


def test_zip_symlink_entry_is_refused(raw_client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", HANDLER_SOURCE)
        link = zipfile.ZipInfo("passwd")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    arguments = create_arguments(Code={"ZipFile": buffer.getvalue()})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)
    assert_not_created(raw_client, arguments["FunctionName"])


def zip_bomb(uncompressed_mb=300):
    """A small zip whose one entry inflates to `uncompressed_mb` MiB of zeros."""
    buffer = io.BytesIO()
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("handler.py", HANDLER_SOURCE)
        with archive.open("zeros.bin", "w", force_zip64=True) as entry:
            for _ in range(uncompressed_mb):
                entry.write(zeros)
    return buffer.getvalue()


def test_zip_bomb_is_refused(raw_client, lambda_client, healthy_function):
    code = zip_bomb()
    assert len(code) < 2 * 1024 * 1024
    arguments = create_arguments(Code={"ZipFile": code})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)
    assert_not_created(raw_client, arguments["FunctionName"])
    assert_still_serves(lambda_client, healthy_function)


def test_provided_bootstrap_that_is_not_executable_is_refused(raw_client):
    arguments = create_arguments(
        Runtime=PROVIDED_RUNTIME, Handler="bootstrap", Code={"ZipFile": function_zip("provided-not-executable")}
    )
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)
    assert_not_created(raw_client, arguments["FunctionName"])


def test_provided_runtime_without_bootstrap_is_refused(raw_client):
    arguments = create_arguments(Runtime=PROVIDED_RUNTIME, Handler="bootstrap", Code={"ZipFile": python_zip(HANDLER_SOURCE)})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)


def test_payload_over_6_mb_is_request_too_large(lambda_client, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="bigpayload")["FunctionName"]
    payload = json.dumps("x" * (6 * 1024 * 1024 + 16))
    expect_error("RequestTooLargeException", 413, lambda_client.invoke, FunctionName=name, Payload=payload)
    assert_still_serves(lambda_client, name)


def test_malformed_json_payload_is_invalid_request_content(lambda_client, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="badjson")["FunctionName"]
    expect_error(
        "InvalidRequestContentException", 400, lambda_client.invoke, FunctionName=name, Payload=b'{"unterminated": '
    )
    assert_still_serves(lambda_client, name)


def test_malformed_json_create_body_is_refused_with_400(wisp):
    status, headers, body = signed_request(wisp, "POST", "/2015-03-31/functions", body=b'{"FunctionName": ')
    assert status == 400, (status, body)
    assert headers.get("x-amzn-errortype", "").split(":")[0] in (
        "InvalidRequestContentException",
        "SerializationException",
        "InvalidParameterValueException",
    ), headers


def test_wrong_secret_key_is_invalid_signature(wisp):
    client = wisp.client(secret_key=wisp.secret_key + "-wrong")
    expect_error("InvalidSignatureException", 403, client.list_functions)


def test_unknown_access_key_is_unrecognized_client(wisp):
    client = wisp.client(access_key="AKIAWISPUNKNOWN00000", secret_key="not-a-real-secret")
    expect_error("UnrecognizedClientException", 403, client.list_functions)


def test_unsigned_request_is_refused_with_403(wisp):
    status, headers, body = signed_request(wisp, "GET", "/2015-03-31/functions", sign=False)
    assert status == 403, (status, body)
    assert headers.get("x-amzn-errortype"), headers


def test_wrong_secret_cannot_invoke(wisp, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="authinvoke")["FunctionName"]
    client = wisp.client(secret_key="definitely-not-the-secret")
    expect_error("InvalidSignatureException", 403, client.invoke, FunctionName=name, Payload=b"{}")


def test_reserved_environment_variable_is_refused(raw_client):
    arguments = create_arguments(Environment={"Variables": {"AWS_REGION": "eu-west-1"}})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)


def test_invalid_environment_variable_name_is_refused(raw_client):
    arguments = create_arguments(Environment={"Variables": {"1NOT-VALID": "x"}})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)


def test_unknown_function_in_update_is_resource_not_found(raw_client):
    expect_error(
        "ResourceNotFoundException",
        404,
        raw_client.update_function_configuration,
        FunctionName=unique_name("missing"),
        Timeout=5,
    )


def test_delete_unknown_function_is_resource_not_found(raw_client):
    expect_error("ResourceNotFoundException", 404, raw_client.delete_function, FunctionName=unique_name("missing"))


def test_request_signed_20_minutes_ago_is_refused(wisp):
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    status, headers, body = signed_request(wisp, "GET", "/2015-03-31/functions", signed_at=stale)
    assert status == 403, (status, body)
    assert headers.get("x-amzn-errortype", "").split(":")[0] == "InvalidSignatureException", headers


def test_request_signed_now_is_accepted_by_the_raw_signer(wisp):
    status, _, body = signed_request(wisp, "GET", "/2015-03-31/functions")
    assert status == 200, (status, body)


def test_tampered_body_fails_the_signature(wisp, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="tamper")["FunctionName"]
    status, headers, body = signed_request(
        wisp,
        "POST",
        "/2015-03-31/functions/%s/invocations" % name,
        body=b'{"amount": 1}',
        sent_body=b'{"amount": 9}',
    )
    assert status == 403, (status, body)
    assert headers.get("x-amzn-errortype", "").split(":")[0] == "InvalidSignatureException", headers


def test_environment_over_4_kb_is_refused(raw_client):
    arguments = create_arguments(Environment={"Variables": {"BIG": "x" * 5000}})
    expect_error("InvalidParameterValueException", 400, raw_client.create_function, **arguments)


def test_bad_code_update_keeps_the_old_code(lambda_client, raw_client, make_function):
    name = make_function(python_zip("def handler(event, context):\n    return 'original'\n"), prefix="badupdatecode")[
        "FunctionName"
    ]
    slip = zip_files({"handler.py": HANDLER_SOURCE, "../escape.py": "x = 1\n"})
    expect_error("InvalidParameterValueException", 400, raw_client.update_function_code, FunctionName=name, ZipFile=slip)
    expect_error(
        "InvalidParameterValueException", 400, raw_client.update_function_code, FunctionName=name, ZipFile=b"not a zip"
    )
    assert invoke(lambda_client, name, {})[1] == "original"


def test_alias_on_unknown_function_is_resource_not_found(lambda_client):
    expect_error(
        "ResourceNotFoundException",
        404,
        lambda_client.create_alias,
        FunctionName=unique_name("missing"),
        Name="live",
        FunctionVersion="1",
    )


def test_reserved_concurrency_cannot_take_the_whole_account(lambda_client, make_function):
    name = make_function(python_zip(HANDLER_SOURCE), prefix="greedy")["FunctionName"]
    expect_error(
        "InvalidParameterValueException",
        400,
        lambda_client.put_function_concurrency,
        FunctionName=name,
        ReservedConcurrentExecutions=100000,
    )
