"""Reserved concurrency: invokes beyond it are throttled with AWS's 429."""

import threading
import time

import pytest
from botocore.exceptions import ClientError

from support import expect_error, function_zip, invoke


def invoke_concurrently(client, name, payloads, stagger_seconds=0.5):
    """Start one invoke per payload, `stagger_seconds` apart; return their outcomes in order.

    Each outcome is ("ok", response, payload) or ("error", error response).
    """
    outcomes = [None] * len(payloads)

    def run(index):
        try:
            response, payload = invoke(client, name, payloads[index])
            outcomes[index] = ("ok", response, payload)
        except ClientError as error:
            outcomes[index] = ("error", error.response)

    threads = []
    for index in range(len(payloads)):
        thread = threading.Thread(target=run, args=(index,))
        thread.start()
        threads.append(thread)
        time.sleep(stagger_seconds)
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


@pytest.fixture
def reserved_one(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="reserved1", Timeout=10)["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    # Warm one instance, so the slow invoke below does not spend its time on a cold start.
    invoke(lambda_client, name, {})
    return name


@pytest.mark.slow
def test_reserved_concurrency_one_throttles_a_second_concurrent_invoke(lambda_client, reserved_one):
    first, second = invoke_concurrently(lambda_client, reserved_one, [{"sleep": 3}, {"sleep": 3}])
    assert first[0] == "ok" and "FunctionError" not in first[1], first
    assert second[0] == "error", second
    error = second[1]
    assert error["Error"]["Code"] == "TooManyRequestsException", error
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429, error


@pytest.mark.slow
def test_throttled_invoke_says_why_and_when_to_retry(lambda_client, reserved_one):
    _, second = invoke_concurrently(lambda_client, reserved_one, [{"sleep": 3}, {"sleep": 3}])
    assert second[0] == "error", second
    error = second[1]
    assert error.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded", error
    headers = error["ResponseMetadata"]["HTTPHeaders"]
    assert "retry-after" in headers, headers


@pytest.mark.slow
def test_invokes_within_reserved_concurrency_run_in_parallel(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="reserved2", Timeout=10)["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    started = time.time()
    outcomes = invoke_concurrently(lambda_client, name, [{"sleep": 2}, {"sleep": 2}], stagger_seconds=0)
    elapsed = time.time() - started
    assert [outcome[0] for outcome in outcomes] == ["ok", "ok"], outcomes
    assert outcomes[0][2]["instance"] != outcomes[1][2]["instance"]
    # Two 2-second invokes on two instances: well under the 4 s they would take in series.
    assert elapsed < 3.9, elapsed


@pytest.mark.slow
def test_throttled_function_serves_again_when_the_slot_frees(lambda_client, reserved_one):
    invoke_concurrently(lambda_client, reserved_one, [{"sleep": 2}, {"sleep": 0}])
    response, payload = invoke(lambda_client, reserved_one, {})
    assert response["StatusCode"] == 200 and "FunctionError" not in response, payload


def test_reserved_concurrency_zero_throttles_every_invoke(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="reserved0")["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    expect_error("TooManyRequestsException", 429, lambda_client.invoke, FunctionName=name, Payload=b"{}")
