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
    /// A JSON Schema file (draft 2020-12) every event must match; sets the function's signature
    /// together with --output-schema (a side not given is left unchecked).
    #[arg(long, value_name = "FILE")]
    input_schema: Option<PathBuf>,
    /// A JSON Schema file every result must match.
    #[arg(long, value_name = "FILE")]
    output_schema: Option<PathBuf>,
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
    let signature = read_signature(
        args.input_schema
            .or(manifest.input_schema.map(|file| base.join(file))),
        args.output_schema
            .or(manifest.output_schema.map(|file| base.join(file))),
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

/// The signature given by --input-schema / --output-schema (or the manifest), if any.
pub(crate) fn read_signature(
    input: Option<PathBuf>,
    output: Option<PathBuf>,
) -> anyhow::Result<Option<Value>> {
    if input.is_none() && output.is_none() {
        return Ok(None);
    }
    let mut signature = json!({});
    for (side, file) in [("Input", input), ("Output", output)] {
        if let Some(file) = file {
            signature[side] = json!({ "JsonSchema": read_json(&file)? });
        }
    }
    Ok(Some(signature))
}

/// A JSON file, with its name in any error.
pub(crate) fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
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
