#!/usr/bin/env python3
"""Idempotency done by Wisp against idempotency done by the function itself, in the same run.

Starts `wisp serve --dev --function-network egress` (release build) on a fresh data directory and deploys
two Python functions that do the same trivial work:

- `wisp-idempotent`: the work alone; Wisp makes it idempotent (KeyJsonPath $.key);
- `diy-idempotent`: what people write today: a PostgreSQL put-if-absent of the key before the work
  (INSERT ... ON CONFLICT DO NOTHING) and an UPDATE storing the result after it, replaying a stored result
  when the key is taken. The connection is kept across invocations, as a tuned function would.

Each is invoked sequentially with a new key every time (first executions) and then with one key over and
over (replays), through boto3. Prints p50/p99 and the ratio of each to the DIY version.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth), slirp4netns, and pip access for pg8000.
Usage: python3 bench/idempotency_diy.py [--requests 500]
"""

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import boto3
import pg8000.native
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]

DIY = """
import json, os
import pg8000.native

connection = None

def handler(event, context):
    global connection
    if connection is None:
        connection = pg8000.native.Connection("postgres", host=os.environ["WISP_HOST_ADDRESS"], port=5432, database="postgres")
    claimed = connection.run("INSERT INTO %(table)s (key) VALUES (:key) ON CONFLICT DO NOTHING RETURNING key", key=event["key"])
    if not claimed:
        stored = connection.run("SELECT result FROM %(table)s WHERE key = :key", key=event["key"])
        return json.loads(stored[0][0]) if stored and stored[0][0] else {"busy": True}
    result = {"done": event["key"]}
    connection.run("UPDATE %(table)s SET result = :result WHERE key = :key", result=json.dumps(result), key=event["key"])
    return result
"""

PLAIN = "def handler(event, context):\n    return {'done': event['key']}\n"


def zip_dir(directory):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def measure(client, name, requests, key):
    samples = []
    for index in range(requests + 50):
        payload = json.dumps({"key": key(index)})
        started = time.perf_counter()
        response = client.invoke(FunctionName=name, Payload=payload)
        response["Payload"].read()
        assert "FunctionError" not in response, response
        if index >= 50:
            samples.append((time.perf_counter() - started) * 1e6)
    return samples


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--wisp", default=str(ROOT / "target/release/wisp"))
    arguments = parser.parse_args()

    table = "wisp_bench_keys_%s" % uuid.uuid4().hex[:8]
    database = pg8000.native.Connection("postgres", host="127.0.0.1", port=5432, database="postgres")
    database.run("CREATE TABLE %s (key text PRIMARY KEY, result text)" % table)
    scratch = Path(tempfile.mkdtemp(prefix="wisp-idempotency-bench-"))
    log = open(scratch / "wisp.log", "wb")
    server = subprocess.Popen(
        [arguments.wisp, "serve", "--dev", "--listen", "127.0.0.1:0", "--data", str(scratch / "data"), "--function-network", "egress"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        endpoint = None
        deadline = time.time() + 30
        while endpoint is None and time.time() < deadline:
            match = re.search(r"wisp listening on (http://\S+)", (scratch / "wisp.log").read_text())
            endpoint = match.group(1) if match else time.sleep(0.1)
        client = boto3.client(
            "lambda",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            config=Config(retries={"max_attempts": 0}),
        )
        code = scratch / "diy"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(code), "pg8000"], check=True)
        (code / "handler.py").write_text(DIY % {"table": table})
        for name, zip_bytes in [("diy-idempotent", zip_dir(code)), ("wisp-idempotent", None)]:
            if zip_bytes is None:
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w") as archive:
                    archive.writestr("handler.py", PLAIN)
                zip_bytes = buffer.getvalue()
            client.create_function(
                FunctionName=name, Runtime="python3.12", Role="arn:aws:iam::1:role/x", Handler="handler.handler", Code={"ZipFile": zip_bytes}
            )
        import urllib.request

        request = urllib.request.Request(
            endpoint + "/wisp/v1/functions/wisp-idempotent/idempotency",
            data=json.dumps({"KeyJsonPath": "$.key", "WindowSeconds": 3600}).encode(),
            method="PUT",
            headers={"Content-Type": "application/json", "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=0"},
        )
        urllib.request.urlopen(request).read()

        results = {}
        for name in ("diy-idempotent", "wisp-idempotent"):
            results[(name, "first")] = measure(client, name, arguments.requests, lambda index, name=name: "%s-%d" % (name, index))
            results[(name, "replay")] = measure(client, name, arguments.requests, lambda index, name=name: "%s-same" % name)
        print("%d sequential invokes each through boto3 (after 50 warm-up), python3.12, PostgreSQL on the host" % arguments.requests)
        print("%-46s %10s %10s %8s" % ("", "p50 µs", "p99 µs", "vs DIY"))
        for phase in ("first", "replay"):
            base = percentile(results[("diy-idempotent", phase)], 50)
            for name in ("diy-idempotent", "wisp-idempotent"):
                samples = results[(name, phase)]
                print("%-46s %10.0f %10.0f %7.2fx" % ("%s, %s" % (name, "first execution" if phase == "first" else "replay"), percentile(samples, 50), percentile(samples, 99), percentile(samples, 50) / base))
    finally:
        server.terminate()
        server.wait(timeout=30)
        database.run("DROP TABLE %s" % table)


if __name__ == "__main__":
    main()
