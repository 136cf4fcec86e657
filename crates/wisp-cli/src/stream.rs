//! `wisp invoke FN --stream`: calls InvokeWithResponseStream and writes each `PayloadChunk` to
//! stdout as it arrives (flushed at once), then reads `InvokeComplete`: its log tail goes to stderr
//! with `--log`, and its error, if any, ends the command with exit code 2.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;
use wisp_types::eventstream;

use crate::client::{Client, Reply, segment};

pub async fn invoke(
    client: &Client,
    function: &str,
    qualifier: Option<&str>,
    payload: Vec<u8>,
    log: bool,
) -> anyhow::Result<i32> {
    let mut path = format!(
        "/2021-11-15/functions/{}/response-streaming-invocations",
        segment(function)
    );
    if let Some(qualifier) = qualifier {
        path.push_str(&format!("?Qualifier={}", segment(qualifier)));
    }
    let mut headers = vec![("content-type", "application/json".to_string())];
    if log {
        headers.push(("x-amz-log-type", "Tail".to_string()));
    }
    let mut response = client
        .send_streaming(Method::POST, &path, &headers, payload)
        .await?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        bail!(
            "{}",
            Reply {
                status,
                headers,
                body
            }
            .error_line()
        );
    }
    let mut buffer: Vec<u8> = Vec::new();
    let mut stdout = std::io::stdout().lock();
    loop {
        while let Some((message, used)) =
            eventstream::decode(&buffer).context("the server's event stream is malformed")?
        {
            buffer.drain(..used);
            match message.header(":event-type") {
                Some("PayloadChunk") => {
                    stdout.write_all(&message.payload)?;
                    stdout.flush()?;
                }
                Some("InvokeComplete") => return complete(&message.payload, log),
                _ => {}
            }
        }
        match response
            .chunk()
            .await
            .context("the server closed the connection mid-stream")?
        {
            Some(bytes) => buffer.extend_from_slice(&bytes),
            None => bail!("the stream ended without InvokeComplete"),
        }
    }
}

/// Reads `InvokeComplete`: prints the log tail (with `--log`) and turns an error into exit code 2.
fn complete(document: &[u8], log: bool) -> anyhow::Result<i32> {
    let document: Value = serde_json::from_slice(document).context("InvokeComplete is not JSON")?;
    if log && let Some(tail) = document.get("LogResult").and_then(Value::as_str) {
        let text = base64::engine::general_purpose::STANDARD
            .decode(tail)
            .unwrap_or_default();
        eprint!("{}", String::from_utf8_lossy(&text));
    }
    match document.get("ErrorCode").and_then(Value::as_str) {
        Some(code) => {
            let details = document
                .get("ErrorDetails")
                .and_then(Value::as_str)
                .unwrap_or_default();
            eprintln!("{code}: {details}");
            Ok(2)
        }
        None => Ok(0),
    }
}
