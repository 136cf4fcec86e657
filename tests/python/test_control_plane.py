"""The Lambda control plane through boto3: functions, code, configuration, versions, aliases."""

import os
import re
from collections import Counter

from support import (
    PYTHON_RUNTIME,
    code_sha256,
    expect_error,
    function_zip,
    invoke,
    python_zip,
    unique_name,
    wait_until_ready,
    zip_files,
)


def version_source(tag):
    return "def handler(event, context):\n    return {'version': %r}\n" % tag


def test_create_function_returns_its_configuration(lambda_client, make_function):
    code = function_zip("py-echo")
    configuration = make_function(code, prefix="create")
    name = configuration["FunctionName"]
    assert configuration["Runtime"] == PYTHON_RUNTIME
    assert configuration["Handler"] == "handler.handler"
    assert configuration["MemorySize"] == 128
    assert configuration["Timeout"] == 3
    assert configuration["Version"] == "$LATEST"
    assert configuration["CodeSize"] == len(code)
    assert configuration["CodeSha256"] == code_sha256(code)
    assert configuration["FunctionArn"].startswith("arn:aws:lambda:us-east-1:")
    assert configuration["FunctionArn"].endswith(":function:" + name)
    assert configuration.get("State", "Active") in ("Active", "Pending")


def test_get_function_returns_configuration_and_code(lambda_client, make_function):
    code = function_zip("py-echo")
    name = make_function(code, prefix="get")["FunctionName"]
    response = lambda_client.get_function(FunctionName=name)
    assert response["Configuration"]["FunctionName"] == name
    assert response["Configuration"]["CodeSha256"] == code_sha256(code)
    assert "Code" in response


def test_get_function_configuration_by_arn(lambda_client, make_function):
    configuration = make_function(function_zip("py-echo"), prefix="byarn")
    fetched = lambda_client.get_function_configuration(FunctionName=configuration["FunctionArn"])
    assert fetched["FunctionName"] == configuration["FunctionName"]


def test_list_functions_paginates_with_max_items_and_marker(lambda_client, make_function):
    code = function_zip("py-echo")
    prefix = unique_name("page")
    names = {make_function(code, FunctionName="%s-%d" % (prefix, index))["FunctionName"] for index in range(5)}

    seen = []
    marker = None
    pages = 0
    while True:
        arguments = {"MaxItems": 2}
        if marker:
            arguments["Marker"] = marker
        page = lambda_client.list_functions(**arguments)
        pages += 1
        assert len(page["Functions"]) <= 2
        seen.extend(function["FunctionName"] for function in page["Functions"])
        marker = page.get("NextMarker")
        if not marker:
            break
        assert pages < 1000, "pagination does not end"
    duplicates = [name for name, count in Counter(seen).items() if count > 1]
    assert not duplicates, duplicates
    assert names <= set(seen)
    assert pages >= 3


def test_update_function_code_changes_code_and_behaviour(lambda_client, make_function):
    first = python_zip(version_source("one"))
    second = python_zip(version_source("two"))
    name = make_function(first, prefix="code")["FunctionName"]
    assert invoke(lambda_client, name, {})[1] == {"version": "one"}

    updated = lambda_client.update_function_code(FunctionName=name, ZipFile=second)
    assert updated["CodeSha256"] == code_sha256(second)
    wait_until_ready(lambda_client, name)
    assert invoke(lambda_client, name, {})[1] == {"version": "two"}


def test_update_function_configuration_changes_memory_timeout_environment_and_storage(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="config")["FunctionName"]
    updated = lambda_client.update_function_configuration(
        FunctionName=name,
        MemorySize=256,
        Timeout=10,
        Environment={"Variables": {"GREETING": "Hola"}},
        EphemeralStorage={"Size": 1024},
    )
    assert updated["MemorySize"] == 256
    assert updated["Timeout"] == 10
    wait_until_ready(lambda_client, name)

    configuration = lambda_client.get_function_configuration(FunctionName=name)
    assert configuration["MemorySize"] == 256
    assert configuration["Timeout"] == 10
    assert configuration["Environment"]["Variables"] == {"GREETING": "Hola"}
    assert configuration["EphemeralStorage"]["Size"] == 1024

    _, payload = invoke(lambda_client, name, {})
    assert payload["env"]["GREETING"] == "Hola"
    assert str(payload["context"]["memory_limit_in_mb"]) == "256"
    assert 3000 < payload["context"]["remaining_ms"] <= 10000


def test_update_function_configuration_changes_handler(lambda_client, make_function):
    code = python_zip(
        "def handler(event, context):\n    return 'first'\n\n"
        "def other(event, context):\n    return 'second'\n"
    )
    name = make_function(code, prefix="handler")["FunctionName"]
    assert invoke(lambda_client, name, {})[1] == "first"
    lambda_client.update_function_configuration(FunctionName=name, Handler="handler.other")
    wait_until_ready(lambda_client, name)
    assert invoke(lambda_client, name, {})[1] == "second"


def test_publish_version_and_list_versions_by_function(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="versions")["FunctionName"]
    first = lambda_client.publish_version(FunctionName=name, Description="first")
    assert first["Version"] == "1"
    assert first["FunctionArn"].endswith(":function:%s:1" % name)

    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(version_source("two")))
    wait_until_ready(lambda_client, name)
    second = lambda_client.publish_version(FunctionName=name)
    assert second["Version"] == "2"

    versions = [version["Version"] for version in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]

    response, payload = invoke(lambda_client, name, {}, Qualifier="1")
    assert payload == {"version": "one"}
    assert response["ExecutedVersion"] == "1"


def test_publish_version_without_changes_returns_the_same_version(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="samever")["FunctionName"]
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "1"
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "1"


def test_published_version_keeps_its_code_after_latest_changes(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="immutable")["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(version_source("two")))
    wait_until_ready(lambda_client, name)
    version = lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert version["Version"] == "1"
    assert invoke(lambda_client, name, {}, Qualifier="1")[1] == {"version": "one"}
    assert invoke(lambda_client, name, {})[1] == {"version": "two"}


def test_alias_create_get_update_list_delete(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="alias")["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(version_source("two")))
    wait_until_ready(lambda_client, name)
    lambda_client.publish_version(FunctionName=name)

    created = lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="prod")
    assert created["Name"] == "live"
    assert created["FunctionVersion"] == "1"
    assert created["AliasArn"].endswith(":function:%s:live" % name)

    fetched = lambda_client.get_alias(FunctionName=name, Name="live")
    assert fetched["FunctionVersion"] == "1"
    assert fetched["Description"] == "prod"

    updated = lambda_client.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert updated["FunctionVersion"] == "2"
    response, payload = invoke(lambda_client, name, {}, Qualifier="live")
    assert payload == {"version": "two"}
    assert response["ExecutedVersion"] == "2"

    aliases = lambda_client.list_aliases(FunctionName=name)["Aliases"]
    assert [(alias["Name"], alias["FunctionVersion"]) for alias in aliases] == [("live", "2")]

    lambda_client.delete_alias(FunctionName=name, Name="live")
    expect_error("ResourceNotFoundException", 404, lambda_client.get_alias, FunctionName=name, Name="live")


def test_alias_routing_config_sends_invokes_to_both_versions(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="weights")["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(version_source("two")))
    wait_until_ready(lambda_client, name)
    lambda_client.publish_version(FunctionName=name)

    alias = lambda_client.create_alias(
        FunctionName=name,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.5}

    executed = Counter()
    for _ in range(40):
        response, payload = invoke(lambda_client, name, {}, Qualifier="canary")
        version = response["ExecutedVersion"]
        executed[version] += 1
        assert payload == {"version": {"1": "one", "2": "two"}[version]}
    assert set(executed) == {"1", "2"}, executed


def test_alias_with_unknown_version_is_refused(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="badalias")["FunctionName"]
    expect_error(
        "ResourceNotFoundException",
        404,
        lambda_client.create_alias,
        FunctionName=name,
        Name="live",
        FunctionVersion="7",
    )


def test_delete_function_removes_it(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="delete")["FunctionName"]
    lambda_client.delete_function(FunctionName=name)
    expect_error("ResourceNotFoundException", 404, lambda_client.get_function, FunctionName=name)
    expect_error("ResourceNotFoundException", 404, lambda_client.invoke, FunctionName=name)
    names = [function["FunctionName"] for function in lambda_client.list_functions(MaxItems=50)["Functions"]]
    assert name not in names


def test_put_function_concurrency_is_reported_by_get_function(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="reserved")["FunctionName"]
    response = lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert response["ReservedConcurrentExecutions"] == 5
    assert lambda_client.get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"] == 5


def test_last_modified_uses_lambda_timestamp_format(make_function):
    configuration = make_function(function_zip("py-echo"), prefix="lastmodified")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", configuration["LastModified"]), configuration[
        "LastModified"
    ]


def test_boto3_waiters_complete(lambda_client, make_function):
    name = make_function(function_zip("py-echo"), prefix="waiters")["FunctionName"]
    fast = {"Delay": 1, "MaxAttempts": 10}
    lambda_client.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig=fast)
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=fast)
    lambda_client.update_function_configuration(FunctionName=name, Timeout=5)
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=fast)
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.get_waiter("published_version_active").wait(FunctionName=name, Qualifier=version, WaiterConfig=fast)


def test_create_function_with_a_10_mb_zip(lambda_client, make_function):
    filler = os.urandom(10 * 1024 * 1024)
    code = zip_files({"handler.py": "def handler(event, context):\n    return 'big'\n", "filler.bin": filler})
    assert len(code) > 10 * 1024 * 1024
    configuration = make_function(code, prefix="bigzip")
    assert configuration["CodeSize"] == len(code)
    assert invoke(lambda_client, configuration["FunctionName"], {})[1] == "big"


def test_list_functions_lists_a_function_once_whatever_its_versions(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="listonce")["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(version_source("two")))
    wait_until_ready(lambda_client, name)
    lambda_client.publish_version(FunctionName=name)
    listed = []
    for page in lambda_client.get_paginator("list_functions").paginate():
        listed.extend(function["FunctionName"] for function in page["Functions"])
    assert listed.count(name) == 1
    entry_versions = [
        function["Version"]
        for page in lambda_client.get_paginator("list_functions").paginate()
        for function in page["Functions"]
        if function["FunctionName"] == name
    ]
    assert entry_versions == ["$LATEST"]


def test_delete_function_with_qualifier_deletes_only_that_version(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="delversion")["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(version_source("two")))
    wait_until_ready(lambda_client, name)
    lambda_client.publish_version(FunctionName=name)

    lambda_client.delete_function(FunctionName=name, Qualifier="1")
    versions = [version["Version"] for version in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "2"]
    expect_error("ResourceNotFoundException", 404, lambda_client.invoke, FunctionName=name, Qualifier="1")
    assert invoke(lambda_client, name, {}, Qualifier="2")[1] == {"version": "two"}


def test_deleting_a_version_an_alias_uses_is_a_conflict(lambda_client, make_function):
    name = make_function(python_zip(version_source("one")), prefix="delaliased")["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    expect_error("ResourceConflictException", 409, lambda_client.delete_function, FunctionName=name, Qualifier="1")
    assert invoke(lambda_client, name, {}, Qualifier="live")[1] == {"version": "one"}
