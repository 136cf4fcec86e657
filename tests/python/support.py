"""Helpers shared by the process tests: zips, names, waiting, invoking and AWS-shaped errors.

Nothing here starts processes; `conftest.py` owns the server's life cycle.
"""

import base64
import hashlib
import io
import json
import os
import stat
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = REPO_ROOT / "tests" / "functions"
EXAMPLES_DIR = REPO_ROOT / "examples"

# Lambda requires a role on CreateFunction (boto3 refuses to send the call without one);
# Wisp accepts any well-formed role ARN.
ROLE = "arn:aws:iam::123456789012:role/wisp-test"
PYTHON_RUNTIME = "python3.12"
NODE_RUNTIME = "nodejs20.x"
PROVIDED_RUNTIME = "provided.al2023"


def unique_name(prefix):
    """A function name no other test uses: `prefix-` and eight hex digits."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def _zip_info(name, mode):
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so that the mode below is honoured
    info.external_attr = (mode & 0xFFFF) << 16
    return info


def zip_directory(directory, extra_files=None):
    """Zip a directory's files (relative paths, Unix modes kept), plus `extra_files`.

    `extra_files` maps archive names to bytes/str contents, or to (contents, mode).
    """
    directory = Path(directory)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            mode = stat.S_IFREG | stat.S_IMODE(path.stat().st_mode)
            archive.writestr(_zip_info(path.relative_to(directory).as_posix(), mode), path.read_bytes())
        for name, contents in (extra_files or {}).items():
            _write_extra(archive, name, contents)
    return buffer.getvalue()


def zip_files(files):
    """Zip in-memory files: archive name → contents, or (contents, mode)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, contents in files.items():
            _write_extra(archive, name, contents)
    return buffer.getvalue()


def _write_extra(archive, name, contents):
    mode = 0o644
    if isinstance(contents, tuple):
        contents, mode = contents
    if isinstance(contents, str):
        contents = contents.encode("utf-8")
    archive.writestr(_zip_info(name, stat.S_IFREG | mode), contents)


def function_zip(name, extra_files=None):
    """The zip of tests/functions/<name>."""
    return zip_directory(FUNCTIONS_DIR / name, extra_files)


def python_zip(source):
    """A one-file Python function: `source` becomes handler.py (handler `handler.handler`)."""
    return zip_files({"handler.py": source})


def code_sha256(zip_bytes):
    """CodeSha256 as Lambda reports it: base64 of the zip's SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode("ascii")


def wait_until_ready(client, name, timeout=60):
    """Wait until the function is Active and its last update has finished.

    Wisp may answer Active at once; Lambda goes through Pending. Either way this returns
    the configuration.
    """
    deadline = time.time() + timeout
    while True:
        configuration = client.get_function_configuration(FunctionName=name)
        state = configuration.get("State", "Active")
        update = configuration.get("LastUpdateStatus", "Successful")
        if state == "Active" and update in ("Successful", None):
            return configuration
        if state == "Failed" or update == "Failed":
            raise AssertionError("function %s failed to become ready: %r" % (name, configuration))
        if time.time() > deadline:
            raise AssertionError("function %s not ready after %ss: %r" % (name, timeout, configuration))
        time.sleep(0.1)


def invoke(client, name, payload=None, **arguments):
    """Invoke and return (response, decoded payload): JSON when it parses, else bytes."""
    if payload is not None:
        arguments["Payload"] = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    response = client.invoke(FunctionName=name, **arguments)
    body = response["Payload"].read() if "Payload" in response else b""
    try:
        decoded = json.loads(body) if body else None
    except ValueError:
        decoded = body
    return response, decoded


def expect_error(code, status, call, *args, **kwargs):
    """Call, expect a ClientError with this error code and HTTP status, return its response."""
    with pytest.raises(ClientError) as raised:
        call(*args, **kwargs)
    response = raised.value.response
    got_code = response.get("Error", {}).get("Code")
    got_status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    assert (got_code, got_status) == (code, status), "expected %s %s, got %s %s: %r" % (
        code,
        status,
        got_code,
        got_status,
        response,
    )
    return response


def decode_log(response):
    """The text of an invoke's X-Amz-Log-Result (LogType=Tail)."""
    assert "LogResult" in response, "no LogResult in %r" % {k: v for k, v in response.items() if k != "Payload"}
    return base64.b64decode(response["LogResult"]).decode("utf-8", "replace")


def executable_mode(path):
    return os.stat(path).st_mode & stat.S_IXUSR != 0


def assert_still_serves(client, name):
    """The function answers a plain invoke without a function error."""
    response, payload = invoke(client, name, {"still": "alive"})
    assert response["StatusCode"] == 200, response
    assert "FunctionError" not in response, payload
    return payload


def signed_request(server, method, path, body=b"", headers=None, sign=True, secret_key=None, signed_at=None, sent_body=None):
    """Send one raw HTTP request to the server, SigV4-signed with its root key unless told not.

    `signed_at` (an aware datetime) signs as of another time; `sent_body` sends other bytes
    than the ones signed. Returns (status, headers with lowercase names, body bytes). For
    what boto3 cannot send: malformed JSON bodies, unsigned, stale or tampered requests.
    """
    import urllib.error
    import urllib.request
    from unittest import mock

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = server.endpoint + path
    request_headers = {"Content-Type": "application/json"}
    request_headers.update(headers or {})
    if sign:
        aws_request = AWSRequest(method=method, url=url, data=body, headers=request_headers)
        credentials = Credentials(server.access_key, secret_key or server.secret_key)
        signer = SigV4Auth(credentials, "lambda", "us-east-1")
        if signed_at is None:
            signer.add_auth(aws_request)
        else:
            with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
                signer.add_auth(aws_request)
        request_headers = dict(aws_request.headers.items())
    data = body if sent_body is None else sent_body
    if sent_body is not None:
        request_headers["Content-Length"] = str(len(data))
    request = urllib.request.Request(url, data=data if method != "GET" else None, method=method, headers=request_headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def function_processes(function_name):
    """Host pids of processes running for `function_name` (found by their environment)."""
    marker = ("AWS_LAMBDA_FUNCTION_NAME=%s" % function_name).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as environ:
                if marker in environ.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def wait_for_no_processes(function_name, timeout=10):
    """Wait until no process runs for the function; return the pids still left."""
    deadline = time.time() + timeout
    while True:
        left = function_processes(function_name)
        if not left or time.time() > deadline:
            return left
        time.sleep(0.1)
