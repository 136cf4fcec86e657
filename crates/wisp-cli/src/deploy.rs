//! `wisp deploy`: packs a directory (or takes a zip), reads the optional `wisp.toml` manifest, and
//! creates the function or, when it exists, updates its code and configuration.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Client, segment};

#[derive(clap::Args)]
pub struct DeployArgs {
    /// A directory (zipped for you) or a .zip file.
    path: PathBuf,
    /// Function name; defaults to the directory or zip file name.
    #[arg(long)]
    name: Option<String>,
    /// Runtime id (python3.12, nodejs20.x, provided.al2023, …); overrides the manifest.
    #[arg(long)]
    runtime: Option<String>,
    /// Handler (module.function for python, file.export for node); overrides the manifest.
    #[arg(long)]
    handler: Option<String>,
    /// Memory in MB (128–10240).
    #[arg(long)]
    memory: Option<u32>,
    /// Timeout in seconds (1–900).
    #[arg(long)]
    timeout: Option<u32>,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    environment: Vec<String>,
    /// Publish a version after deploying.
    #[arg(long)]
    publish: bool,
    #[arg(long)]
    description: Option<String>,
    /// A layer version ARN (repeatable), extracted under /opt in the order given; replaces the
    /// manifest's `layers`. Without it (and without `layers` in the manifest) an existing
    /// function keeps its layers.
    #[arg(long = "layer", value_name = "ARN")]
    layers: Vec<String>,
    #[command(flatten)]
    signature: SignatureArgs,
}

/// The flags that set a signature (`wisp deploy`, `wisp signature`); a side not given is unchecked.
#[derive(clap::Args, Default)]
pub struct SignatureArgs {
    /// A JSON Schema file (draft 2020-12) every event must match.
    #[arg(long, value_name = "FILE", conflicts_with = "input_message")]
    pub input_schema: Option<PathBuf>,
    /// A JSON Schema file every result must match.
    #[arg(long, value_name = "FILE", conflicts_with = "output_message")]
    pub output_schema: Option<PathBuf>,
    /// A .proto file (repeatable) declaring the protobuf messages; uploaded under its path as given
    /// when that is relative (imports name it so), else under its file name.
    #[arg(long = "proto", value_name = "FILE")]
    pub protos: Vec<PathBuf>,
    /// The protobuf message (package.Message) every event must map onto, in protobuf's JSON mapping.
    #[arg(long, value_name = "MESSAGE", requires = "protos")]
    pub input_message: Option<String>,
    /// The protobuf message every result must map onto.
    #[arg(long, value_name = "MESSAGE", requires = "protos")]
    pub output_message: Option<String>,
    /// The gRPC method (package.Service/Method, an rpc of the .proto files) that invokes the function.
    #[arg(long, value_name = "METHOD", requires_all = ["input_message", "output_message"])]
    pub grpc_method: Option<String>,
    /// The function takes and returns its protobuf messages as binary protobuf
    /// (application/x-protobuf) instead of protobuf's JSON mapping.
    #[arg(long)]
    pub binary_protobuf: bool,
}

/// The `wisp.toml` manifest; unknown keys are errors.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Manifest {
    runtime: Option<String>,
    handler: Option<String>,
    memory: Option<u32>,
    timeout: Option<u32>,
    description: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    layers: Option<Vec<String>>,
    /// Paths, relative to the directory, of the input and output JSON Schemas.
    input_schema: Option<PathBuf>,
    output_schema: Option<PathBuf>,
    /// Paths, relative to the directory, of `.proto` files (uploaded under those paths), and the
    /// protobuf messages and gRPC method of the signature.
    #[serde(default)]
    protos: Vec<PathBuf>,
    input_message: Option<String>,
    output_message: Option<String>,
    grpc_method: Option<String>,
    #[serde(default)]
    binary_protobuf: bool,
}

const MANIFEST: &str = "wisp.toml";

pub async fn deploy(client: &Client, args: DeployArgs) -> anyhow::Result<Value> {
    let path = &args.path;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (zip, manifest) = if metadata.is_dir() {
        let manifest_path = path.join(MANIFEST);
        let manifest = match std::fs::read_to_string(&manifest_path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is invalid", manifest_path.display()))?,
            Err(_) => Manifest::default(),
        };
        (zip_directory(path)?, manifest)
    } else {
        (
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            Manifest::default(),
        )
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => path
            .canonicalize()?
            .file_stem()
            .and_then(|stem| stem.to_str())
            .map(str::to_string)
            .context("cannot derive a function name from the path; pass --name")?,
    };
    let runtime = args
        .runtime
        .or(manifest.runtime)
        .context("no runtime: pass --runtime or set runtime in wisp.toml")?;
    let handler = args.handler.or(manifest.handler);
    let mut environment = manifest.environment;
    for pair in &args.environment {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?} must be NAME=VALUE"))?;
        environment.insert(key.to_string(), value.to_string());
    }
    let description = args.description.or(manifest.description);
    let memory = args.memory.or(manifest.memory);
    let timeout = args.timeout.or(manifest.timeout);
    let layers = if args.layers.is_empty() {
        manifest.layers
    } else {
        Some(args.layers)
    };
    let base = if metadata.is_dir() {
        path.clone()
    } else {
        PathBuf::from(".")
    };
    let given = args.signature;
    let from_manifest = |file: PathBuf| (base.join(&file), file);
    let protos: Vec<(PathBuf, PathBuf)> = if given.protos.is_empty() {
        manifest.protos.into_iter().map(from_manifest).collect()
    } else {
        given
            .protos
            .into_iter()
            .map(|file| (file.clone(), file))
            .collect()
    };
    let signature = read_signature(
        SignatureArgs {
            input_schema: given
                .input_schema
                .or(manifest.input_schema.map(|file| base.join(file))),
            output_schema: given
                .output_schema
                .or(manifest.output_schema.map(|file| base.join(file))),
            protos: Vec::new(),
            input_message: given.input_message.or(manifest.input_message),
            output_message: given.output_message.or(manifest.output_message),
            grpc_method: given.grpc_method.or(manifest.grpc_method),
            binary_protobuf: given.binary_protobuf || manifest.binary_protobuf,
        },
        &protos,
    )?;
    // A version published by this deploy must carry the new signature: publish after setting it.
    let publish_with_code = args.publish && signature.is_none();
    let zip_base64 = base64::engine::general_purpose::STANDARD.encode(&zip);

    let mut create = json!({
        "FunctionName": name,
        "Runtime": runtime,
        "Code": { "ZipFile": zip_base64 },
        "Environment": { "Variables": environment },
        "Publish": publish_with_code,
    });
    for (key, value) in [
        ("Handler", handler.clone().map(Value::from)),
        ("MemorySize", memory.map(Value::from)),
        ("Timeout", timeout.map(Value::from)),
        ("Description", description.clone().map(Value::from)),
        ("Layers", layers.clone().map(Value::from)),
    ] {
        if let Some(value) = value {
            create[key] = value;
        }
    }
    let body = serde_json::to_vec(&create)?;
    let reply = client
        .send(
            Method::POST,
            "/2015-03-31/functions",
            &[("content-type", "application/json".to_string())],
            body,
        )
        .await?;
    if reply.status == 201 {
        let created = reply.json()?;
        return finish(
            client,
            &name,
            signature,
            args.publish && !publish_with_code,
            created,
        )
        .await;
    }
    if reply.header("x-amzn-errortype") != Some("ResourceConflictException") {
        bail!("{}", reply.error_line());
    }
    // The function exists: update its configuration, then its code (and publish if asked).
    let function = segment(&name);
    let mut update = json!({ "Runtime": runtime, "Environment": { "Variables": create["Environment"]["Variables"] } });
    for (key, value) in [
        ("Handler", handler.map(Value::from)),
        ("MemorySize", memory.map(Value::from)),
        ("Timeout", timeout.map(Value::from)),
        ("Description", description.map(Value::from)),
        ("Layers", layers.map(Value::from)),
    ] {
        if let Some(value) = value {
            update[key] = value;
        }
    }
    client
        .call(
            Method::PUT,
            &format!("/2015-03-31/functions/{function}/configuration"),
            Some(&update),
        )
        .await?;
    let code = json!({ "ZipFile": create["Code"]["ZipFile"], "Publish": publish_with_code });
    let updated = client
        .call(
            Method::PUT,
            &format!("/2015-03-31/functions/{function}/code"),
            Some(&code),
        )
        .await?
        .json()?;
    finish(
        client,
        &name,
        signature,
        args.publish && !publish_with_code,
        updated,
    )
    .await
}

/// The signature the flags (or the manifest) give, if any. `protos` are (file to read, name to
/// upload it under); [`SignatureArgs::protos`] is ignored.
pub(crate) fn read_signature(
    args: SignatureArgs,
    protos: &[(PathBuf, PathBuf)],
) -> anyhow::Result<Option<Value>> {
    let has_message = args.input_message.is_some() || args.output_message.is_some();
    if args.input_schema.is_none() && args.output_schema.is_none() && !has_message {
        if !protos.is_empty() || args.binary_protobuf {
            bail!("--proto and --binary-protobuf need --input-message and/or --output-message");
        }
        return Ok(None);
    }
    let mut signature = json!({});
    for (side, file) in [("Input", args.input_schema), ("Output", args.output_schema)] {
        if let Some(file) = file {
            signature[side] = json!({ "JsonSchema": read_json(&file)? });
        }
    }
    if has_message {
        if protos.is_empty() {
            bail!("--input-message and --output-message need the .proto files: pass --proto FILE");
        }
        let mut files = serde_json::Map::new();
        for (file, name) in protos {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            files.insert(proto_name(name), Value::from(text));
        }
        for (side, message) in [
            ("Input", args.input_message),
            ("Output", args.output_message),
        ] {
            if let Some(message) = message {
                signature[side] = json!({ "Protobuf": { "Files": files, "Message": message } });
                if args.binary_protobuf {
                    signature[side]["Protobuf"]["Encoding"] = Value::from("Binary");
                }
            }
        }
    }
    if let Some(method) = args.grpc_method {
        signature["GrpcMethod"] = Value::from(method);
    }
    Ok(Some(signature))
}

/// A JSON file, with its name in any error.
pub(crate) fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// The name a .proto file is uploaded under: its relative path (with `/`), or its file name when the
/// path is absolute or climbs out with `..`.
fn proto_name(path: &Path) -> String {
    use std::path::Component;
    let plain = path
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if plain {
        path.components()
            .filter_map(|component| match component {
                Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/")
    } else {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Sets the signature, then publishes when that was held back for it; returns the configuration.
async fn finish(
    client: &Client,
    name: &str,
    signature: Option<Value>,
    publish: bool,
    config: Value,
) -> anyhow::Result<Value> {
    let Some(signature) = signature else {
        return Ok(config);
    };
    let function = segment(name);
    client
        .call(
            Method::PUT,
            &format!("/wisp/v1/functions/{function}/signature"),
            Some(&signature),
        )
        .await?;
    if publish {
        return client
            .call(
                Method::POST,
                &format!("/2015-03-31/functions/{function}/versions"),
                Some(&json!({})),
            )
            .await?
            .json();
    }
    client
        .call(
            Method::GET,
            &format!("/2015-03-31/functions/{function}/configuration"),
            None,
        )
        .await?
        .json()
}

/// Zips a directory, keeping executable bits; skips the manifest, VCS and cache folders.
pub(crate) fn zip_directory(root: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut pending = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            if matches!(
                name.to_str(),
                Some(".git" | "__pycache__" | "node_modules/.cache" | ".wisp")
            ) {
                continue;
            }
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    for file in files {
        let relative = file
            .strip_prefix(root)?
            .to_string_lossy()
            .replace('\\', "/");
        if relative == MANIFEST {
            continue;
        }
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode);
        writer.start_file(relative, options)?;
        writer.write_all(&std::fs::read(&file)?)?;
    }
    Ok(writer.finish()?.into_inner())
}
