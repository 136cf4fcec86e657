//! `wisp layer publish NAME DIR|ZIP` and `wisp layer ls [NAME]`: layers (shared files a function
//! sees read-only under `/opt`) through Lambda's layer API.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, segment};

#[derive(clap::Subcommand)]
pub enum LayerCommand {
    /// Publish a new version of a layer from a directory (zipped for you) or a .zip file; its
    /// paths are what the function sees under /opt (python/…, nodejs/node_modules/…, bin/…, lib/…).
    Publish {
        name: String,
        path: PathBuf,
        #[arg(long)]
        description: Option<String>,
        /// A runtime the layer is meant for (repeatable); ListLayers can filter on it.
        #[arg(long = "compatible-runtime")]
        compatible_runtimes: Vec<String>,
        #[arg(long)]
        license: Option<String>,
    },
    /// List layers with their newest version, or the versions of one layer.
    Ls { name: Option<String> },
}

/// Runs a layer command; prints JSON when `json_output`.
pub async fn run(client: &Client, command: LayerCommand, json_output: bool) -> anyhow::Result<()> {
    let print = |value: &Value| {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )
    };
    match command {
        LayerCommand::Publish {
            name,
            path,
            description,
            compatible_runtimes,
            license,
        } => {
            let metadata = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let zip = if metadata.is_dir() {
                crate::deploy::zip_directory(&path)?
            } else {
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
            };
            let mut body = json!({
                "Content": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(&zip) },
                "CompatibleRuntimes": compatible_runtimes,
            });
            if let Some(description) = description {
                body["Description"] = description.into();
            }
            if let Some(license) = license {
                body["LicenseInfo"] = license.into();
            }
            let version = client
                .call(
                    Method::POST,
                    &format!("/2018-10-31/layers/{}/versions", segment(&name)),
                    Some(&body),
                )
                .await?
                .json()?;
            if json_output {
                print(&version);
            } else {
                println!(
                    "published {} ({} bytes, sha256 {})",
                    version["LayerVersionArn"].as_str().unwrap_or("?"),
                    version["Content"]["CodeSize"],
                    version["Content"]["CodeSha256"].as_str().unwrap_or("?"),
                );
            }
        }
        LayerCommand::Ls { name } => {
            let (path, field) = match &name {
                Some(name) => (
                    format!("/2018-10-31/layers/{}/versions", segment(name)),
                    "LayerVersions",
                ),
                None => ("/2018-10-31/layers".to_string(), "Layers"),
            };
            let mut items = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let mut page_path = format!("{path}?MaxItems=50");
                if let Some(marker) = &marker {
                    page_path.push_str(&format!("&Marker={}", segment(marker)));
                }
                let page = client.call(Method::GET, &page_path, None).await?.json()?;
                items.extend(page[field].as_array().cloned().unwrap_or_default());
                match page["NextMarker"].as_str() {
                    Some(next) => marker = Some(next.to_string()),
                    None => break,
                }
            }
            if json_output {
                print(&Value::Array(items));
            } else {
                println!("{:<8} {:<24}  ARN", "VERSION", "CREATED");
                for item in items {
                    let version = if name.is_some() {
                        &item
                    } else {
                        &item["LatestMatchingVersion"]
                    };
                    println!(
                        "{:<8} {:<24}  {}",
                        version["Version"],
                        version["CreatedDate"].as_str().unwrap_or("?"),
                        version["LayerVersionArn"].as_str().unwrap_or("?"),
                    );
                }
            }
        }
    }
    Ok(())
}
