"""A caller that hangs up does not cancel its invocation: it runs to the end, keeps its
concurrency slot until then, and is recorded, as on Lambda."""

import json
import time

import botocore.exceptions
import pytest

from support import expect_error, function_zip, invoke


def records(wisp, name):
    completed = wisp.wisp_cli("--output", "json", "invocations", name)
    return json.loads(completed.stdout)


@pytest.mark.slow
def test_invocation_outlives_a_caller_that_hangs_up(wisp, lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="hangup", Timeout=10)["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    invoke(lambda_client, name, {})  # warm, so the timing below is the function's own

    impatient = wisp.client(read_timeout=0.5)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.invoke(FunctionName=name, Payload=json.dumps({"sleep": 2}).encode())

    # The first invocation still holds the function's only slot.
    expect_error("TooManyRequestsException", 429, lambda_client.invoke, FunctionName=name, Payload=b"{}")

    deadline = time.time() + 15
    finished = []
    while time.time() < deadline and not finished:
        finished = [r for r in records(wisp, name) if r["duration_us"] >= 2_000_000]
        time.sleep(0.2)
    assert finished and finished[0]["status"] == "succeeded", records(wisp, name)
    # And the slot came back.
    response, payload = invoke(lambda_client, name, {})
    assert payload["event"] == {}
