"""Instance life cycle: warm reuse across configuration changes, replacement, isolation
between functions, and clean-up of the processes a function leaves behind."""

import threading
import time

import pytest

from support import (
    PYTHON_RUNTIME,
    ROLE,
    function_processes,
    function_zip,
    invoke,
    python_zip,
    unique_name,
    wait_for_no_processes,
    wait_until_ready,
)

ENVIRONMENT_SOURCE = "import os\n\ndef handler(event, context):\n    return os.environ.get('COLOUR')\n"


def test_environment_update_reaches_a_warm_function(lambda_client, make_function):
    name = make_function(python_zip(ENVIRONMENT_SOURCE), prefix="envwarm", Environment={"Variables": {"COLOUR": "red"}})[
        "FunctionName"
    ]
    assert invoke(lambda_client, name, {})[1] == "red"
    lambda_client.update_function_configuration(FunctionName=name, Environment={"Variables": {"COLOUR": "blue"}})
    wait_until_ready(lambda_client, name)
    assert invoke(lambda_client, name, {})[1] == "blue"


def test_published_version_keeps_its_environment(lambda_client, make_function):
    name = make_function(python_zip(ENVIRONMENT_SOURCE), prefix="envversion", Environment={"Variables": {"COLOUR": "red"}})[
        "FunctionName"
    ]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_configuration(FunctionName=name, Environment={"Variables": {"COLOUR": "blue"}})
    wait_until_ready(lambda_client, name)
    assert invoke(lambda_client, name, {}, Qualifier="1")[1] == "red"
    assert invoke(lambda_client, name, {})[1] == "blue"


@pytest.mark.slow
def test_timeout_update_applies_to_the_next_invoke(lambda_client, make_function):
    name = make_function(function_zip("py-sleep-forever"), prefix="timeoutupdate", Timeout=1)["FunctionName"]
    assert invoke(lambda_client, name, {"ok": True})[1] == {"ok": True}
    lambda_client.update_function_configuration(FunctionName=name, Timeout=2)
    wait_until_ready(lambda_client, name)
    started = time.time()
    response, payload = invoke(lambda_client, name, {})
    assert payload["errorType"] == "Sandbox.Timedout", payload
    assert "Task timed out after 2.00 seconds" in payload["errorMessage"], payload
    assert time.time() - started >= 1.9


def test_recreated_function_runs_its_new_code(lambda_client, make_function):
    name = unique_name("recreate")
    make_function(python_zip("def handler(event, context):\n    return 'old'\n"), FunctionName=name)
    assert invoke(lambda_client, name, {})[1] == "old"
    lambda_client.delete_function(FunctionName=name)
    make_function(python_zip("def handler(event, context):\n    return 'new'\n"), FunctionName=name)
    assert invoke(lambda_client, name, {})[1] == "new"


def test_alias_can_point_at_latest(lambda_client, make_function):
    name = make_function(python_zip("def handler(event, context):\n    return 'latest'\n"), prefix="aliaslatest")[
        "FunctionName"
    ]
    lambda_client.create_alias(FunctionName=name, Name="edge", FunctionVersion="$LATEST")
    response, payload = invoke(lambda_client, name, {}, Qualifier="edge")
    assert (payload, response["ExecutedVersion"]) == ("latest", "$LATEST")


def test_invoke_alias_arn(lambda_client, make_function):
    configuration = make_function(python_zip("def handler(event, context):\n    return 'aliased'\n"), prefix="aliasarn")
    name = configuration["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    alias = lambda_client.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    response, payload = invoke(lambda_client, alias["AliasArn"], {})
    assert (payload, response["ExecutedVersion"]) == ("aliased", "1")


def test_slow_function_does_not_delay_other_functions(lambda_client, make_function, healthy_function):
    name = make_function(function_zip("py-echo"), prefix="slowpoke", Timeout=10)["FunctionName"]
    invoke(lambda_client, name, {})
    slow = threading.Thread(target=invoke, args=(lambda_client, name, {"sleep": 3}))
    slow.start()
    time.sleep(0.3)
    started = time.time()
    invoke(lambda_client, healthy_function, {})
    elapsed = time.time() - started
    slow.join()
    assert elapsed < 1.5, elapsed


def test_function_printing_megabytes_of_logs_completes(lambda_client, make_function):
    name = make_function(function_zip("py-logs"), prefix="chatty", Timeout=30)["FunctionName"]
    response, payload = invoke(lambda_client, name, {"lines": 200000, "marker": "m" * 20})
    assert "FunctionError" not in response, payload
    assert payload == {"printed": 200000}
    assert invoke(lambda_client, name, {"lines": 1})[1] == {"printed": 1}


BACKGROUND_SOURCE = (
    "import subprocess\n\n"
    "def handler(event, context):\n"
    "    subprocess.Popen(['sleep', '300'])\n"
    "    return 'started'\n"
)


def test_background_process_does_not_break_the_next_invoke(lambda_client, make_function):
    name = make_function(python_zip(BACKGROUND_SOURCE), prefix="background")["FunctionName"]
    assert invoke(lambda_client, name, {})[1] == "started"
    assert invoke(lambda_client, name, {})[1] == "started"


def test_deleting_a_function_ends_its_processes(lambda_client, make_function):
    name = make_function(python_zip(BACKGROUND_SOURCE), prefix="deleted")["FunctionName"]
    invoke(lambda_client, name, {})
    assert function_processes(name)
    lambda_client.delete_function(FunctionName=name)
    assert wait_for_no_processes(name, timeout=15) == []


def test_timed_out_instance_is_replaced_with_its_children_gone(lambda_client, make_function):
    source = (
        "import subprocess, time\n\n"
        "def handler(event, context):\n"
        "    if event.get('hang'):\n"
        "        subprocess.Popen(['sleep', '300'])\n"
        "        time.sleep(60)\n"
        "    return 'fine'\n"
    )
    name = make_function(python_zip(source), prefix="hangkill", Timeout=1)["FunctionName"]
    invoke(lambda_client, name, {})
    before = set(function_processes(name))
    response, payload = invoke(lambda_client, name, {"hang": True})
    assert payload["errorType"] == "Sandbox.Timedout", payload
    deadline = time.time() + 10
    while before & set(function_processes(name)) and time.time() < deadline:
        time.sleep(0.1)
    assert not before & set(function_processes(name)), "processes of the timed-out instance survived"
    assert invoke(lambda_client, name, {})[1] == "fine"


@pytest.mark.slow
def test_idle_instances_are_stopped_after_the_idle_timeout(server_factory):
    server = server_factory("idle", extra_arguments=["--idle-timeout", "1"])
    client = server.client()
    name = unique_name("idle")
    client.create_function(
        FunctionName=name,
        Runtime=PYTHON_RUNTIME,
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": function_zip("py-echo")},
    )
    wait_until_ready(client, name)
    _, first = invoke(client, name, {})
    assert function_processes(name)
    assert wait_for_no_processes(name, timeout=20) == []
    _, second = invoke(client, name, {})
    assert second["instance"] != first["instance"]
    server.stop()
