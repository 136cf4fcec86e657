"""Verifiable receipts: signed by the server, fetched by request id, checked offline by `wisp verify`."""

import base64
import hashlib
import json
import os
import subprocess
import time

import pytest

from support import python_zip, signed_request, unique_name, wait_until_ready

ECHO = "import json\n\ndef handler(event, context):\n    return {'echo': event, 'n': len(json.dumps(event))}\n"
FAIL = "def handler(event, context):\n    raise ValueError('no')\n"
# An address where nothing listens: `wisp verify` must not need a server.
NO_SERVER = "http://127.0.0.1:9"


def create(client, source, name=None):
    name = name or unique_name("receipt")
    client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role="arn:aws:iam::000000000000:role/wisp",
        Handler="handler.handler",
        Code={"ZipFile": python_zip(source)},
    )
    wait_until_ready(client, name)
    return name


def invoke(client, name, payload):
    response = client.invoke(FunctionName=name, Payload=payload)
    return response["ResponseMetadata"]["RequestId"], response["Payload"].read()


def fetch_receipt(server, request_id, path, timeout=10):
    """`wisp receipt ID > path`, retried: receipts are stored a few milliseconds after the invocation."""
    deadline = time.time() + timeout
    while True:
        completed = server.wisp_cli("receipt", request_id, check=False)
        if completed.returncode == 0:
            path.write_text(completed.stdout)
            return json.loads(completed.stdout)
        if time.time() > deadline:
            raise AssertionError("no receipt for %s: %s" % (request_id, completed.stderr))
        time.sleep(0.1)


def verify(server, receipt, *arguments):
    """`wisp verify` with no server reachable and no credentials; returns the completed process."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "WISP_"))}
    return subprocess.run(
        [str(server.binary), "--endpoint", NO_SERVER, "--data", os.devnull, "verify", str(receipt), *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def with_one_byte_changed(data):
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return bytes(changed)


@pytest.fixture(scope="module")
def receipts_server(server_factory):
    return server_factory("receipts")


def test_a_genuine_receipt_verifies_offline_and_any_changed_byte_fails(receipts_server, tmp_path):
    server = receipts_server
    client = server.client()
    source = ECHO
    name = create(client, source)
    server.wisp_cli("receipts", name, "--on")
    assert json.loads(server.wisp_cli("--output", "json", "receipts", name).stdout) == {"Enabled": True}

    sent = b'{"order": 42, "item": "tea"}'
    request_id, answer = invoke(client, name, sent)
    receipt = fetch_receipt(server, request_id, tmp_path / "receipt.json")
    server.wisp_cli("keys", "--save", str(tmp_path / "keys.json"))
    (tmp_path / "input.json").write_bytes(sent)
    (tmp_path / "output.json").write_bytes(answer)

    account = client.get_function(FunctionName=name)["Configuration"]["FunctionArn"].split(":")[4]
    assert receipt["format"] == "wisp-receipt-v1"
    assert receipt["request_id"] == request_id
    assert receipt["account"] == account
    assert receipt["function_arn"].endswith(":function:" + name)
    assert receipt["version"] == "$LATEST"
    assert receipt["code_sha256"] == hashlib.sha256(python_zip(source)).hexdigest()
    assert receipt["input_sha256"] == hashlib.sha256(sent).hexdigest()
    assert receipt["output_sha256"] == hashlib.sha256(answer).hexdigest()
    assert receipt["status"] == "succeeded"
    assert receipt["started_ms"] <= receipt["ended_ms"]
    keys = json.loads((tmp_path / "keys.json").read_text())
    assert receipt["key_id"] == keys["Current"]
    assert all("secret" not in key and "private" not in json.dumps(key) for key in keys["Keys"])

    # From here on no server runs: everything is checked from files.
    server.stop()
    files = ["--input", str(tmp_path / "input.json"), "--output", str(tmp_path / "output.json")]
    ok = verify(server, tmp_path / "receipt.json", *files, "--keys", str(tmp_path / "keys.json"))
    assert ok.returncode == 0, ok.stderr
    assert "signature: ok, key %s" % receipt["key_id"] in ok.stdout
    assert "input: ok" in ok.stdout and "output: ok" in ok.stdout
    embedded = verify(server, tmp_path / "receipt.json", *files)
    assert embedded.returncode == 0, embedded.stderr
    assert "not checked against the server's published keys" in embedded.stdout

    (tmp_path / "input-changed.json").write_bytes(with_one_byte_changed(sent))
    (tmp_path / "output-changed.json").write_bytes(with_one_byte_changed(answer))
    changed_version = dict(receipt, version="1")
    (tmp_path / "version-changed.json").write_text(json.dumps(changed_version))
    signature = base64.b64decode(receipt["signature"])
    changed_signature = dict(receipt, signature=base64.b64encode(with_one_byte_changed(signature)).decode())
    (tmp_path / "signature-changed.json").write_text(json.dumps(changed_signature))
    keys_file = str(tmp_path / "keys.json")
    cases = [
        (tmp_path / "receipt.json", ["--input", str(tmp_path / "input-changed.json")], "input sha256"),
        (tmp_path / "receipt.json", ["--output", str(tmp_path / "output-changed.json")], "output sha256"),
        (tmp_path / "version-changed.json", [], "signature does not match"),
        (tmp_path / "signature-changed.json", [], "signature does not match"),
    ]
    for receipt_file, arguments, reason in cases:
        for trust in ([], ["--keys", keys_file]):
            failed = verify(server, receipt_file, *arguments, *trust)
            assert failed.returncode != 0, (receipt_file, arguments, trust, failed.stdout)
            assert reason in failed.stderr, failed.stderr
            assert "does not verify" in failed.stderr, failed.stderr


def test_a_rotated_key_still_verifies_old_receipts_and_new_ones_name_the_new_key(wisp, lambda_client, tmp_path):
    name = create(lambda_client, ECHO)
    try:
        wisp.wisp_cli("receipts", name, "--on")
        first_id, _ = invoke(lambda_client, name, b'{"round": 1}')
        old = fetch_receipt(wisp, first_id, tmp_path / "old.json")
        wisp.wisp_cli("keys", "--save", str(tmp_path / "keys-before.json"))

        rotated = json.loads(wisp.wisp_cli("--output", "json", "keys", "rotate").stdout)
        assert rotated["key_id"] != old["key_id"]
        wisp.wisp_cli("keys", "--save", str(tmp_path / "keys-after.json"))
        published = json.loads((tmp_path / "keys-after.json").read_text())
        assert published["Current"] == rotated["key_id"]
        by_id = {key["key_id"]: key for key in published["Keys"]}
        assert by_id[old["key_id"]]["retired"], by_id
        assert "retired" not in by_id[rotated["key_id"]]

        second_id, _ = invoke(lambda_client, name, b'{"round": 2}')
        new = fetch_receipt(wisp, second_id, tmp_path / "new.json")
        assert new["key_id"] == rotated["key_id"]

        after = str(tmp_path / "keys-after.json")
        old_ok = verify(wisp, tmp_path / "old.json", "--keys", after)
        assert old_ok.returncode == 0, old_ok.stderr
        assert "(retired " in old_ok.stdout
        new_ok = verify(wisp, tmp_path / "new.json", "--keys", after)
        assert new_ok.returncode == 0, new_ok.stderr
        # The key list saved before the rotation does not know the new key.
        unknown = verify(wisp, tmp_path / "new.json", "--keys", str(tmp_path / "keys-before.json"))
        assert unknown.returncode != 0
        assert "key %s is not in" % rotated["key_id"] in unknown.stderr
    finally:
        lambda_client.delete_function(FunctionName=name)


def test_receipts_off_answers_404_and_the_account_switch_covers_every_function(wisp, lambda_client, tmp_path):
    name = create(lambda_client, ECHO)
    failing = create(lambda_client, FAIL)
    try:
        request_id, _ = invoke(lambda_client, name, b"{}")
        time.sleep(0.3)
        status, _, body = signed_request(wisp, "GET", "/wisp/v1/receipts/" + request_id)
        assert status == 404, body
        assert json.loads(body)["Type"] == "User"
        assert "no receipt for invocation %s" % request_id in body.decode()
        missing = wisp.wisp_cli("receipt", request_id, check=False)
        assert missing.returncode != 0 and "no receipt for invocation" in missing.stderr

        # The account's switch turns receipts on for functions without their own, failures included.
        wisp.wisp_cli("receipts", "--on")
        try:
            assert json.loads(wisp.wisp_cli("--output", "json", "receipts").stdout) == {"Enabled": True}
            ok_id, _ = invoke(lambda_client, name, b"{}")
            failed_id, error_document = invoke(lambda_client, failing, b'{"x": 1}')
            assert fetch_receipt(wisp, ok_id, tmp_path / "ok.json")["status"] == "succeeded"
            failed = fetch_receipt(wisp, failed_id, tmp_path / "failed.json")
            assert failed["status"] == "failed"
            assert failed["output_sha256"] == hashlib.sha256(error_document).hexdigest()
        finally:
            wisp.wisp_cli("receipts", "--off")
        off_id, _ = invoke(lambda_client, name, b"{}")
        time.sleep(0.3)
        status, _, _ = signed_request(wisp, "GET", "/wisp/v1/receipts/" + off_id)
        assert status == 404
    finally:
        lambda_client.delete_function(FunctionName=name)
        lambda_client.delete_function(FunctionName=failing)


def test_async_events_get_receipts_too(wisp, lambda_client, tmp_path):
    name = create(lambda_client, ECHO)
    try:
        wisp.wisp_cli("receipts", name, "--on")
        sent = b'{"queued": true}'
        response = lambda_client.invoke(FunctionName=name, InvocationType="Event", Payload=sent)
        assert response["StatusCode"] == 202
        request_id = response["ResponseMetadata"]["RequestId"]
        receipt = fetch_receipt(wisp, request_id, tmp_path / "event.json", timeout=30)
        assert receipt["input_sha256"] == hashlib.sha256(sent).hexdigest()
        (tmp_path / "input.json").write_bytes(sent)
        ok = verify(wisp, tmp_path / "event.json", "--input", str(tmp_path / "input.json"))
        assert ok.returncode == 0, ok.stderr
    finally:
        lambda_client.delete_function(FunctionName=name)


def test_switches_name_missing_functions_and_rotation_is_for_the_root_account(wisp):
    missing = unique_name("missing")
    status, _, body = signed_request(wisp, "PUT", "/wisp/v1/functions/%s/receipts" % missing, b'{"Enabled": true}')
    assert status == 404, body
    assert missing in body.decode()
    status, _, body = signed_request(wisp, "PUT", "/wisp/v1/receipts-config", b'{"Enabled": "yes"}')
    assert status == 400, body
    # Unsigned requests never reach the keys; the published list needs no secret to read.
    status, _, _ = signed_request(wisp, "POST", "/wisp/v1/keys/rotate", sign=False)
    assert status == 403
    status, _, body = signed_request(wisp, "GET", "/wisp/v1/keys")
    assert status == 200
    assert all(set(key) <= {"key_id", "algorithm", "public_key", "created", "retired"} for key in json.loads(body)["Keys"])


def test_the_documented_flow_with_the_wisp_cli_alone(wisp, lambda_client, tmp_path):
    name = create(lambda_client, ECHO)
    try:
        wisp.wisp_cli("receipts", name, "--on")
        order = tmp_path / "order.json"
        order.write_bytes(b'{"sku": "A-1", "quantity": 3}')
        answer = tmp_path / "answer.json"
        request_id = wisp.wisp_cli("invoke", name, "--payload-file", str(order), "--response-file", str(answer)).stdout.strip()
        assert json.loads(answer.read_bytes())["echo"] == {"sku": "A-1", "quantity": 3}
        fetch_receipt(wisp, request_id, tmp_path / "receipt.json")
        wisp.wisp_cli("keys", "--save", str(tmp_path / "keys.json"))
        ok = verify(wisp, tmp_path / "receipt.json", "--input", str(order), "--output", str(answer), "--keys", str(tmp_path / "keys.json"))
        assert ok.returncode == 0, ok.stderr
        assert "invocation %s of " % request_id in ok.stdout
    finally:
        lambda_client.delete_function(FunctionName=name)


def test_a_third_party_verifies_a_receipt_from_the_documented_format_alone(wisp, lambda_client, tmp_path):
    """docs/RECEIPTS.md's recipe, with the `cryptography` package instead of Wisp's code."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name = create(lambda_client, ECHO)
    try:
        wisp.wisp_cli("receipts", name, "--on")
        sent = b'{"third": "party"}'
        request_id, answer = invoke(lambda_client, name, sent)
        receipt = fetch_receipt(wisp, request_id, tmp_path / "receipt.json")
        keys = json.loads(wisp.wisp_cli("--output", "json", "keys").stdout)
    finally:
        lambda_client.delete_function(FunctionName=name)

    names = ["key_id", "account", "function_arn", "version", "code_sha256", "request_id", "status",
             "input_sha256", "output_sha256", "started_ms", "ended_ms"]

    def signed_text(fields):
        return ("wisp-receipt-v1\n" + "".join("%s=%s\n" % (n, fields[n]) for n in names)).encode()

    published = {key["key_id"]: key for key in keys["Keys"]}
    raw = base64.b64decode(published[receipt["key_id"]]["public_key"])
    assert hashlib.sha256(raw).hexdigest()[:16] == receipt["key_id"]
    public_key = Ed25519PublicKey.from_public_bytes(raw)
    signature = base64.b64decode(receipt["signature"])
    public_key.verify(signature, signed_text(receipt))
    assert hashlib.sha256(sent).hexdigest() == receipt["input_sha256"]
    assert hashlib.sha256(answer).hexdigest() == receipt["output_sha256"]
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, signed_text(dict(receipt, status="failed")))
