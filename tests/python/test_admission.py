"""Admission hooks: functions that approve control-plane changes before they are stored.

The hook here is a code-signing check: a package must carry a `SIGNATURE` file holding the
HMAC-SHA256, under a key only the hook and the signer know, of the package's other files (their
sha256 and path, one per line, in path order). Wisp gives the hook every file's sha256 and the
signature's text, so the hook never needs the package itself.
"""

import hashlib
import hmac
import io
import json
import zipfile

import pytest
from botocore.exceptions import ClientError

import support

SIGNING_KEY = b"compliance-team-key"

HOOK = """
import hashlib
import hmac
import json
import time

KEY = %r


def handler(event, context):
    print("ASKED " + json.dumps({"Type": event["Type"], "Resource": event["Resource"]}))
    before, after = event["Before"] or {}, event["After"] or {}
    if event["Type"] == "AliasDeleted" and event["Resource"].endswith(":prod"):
        return {"allow": False, "reason": "the prod alias is protected"}
    if event["Type"] == "FunctionDeleted" and before["Environment"]["Variables"].get("protected") == "true":
        return {"allow": False, "reason": "the function is protected"}
    if event["Type"] == "FunctionConfigurationUpdated" and after["Timeout"] > 30:
        return {"allow": False, "reason": "a timeout over 30 s needs review (asked for %%d)" %% after["Timeout"]}
    code = event.get("Code")
    if code is None:
        return {"allow": True}
    if code["Signature"] is None:
        return {"allow": False, "reason": "code is not signed: add a SIGNATURE file"}
    manifest = "\\n".join("%%s  %%s" %% (f["Sha256"], f["Path"]) for f in code["Files"] if f["Path"] != "SIGNATURE")
    expected = hmac.new(KEY, manifest.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, code["Signature"].strip()):
        return {"allow": False, "reason": "SIGNATURE does not match the code"}
    return {"allow": True}
""" % SIGNING_KEY

BROKEN_HOOK = """
def handler(event, context):
    raise RuntimeError("hook is broken")
"""

SLOW_HOOK = """
import time


def handler(event, context):
    time.sleep(5)
    return {"allow": True}
"""


def answer(text):
    return "def handler(event, context):\n    return %r\n" % text


def signed_zip(source, key=SIGNING_KEY):
    """A one-file package with a SIGNATURE over its files."""
    files = {"handler.py": source.encode()}
    manifest = "\n".join("%s  %s" % (hashlib.sha256(files[path]).hexdigest(), path) for path in sorted(files))
    signature = hmac.new(key, manifest.encode(), hashlib.sha256).hexdigest()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr("SIGNATURE", signature + "\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def guarded(server_factory):
    """A server of its own (admission hooks apply to the whole account), with a hook function and a
    function to change, both made before the hooks are set."""
    server = server_factory("admission")
    client = server.client()
    hook, target = support.unique_name("signer"), support.unique_name("app")
    for name, source in ((hook, HOOK), (target, answer("v1"))):
        client.create_function(
            FunctionName=name,
            Runtime=support.PYTHON_RUNTIME,
            Role=support.ROLE,
            Handler="handler.handler",
            Code={"ZipFile": support.python_zip(source)},
            Timeout=10,
        )
        support.wait_until_ready(client, name)
    return server, client, hook, target


def set_hooks(server, hook, *arguments):
    server.wisp_cli("admission", "set", hook, "--type", "FunctionCodeUpdated", "--type", "FunctionCreated", *arguments)


def refused(call, **arguments):
    with pytest.raises(ClientError) as raised:
        call(**arguments)
    error = raised.value.response
    assert error["Error"]["Code"] == "AccessDeniedException", error
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    return error["Error"]["Message"]


def test_unsigned_code_is_refused_with_the_hooks_reason_and_nothing_changes(guarded):
    server, client, hook, target = guarded
    set_hooks(server, hook)
    try:
        before = client.get_function_configuration(FunctionName=target)
        message = refused(client.update_function_code, FunctionName=target, ZipFile=support.python_zip(answer("v2")))
        assert "code is not signed: add a SIGNATURE file" in message, message
        assert hook in message and "FunctionCodeUpdated" in message
        after = client.get_function_configuration(FunctionName=target)
        assert after["CodeSha256"] == before["CodeSha256"] and after["RevisionId"] == before["RevisionId"]
        assert support.invoke(client, target)[1] == "v1"

        # Signed with another key: the hook sees the files' digests and refuses.
        forged = signed_zip(answer("v2"), key=b"someone-else")
        message = refused(client.update_function_code, FunctionName=target, ZipFile=forged)
        assert "SIGNATURE does not match the code" in message

        # Properly signed: the change goes through.
        good = signed_zip(answer("v2"))
        updated = client.update_function_code(FunctionName=target, ZipFile=good)
        assert updated["CodeSha256"] == support.code_sha256(good)
        assert support.invoke(client, target)[1] == "v2"

        # A refused creation leaves no function behind.
        name = support.unique_name("unsigned")
        message = refused(
            client.create_function,
            FunctionName=name,
            Runtime=support.PYTHON_RUNTIME,
            Role=support.ROLE,
            Handler="handler.handler",
            Code={"ZipFile": support.python_zip(answer("x"))},
        )
        assert "code is not signed" in message
        support.expect_error("ResourceNotFoundException", 404, client.get_function, FunctionName=name)

        # Types the hook was not given are not asked about.
        client.update_function_configuration(FunctionName=target, Timeout=11)

        # Only the allowed change wrote a lifecycle event.
        status, _, body = support.signed_request(server, "GET", "/wisp/v1/events?limit=1000&type=FunctionCodeUpdated")
        updates = [event for event in json.loads(body)["Events"] if event["Resource"].endswith(":function:" + target)]
        assert [event["After"]["CodeSha256"] for event in updates] == [support.code_sha256(good)]
    finally:
        server.wisp_cli("admission", "rm")


def test_a_hook_function_can_always_be_fixed_and_a_failing_hook_fails_closed(guarded):
    server, client, hook, target = guarded
    set_hooks(server, hook, "--timeout", "2")
    try:
        good = signed_zip(answer("v3"))
        # Changing the hook itself bypasses the hooks, even with unsigned code.
        client.update_function_code(FunctionName=hook, ZipFile=support.python_zip(BROKEN_HOOK))
        message = refused(client.update_function_code, FunctionName=target, ZipFile=good)
        assert "the hook failed" in message and "hook is broken" in message, message

        client.update_function_code(FunctionName=hook, ZipFile=support.python_zip(SLOW_HOOK))
        message = refused(client.update_function_code, FunctionName=target, ZipFile=good)
        assert "did not answer within 2 s" in message, message

        client.update_function_code(FunctionName=hook, ZipFile=support.python_zip(answer("yes")))
        message = refused(client.update_function_code, FunctionName=target, ZipFile=good)
        assert "not {" in message and "fail closed" in message, message

        client.update_function_code(FunctionName=hook, ZipFile=support.python_zip(HOOK))
        client.update_function_code(FunctionName=target, ZipFile=good)
        assert support.invoke(client, target)[1] == "v3"
    finally:
        server.wisp_cli("admission", "rm")
    # Without hooks, unsigned code is accepted again.
    client.update_function_code(FunctionName=target, ZipFile=support.python_zip(answer("v4")))
    assert support.invoke(client, target)[1] == "v4"


def test_the_admission_configuration_is_checked(guarded):
    server, client, hook, target = guarded
    for arguments, words in [
        (["no-such-function"], "cannot be used"),
        ([hook, "--type", "FunctionCreatd"], "unknown event type"),
        ([hook, "--type", "InstanceStarted"], "the admissible types are"),
        ([hook, "--timeout", "0"], "out of range"),
    ]:
        result = server.wisp_cli("admission", "set", *arguments, check=False)
        assert result.returncode != 0 and "InvalidParameterValueException" in result.stderr, result.stderr
        assert words in result.stderr, result.stderr
    missing = server.wisp_cli("admission", "get", check=False)
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr
    set_hooks(server, hook)
    try:
        shown = json.loads(server.wisp_cli("admission", "get").stdout)
        assert shown["Hooks"] == [{"FunctionName": hook, "Types": ["FunctionCodeUpdated", "FunctionCreated"]}]
        assert shown["TimeoutSeconds"] == 10
    finally:
        server.wisp_cli("admission", "rm")


def test_hooks_guard_configuration_aliases_and_deletion(guarded):
    server, client, hook, _ = guarded
    name = support.unique_name("protected")
    client.create_function(
        FunctionName=name,
        Runtime=support.PYTHON_RUNTIME,
        Role=support.ROLE,
        Handler="handler.handler",
        Code={"ZipFile": support.python_zip(answer("p"))},
        Environment={"Variables": {"protected": "true"}},
        Publish=True,
    )
    client.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    kinds = ["FunctionConfigurationUpdated", "VersionPublished", "AliasUpdated", "AliasDeleted", "FunctionDeleted"]
    server.wisp_cli("admission", "set", hook, *[argument for kind in kinds for argument in ("--type", kind)])
    try:
        # The hook sees the configuration the change would produce.
        message = refused(client.update_function_configuration, FunctionName=name, Timeout=45)
        assert "a timeout over 30 s needs review (asked for 45)" in message, message
        assert client.get_function_configuration(FunctionName=name)["Timeout"] == 3
        client.update_function_configuration(FunctionName=name, Timeout=20)
        assert client.publish_version(FunctionName=name)["Version"] == "2"
        client.update_alias(FunctionName=name, Name="prod", FunctionVersion="2")

        message = refused(client.delete_alias, FunctionName=name, Name="prod")
        assert "the prod alias is protected" in message and "AliasDeleted" in message, message
        assert client.get_alias(FunctionName=name, Name="prod")["FunctionVersion"] == "2"

        message = refused(client.delete_function, FunctionName=name)
        assert "the function is protected" in message, message
        assert client.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
    finally:
        server.wisp_cli("admission", "rm")
    client.delete_function(FunctionName=name)
    support.expect_error("ResourceNotFoundException", 404, client.get_function, FunctionName=name)
