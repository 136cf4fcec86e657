"""Layers: PublishLayerVersion and friends with boto3 and the aws CLI, and functions that use them.

A function's layers are merged read-only under /opt in the order the function lists them, so a
Python function imports modules from a layer's `python/` folder, and a later layer's file wins.
"""

import json

from support import expect_error, invoke, python_zip, unique_name, zip_files

LAYER_READER = """
import os


def handler(event, context):
    import shared
    out = {"value": shared.VALUE, "opt": sorted(os.listdir("/opt"))}
    try:
        import only_first
        out["only_first"] = only_first.VALUE
    except ImportError:
        out["only_first"] = None
    try:
        open("/opt/written", "w").write("x")
        out["opt_writable"] = True
    except OSError:
        out["opt_writable"] = False
    out["bin"] = open("/opt/bin/tool").read() if os.path.exists("/opt/bin/tool") else None
    return out
"""


def layer_zip(value, extra=None):
    files = {"python/shared.py": "VALUE = %r\n" % value}
    files.update(extra or {})
    return zip_files(files)


def publish(client, name, zip_bytes, **arguments):
    return client.publish_layer_version(LayerName=name, Content={"ZipFile": zip_bytes}, **arguments)


def test_layer_versions_are_numbered_listed_fetched_by_arn_and_deleted(lambda_client, account_id):
    name = unique_name("lib")
    first = publish(
        lambda_client,
        name,
        layer_zip("one"),
        Description="first",
        CompatibleRuntimes=["python3.12"],
        LicenseInfo="MIT",
    )
    assert first["Version"] == 1
    assert first["LayerArn"] == "arn:aws:lambda:us-east-1:%s:layer:%s" % (account_id, name)
    assert first["LayerVersionArn"] == first["LayerArn"] + ":1"
    assert first["Description"] == "first"
    assert first["CompatibleRuntimes"] == ["python3.12"]
    assert first["LicenseInfo"] == "MIT"
    assert first["Content"]["CodeSize"] == len(layer_zip("one"))
    second = publish(lambda_client, name, layer_zip("two"), CompatibleRuntimes=["nodejs20.x"])
    assert second["Version"] == 2

    got = lambda_client.get_layer_version(LayerName=name, VersionNumber=1)
    assert got["LayerVersionArn"] == first["LayerVersionArn"]
    assert got["Content"]["CodeSha256"] == first["Content"]["CodeSha256"]
    by_arn = lambda_client.get_layer_version_by_arn(Arn=second["LayerVersionArn"])
    assert by_arn["Version"] == 2

    versions = lambda_client.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [version["Version"] for version in versions] == [2, 1]
    python_only = lambda_client.list_layer_versions(LayerName=name, CompatibleRuntime="python3.12")
    assert [version["Version"] for version in python_only["LayerVersions"]] == [1]
    layers = {layer["LayerName"]: layer for layer in lambda_client.list_layers()["Layers"]}
    assert layers[name]["LatestMatchingVersion"]["Version"] == 2
    assert layers[name]["LayerArn"] == first["LayerArn"]

    lambda_client.delete_layer_version(LayerName=name, VersionNumber=1)
    expect_error("ResourceNotFoundException", 404, lambda_client.get_layer_version, LayerName=name, VersionNumber=1)
    expect_error("ResourceNotFoundException", 404, lambda_client.get_layer_version_by_arn, Arn=first["LayerVersionArn"])
    # Deleting again is not an error, and numbers are never reused.
    lambda_client.delete_layer_version(LayerName=name, VersionNumber=1)
    assert publish(lambda_client, name, layer_zip("three"))["Version"] == 3
    assert [v["Version"] for v in lambda_client.list_layer_versions(LayerName=name)["LayerVersions"]] == [3, 2]


def test_aws_cli_publishes_lists_and_gets_a_layer(wisp, tmp_path):
    name = unique_name("cli-lib")
    zip_path = tmp_path / "layer.zip"
    zip_path.write_bytes(layer_zip("cli"))
    published = json.loads(
        wisp.aws_cli(
            "lambda",
            "publish-layer-version",
            "--layer-name",
            name,
            "--zip-file",
            "fileb://%s" % zip_path,
            "--compatible-runtimes",
            "python3.12",
            "--output",
            "json",
        ).stdout
    )
    assert published["Version"] == 1
    listed = json.loads(wisp.aws_cli("lambda", "list-layers", "--output", "json").stdout)
    assert name in [layer["LayerName"] for layer in listed["Layers"]]
    got = json.loads(
        wisp.aws_cli(
            "lambda", "get-layer-version-by-arn", "--arn", published["LayerVersionArn"], "--output", "json"
        ).stdout
    )
    assert got["Content"]["CodeSha256"] == published["Content"]["CodeSha256"]
    wisp.aws_cli("lambda", "delete-layer-version", "--layer-name", name, "--version-number", "1")
    missing = wisp.aws_cli(
        "lambda", "get-layer-version", "--layer-name", name, "--version-number", "1", check=False
    )
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr, missing.stderr


def test_function_imports_a_module_from_a_layer(lambda_client, make_function):
    layer = publish(
        lambda_client,
        unique_name("pylib"),
        layer_zip("from-layer", {"bin/tool": ("tool v1\n", 0o755)}),
    )
    created = make_function(python_zip(LAYER_READER), prefix="uses-layer", Layers=[layer["LayerVersionArn"]])
    assert created["Layers"] == [{"Arn": layer["LayerVersionArn"], "CodeSize": layer["Content"]["CodeSize"]}]
    configuration = lambda_client.get_function_configuration(FunctionName=created["FunctionName"])
    assert configuration["Layers"] == created["Layers"]
    response, payload = invoke(lambda_client, created["FunctionName"])
    assert "FunctionError" not in response, payload
    assert payload["value"] == "from-layer"
    assert payload["opt"] == ["bin", "python"]
    assert payload["bin"] == "tool v1\n"
    assert payload["opt_writable"] is False


def test_node_function_requires_a_module_from_a_layer(lambda_client, make_function):
    layer = publish(
        lambda_client,
        unique_name("nodelib"),
        zip_files({"nodejs/node_modules/greeting/index.js": "module.exports = (n) => 'hi ' + n;\n"}),
    )
    source = "const greet = require('greeting');\nexports.handler = async (event) => greet(event.name);\n"
    name = make_function(
        zip_files({"index.js": source}),
        runtime="nodejs20.x",
        handler="index.handler",
        prefix="node-layer",
        Layers=[layer["LayerVersionArn"]],
    )["FunctionName"]
    response, payload = invoke(lambda_client, name, {"name": "Ada"})
    assert "FunctionError" not in response, payload
    assert payload == "hi Ada"


def test_later_layers_override_earlier_ones(lambda_client, make_function):
    first = publish(lambda_client, unique_name("first"), layer_zip("first", {"python/only_first.py": "VALUE = 1\n"}))
    second = publish(lambda_client, unique_name("second"), layer_zip("second"))
    name = make_function(
        python_zip(LAYER_READER),
        prefix="two-layers",
        Layers=[first["LayerVersionArn"], second["LayerVersionArn"]],
    )["FunctionName"]
    _, payload = invoke(lambda_client, name)
    assert payload["value"] == "second"
    assert payload["only_first"] == 1

    # The other order: the first layer's file now wins, and running instances are replaced.
    lambda_client.update_function_configuration(
        FunctionName=name, Layers=[second["LayerVersionArn"], first["LayerVersionArn"]]
    )
    _, payload = invoke(lambda_client, name)
    assert payload["value"] == "first"

    # An empty list removes the layers.
    configuration = lambda_client.update_function_configuration(FunctionName=name, Layers=[])
    assert "Layers" not in configuration
    response, payload = invoke(lambda_client, name)
    assert response.get("FunctionError") == "Unhandled", payload


def test_missing_layers_and_too_many_layers_are_refused(lambda_client, account_id, make_function):
    name = unique_name("lib")
    layer = publish(lambda_client, name, layer_zip("x"))
    missing = "arn:aws:lambda:us-east-1:%s:layer:%s:7" % (account_id, name)
    function_name = unique_name("refused")
    arguments = dict(
        FunctionName=function_name,
        Runtime="python3.12",
        Role="arn:aws:iam::123456789012:role/wisp-test",
        Handler="handler.handler",
        Code={"ZipFile": python_zip(LAYER_READER)},
    )
    error = expect_error(
        "InvalidParameterValueException", 400, lambda_client.create_function, Layers=[missing], **arguments
    )
    assert missing in error["Error"]["Message"]
    others = [publish(lambda_client, unique_name("many"), layer_zip(i))["LayerVersionArn"] for i in range(5)]
    error = expect_error(
        "InvalidParameterValueException",
        400,
        lambda_client.create_function,
        Layers=[layer["LayerVersionArn"]] + others,
        **arguments,
    )
    assert "at most 5" in error["Error"]["Message"]
    expect_error("ResourceNotFoundException", 404, lambda_client.get_function, FunctionName=function_name)

    name = make_function(python_zip(LAYER_READER), prefix="refused-update")["FunctionName"]
    expect_error(
        "InvalidParameterValueException",
        400,
        lambda_client.update_function_configuration,
        FunctionName=name,
        Layers=[missing],
    )
    assert "Layers" not in lambda_client.get_function_configuration(FunctionName=name)


def test_zip_slip_layer_is_refused(lambda_client):
    name = unique_name("slip")
    slip = zip_files({"python/ok.py": "x = 1\n", "../../../../tmp/wisp-layer-slip.py": "owned = True\n"})
    expect_error("InvalidParameterValueException", 400, publish, lambda_client, name, slip)
    expect_error("ResourceNotFoundException", 404, lambda_client.get_layer_version, LayerName=name, VersionNumber=1)
    expect_error("InvalidParameterValueException", 400, publish, lambda_client, name, b"not a zip")


def test_published_versions_keep_their_layers(lambda_client, make_function):
    old = publish(lambda_client, unique_name("v-old"), layer_zip("old"))
    new = publish(lambda_client, unique_name("v-new"), layer_zip("new"))
    name = make_function(python_zip(LAYER_READER), prefix="keeps", Layers=[old["LayerVersionArn"]])["FunctionName"]
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.update_function_configuration(FunctionName=name, Layers=[new["LayerVersionArn"]])
    _, latest = invoke(lambda_client, name)
    assert latest["value"] == "new"
    _, published = invoke(lambda_client, name, Qualifier=version)
    assert published["value"] == "old"
    configuration = lambda_client.get_function_configuration(FunctionName=name, Qualifier=version)
    assert [layer["Arn"] for layer in configuration["Layers"]] == [old["LayerVersionArn"]]
    # Deleting a layer version does not break the functions that already use it, as on Lambda.
    lambda_client.delete_layer_version(LayerName=old["LayerArn"].split(":")[-1], VersionNumber=1)
    _, published = invoke(lambda_client, name, Qualifier=version)
    assert published["value"] == "old"


def test_wisp_cli_publishes_lists_and_deploys_with_layers(wisp, lambda_client, tmp_path):
    layer_dir = tmp_path / "layer"
    (layer_dir / "python").mkdir(parents=True)
    (layer_dir / "python" / "shared.py").write_text("VALUE = 'cli'\n")
    layer_name = unique_name("cli-layer")
    published = wisp.wisp_cli("layer", "publish", layer_name, str(layer_dir))
    assert "published arn:aws:lambda:" in published.stdout, published.stdout
    arn = published.stdout.split()[1]
    assert arn.endswith(":layer:%s:1" % layer_name)
    listed = wisp.wisp_cli("layer", "ls")
    assert arn in listed.stdout
    assert arn in wisp.wisp_cli("layer", "ls", layer_name).stdout

    function_dir = tmp_path / "fn"
    function_dir.mkdir()
    (function_dir / "handler.py").write_text(LAYER_READER)
    name = unique_name("cli-layered")
    try:
        wisp.wisp_cli(
            "deploy", str(function_dir), "--name", name, "--runtime", "python3.12", "--handler", "handler.handler",
            "--layer", arn,
        )
        _, payload = invoke(lambda_client, name)
        assert payload["value"] == "cli"
        # Deploying again without --layer keeps the layers.
        wisp.wisp_cli("deploy", str(function_dir), "--name", name, "--runtime", "python3.12", "--handler", "handler.handler")
        assert [layer["Arn"] for layer in lambda_client.get_function_configuration(FunctionName=name)["Layers"]] == [arn]
    finally:
        lambda_client.delete_function(FunctionName=name)
