//! `wisp verify`: checks a receipt offline, with no server — its Ed25519 signature under a
//! trusted public key and, when given, that the input and output files hash to its digests.
//!
//! Trust: with `--keys` (a saved copy of `GET /wisp/v1/keys`, as `wisp keys --save` writes it) the
//! key is the published one the receipt names, and a receipt that ends after its key was retired is
//! refused. Without `--keys` the public key embedded in the receipt is used: that proves the receipt
//! is intact, not who signed it, and the command says so.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Parser;
use wisp_types::receipt::{PublicKeyInfo, Receipt, decode_public_key};

/// `wisp verify`'s own arguments.
#[derive(Parser)]
#[command(
    name = "wisp verify",
    about = "Check a receipt offline: its Ed25519 signature and, when given, the input and output it covers"
)]
struct VerifyArgs {
    /// The receipt, as `wisp receipt ID` printed it.
    receipt: PathBuf,
    /// The request payload that was sent.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The response (or error document) that came back.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The server's public keys, saved by `wisp keys --save FILE`; without it the receipt's
    /// embedded key is used, which proves the receipt intact but not who signed it.
    #[arg(long)]
    keys: Option<PathBuf>,
}

/// The arguments after `verify` when it is the command (global options may come before it).
pub fn verify_arguments(arguments: Vec<String>) -> Option<Vec<String>> {
    let mut index = 1;
    while index < arguments.len() {
        match arguments[index].as_str() {
            "--endpoint" | "--data" | "--region" | "--output" => index += 2,
            option if option.starts_with("--") && option.contains('=') => index += 1,
            "verify" => return Some(arguments[index + 1..].to_vec()),
            _ => return None,
        }
    }
    None
}

/// Parses `wisp verify`'s arguments, verifies, prints what was verified; exit code 0 when it holds.
pub fn run_verify(arguments: Vec<String>) -> anyhow::Result<i32> {
    let arguments =
        VerifyArgs::parse_from(std::iter::once("wisp verify".to_string()).chain(arguments));
    for line in verify(
        &arguments.receipt,
        arguments.input,
        arguments.output,
        arguments.keys,
    )? {
        println!("{line}");
    }
    Ok(0)
}

/// How long after a key's retirement a receipt it signed may end (an invocation that ended while
/// the key rotated is signed by the old key a few milliseconds later).
const RETIREMENT_GRACE_MS: i64 = 1000;

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} file {}", path.display()))
}

/// Reads a key list: `{"Keys": [...]}` as the server answers it, or a bare array.
fn read_keys(path: &Path) -> anyhow::Result<Vec<PublicKeyInfo>> {
    let value: serde_json::Value = serde_json::from_slice(&read(path, "keys")?)
        .with_context(|| format!("keys file {} is not JSON", path.display()))?;
    let list = value.get("Keys").cloned().unwrap_or(value);
    serde_json::from_value(list).with_context(|| {
        format!(
            "keys file {} is not a key list (save one with `wisp keys --save FILE`)",
            path.display()
        )
    })
}

/// Verifies a receipt; returns the lines to print, or the precise reason it fails.
pub fn verify(
    receipt_path: &Path,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    keys: Option<PathBuf>,
) -> anyhow::Result<Vec<String>> {
    let receipt: Receipt = serde_json::from_slice(&read(receipt_path, "receipt")?)
        .with_context(|| format!("{} is not a receipt", receipt_path.display()))?;
    let fail = |reason: String| -> anyhow::Error {
        anyhow::anyhow!(
            "receipt {} does not verify: {reason}",
            receipt_path.display()
        )
    };
    let mut lines = Vec::new();
    match keys {
        Some(keys_path) => {
            let keys = read_keys(&keys_path)?;
            let Some(published) = keys.iter().find(|key| key.key_id == receipt.key_id) else {
                return Err(fail(format!(
                    "key {} is not in {}",
                    receipt.key_id,
                    keys_path.display()
                )));
            };
            let key = decode_public_key(&published.key_id, &published.public_key)
                .map_err(|error| fail(error.to_string()))?;
            receipt
                .verify_with(&key)
                .map_err(|error| fail(error.to_string()))?;
            if let Some(retired) = &published.retired {
                let retired_ms = chrono::DateTime::parse_from_rfc3339(retired)
                    .map_err(|error| {
                        fail(format!(
                            "key {} has an unreadable retirement time {retired:?}: {error}",
                            published.key_id
                        ))
                    })?
                    .timestamp_millis();
                if receipt.body.ended_ms as i64 > retired_ms + RETIREMENT_GRACE_MS {
                    return Err(fail(format!(
                        "key {} was retired at {retired}, before the invocation ended (ended_ms {})",
                        published.key_id, receipt.body.ended_ms
                    )));
                }
            }
            lines.push(format!(
                "signature: ok, key {} published in {}{}",
                receipt.key_id,
                keys_path.display(),
                match &published.retired {
                    Some(retired) => format!(" (retired {retired})"),
                    None => " (current)".to_string(),
                }
            ));
        }
        None => {
            receipt
                .verify_embedded()
                .map_err(|error| fail(error.to_string()))?;
            lines.push(format!(
                "signature: ok, key {} embedded in the receipt (not checked against the server's published keys; pass --keys)",
                receipt.key_id
            ));
        }
    }
    if let Some(path) = input {
        receipt
            .check_input(&read(&path, "input")?)
            .map_err(|error| fail(error.to_string()))?;
        lines.push(format!(
            "input: ok, {} hashes to {}",
            path.display(),
            receipt.body.input_sha256
        ));
    }
    if let Some(path) = output {
        receipt
            .check_output(&read(&path, "output")?)
            .map_err(|error| fail(error.to_string()))?;
        lines.push(format!(
            "output: ok, {} hashes to {}",
            path.display(),
            receipt.body.output_sha256
        ));
    }
    let body = &receipt.body;
    lines.push(format!(
        "invocation {} of {} version {} (code sha256 {}) in account {}: {}, {} to {} (unix ms)",
        body.request_id,
        body.function_arn,
        body.version,
        body.code_sha256,
        body.account,
        body.status,
        body.started_ms,
        body.ended_ms
    ));
    Ok(lines)
}

/// Fails unless the reply is what `wisp verify` can read (used by `wisp receipt`).
pub fn check_receipt_json(value: &serde_json::Value) -> anyhow::Result<()> {
    if serde_json::from_value::<Receipt>(value.clone()).is_err() {
        bail!("the server's answer is not a receipt");
    }
    Ok(())
}
