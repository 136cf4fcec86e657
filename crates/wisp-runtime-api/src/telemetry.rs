//! The Telemetry API (`PUT /2022-07-01/telemetry`): an extension subscribes to the `platform`,
//! `function` and `extension` streams and the platform POSTs them, as JSON arrays of events, to the
//! extension's HTTP listener inside the sandbox, batched by Lambda's buffering settings
//! (`maxItems`, `maxBytes`, `timeoutMs`, with Lambda's defaults and limits).
//!
//! Events come from the engine through [`crate::ExtensionsHandle::emit`]; the connection into the
//! sandbox's network namespace is the engine's [`Connector`]. One delivery task per subscription
//! holds at most one batch and one HTTP connection; events that arrive while its queue is full are
//! dropped and counted in a `platform.logsDropped` event. This module never blocks an async thread
//! (connecting runs on the blocking pool) and costs nothing until an extension subscribes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::sync::mpsc;

/// Connects to a port on the sandbox's own loopback (blocking; run on the blocking pool).
pub type Connector = Arc<dyn Fn(u16) -> std::io::Result<std::net::TcpStream> + Send + Sync>;

/// Lambda's buffering limits: (default, minimum, maximum).
pub const MAX_ITEMS: (u64, u64, u64) = (1000, 1000, 10_000);
pub const MAX_BYTES: (u64, u64, u64) = (256 * 1024, 256 * 1024, 1024 * 1024);
pub const TIMEOUT_MS: (u64, u64, u64) = (1000, 25, 30_000);
/// Events one subscription may have waiting before new ones are dropped.
const QUEUE_LIMIT: usize = 20_000;

/// Which streams a subscription wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    pub platform: bool,
    pub function: bool,
    pub extension: bool,
}

impl Streams {
    pub(crate) fn wants(&self, event_type: &str) -> bool {
        match event_type {
            "function" => self.function,
            "extension" => self.extension,
            _ => self.platform,
        }
    }
}

/// A validated subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub streams: Streams,
    pub max_items: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Port of the extension's listener on the sandbox's loopback.
    pub port: u16,
    /// Path and query of the destination URI.
    pub path: String,
    /// Host of the destination URI, sent as the `Host` header.
    pub host: String,
}

/// Checks a subscribe body; the error is the message of a 400.
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, String> {
    let document: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| format!("the subscribe body must be JSON: {error}"))?;
    match document
        .get("schemaVersion")
        .and_then(|value| value.as_str())
    {
        Some("2022-07-01" | "2022-12-13" | "2025-01-29") => {}
        Some(other) => {
            return Err(format!(
                "schemaVersion {other:?} is not supported; use \"2022-12-13\""
            ));
        }
        None => return Err("schemaVersion is required, e.g. \"2022-12-13\"".into()),
    }
    let mut streams = Streams::default();
    let types = document
        .get("types")
        .and_then(|value| value.as_array())
        .ok_or("types is required: a list of \"platform\", \"function\", \"extension\"")?;
    for kind in types {
        match kind.as_str() {
            Some("platform") => streams.platform = true,
            Some("function") => streams.function = true,
            Some("extension") => streams.extension = true,
            _ => {
                return Err(format!(
                    "unknown telemetry type {kind}; expected \"platform\", \"function\" or \"extension\""
                ));
            }
        }
    }
    let buffering = document.get("buffering");
    let setting = |name: &str, (default, min, max): (u64, u64, u64)| -> Result<u64, String> {
        match buffering.and_then(|buffering| buffering.get(name)) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(value) => match value.as_u64() {
                Some(number) if (min..=max).contains(&number) => Ok(number),
                _ => Err(format!(
                    "buffering.{name} must be a whole number from {min} to {max}; got {value}"
                )),
            },
        }
    };
    let max_items = setting("maxItems", MAX_ITEMS)? as usize;
    let max_bytes = setting("maxBytes", MAX_BYTES)? as usize;
    let timeout = Duration::from_millis(setting("timeoutMs", TIMEOUT_MS)?);
    let destination = document
        .get("destination")
        .ok_or("destination is required: {\"protocol\":\"HTTP\",\"URI\":\"http://sandbox.localdomain:PORT/PATH\"}")?;
    match destination.get("protocol").and_then(|value| value.as_str()) {
        Some("HTTP") => {}
        Some("TCP") => {
            return Err("destination protocol TCP is not supported by Wisp; use HTTP".to_string());
        }
        _ => return Err("destination.protocol must be \"HTTP\"".into()),
    }
    let uri = destination
        .get("URI")
        .and_then(|value| value.as_str())
        .ok_or("destination.URI is required, e.g. \"http://sandbox.localdomain:8080/telemetry\"")?;
    let (host, port, path) = parse_destination(uri)?;
    Ok(Subscription {
        streams,
        max_items,
        max_bytes,
        timeout,
        port,
        path,
        host,
    })
}

/// Splits `http://HOST:PORT/PATH`, where HOST is the sandbox itself.
fn parse_destination(uri: &str) -> Result<(String, u16, String), String> {
    let invalid = || {
        format!(
            "destination.URI {uri:?} must be http://sandbox.localdomain:PORT/PATH (a listener inside the sandbox)"
        )
    };
    let rest = uri.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':').ok_or_else(invalid)?;
    if !matches!(
        host,
        "sandbox.localdomain" | "sandbox" | "localhost" | "127.0.0.1" | "0.0.0.0"
    ) {
        return Err(invalid());
    }
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if port == 0 {
        return Err(invalid());
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// One subscriber's queue, held by the registry.
pub(crate) struct Subscriber {
    pub(crate) streams: Streams,
    sender: mpsc::Sender<Item>,
    dropped: std::sync::atomic::AtomicU64,
}

pub(crate) enum Item {
    Event(serde_json::Value),
    /// Deliver what is buffered now (the instance is being stopped).
    Flush,
}

impl Subscriber {
    /// Starts the delivery task of `subscription`.
    pub(crate) fn start(subscription: Subscription, connector: Connector) -> Subscriber {
        let (sender, receiver) = mpsc::channel(QUEUE_LIMIT);
        let streams = subscription.streams;
        tokio::spawn(deliver(subscription, receiver, connector));
        Subscriber {
            streams,
            sender,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn send(&self, event: serde_json::Value) {
        use std::sync::atomic::Ordering;
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 && self.sender.capacity() > 1 {
            let note = event_at(
                "platform.logsDropped",
                serde_json::json!({
                    "reason": "the extension did not keep up with the telemetry stream",
                    "droppedRecords": dropped,
                    "droppedBytes": 0,
                }),
            );
            if self.sender.try_send(Item::Event(note)).is_ok() {
                self.dropped.fetch_sub(dropped, Ordering::Relaxed);
            }
        }
        if self.sender.try_send(Item::Event(event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn flush(&self) {
        let _ = self.sender.try_send(Item::Flush);
    }
}

/// A telemetry event of `event_type` made now.
pub(crate) fn event_at(event_type: &str, record: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "type": event_type,
        "record": record,
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn deliver(
    subscription: Subscription,
    mut receiver: mpsc::Receiver<Item>,
    connector: Connector,
) {
    let mut batch: Vec<serde_json::Value> = Vec::new();
    let mut bytes = 0usize;
    let mut due: Option<tokio::time::Instant> = None;
    let mut connection: Option<Sender> = None;
    loop {
        let flush_now = tokio::select! {
            item = receiver.recv() => match item {
                Some(Item::Event(event)) => {
                    bytes += event.to_string().len() + 1;
                    batch.push(event);
                    due.get_or_insert_with(|| tokio::time::Instant::now() + subscription.timeout);
                    batch.len() >= subscription.max_items || bytes >= subscription.max_bytes
                }
                Some(Item::Flush) => true,
                None => {
                    if !batch.is_empty() {
                        post(&subscription, &connector, &mut connection, std::mem::take(&mut batch)).await;
                    }
                    return;
                }
            },
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() => true,
        };
        if flush_now && !batch.is_empty() {
            post(
                &subscription,
                &connector,
                &mut connection,
                std::mem::take(&mut batch),
            )
            .await;
            bytes = 0;
            due = None;
        }
    }
}

/// POSTs one batch, reconnecting once if the connection was lost; a batch that cannot be delivered
/// is dropped (the extension's listener is gone or refuses it).
async fn post(
    subscription: &Subscription,
    connector: &Connector,
    connection: &mut Option<Sender>,
    batch: Vec<serde_json::Value>,
) {
    let body = Bytes::from(serde_json::Value::Array(batch).to_string());
    for attempt in 0..2 {
        if connection.as_ref().is_none_or(|sender| sender.is_closed()) {
            *connection = connect(subscription.port, connector).await;
        }
        let Some(sender) = connection.as_mut() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if sender.ready().await.is_err() {
            *connection = None;
            continue;
        }
        let request = Request::post(&subscription.path)
            .header(
                "host",
                format!("{}:{}", subscription.host, subscription.port),
            )
            .header("content-type", "application/json")
            .body(Full::new(body.clone()));
        let Ok(request) = request else { return };
        match sender.send_request(request).await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                tracing::debug!(status = %response.status(), attempt, "telemetry listener refused a batch");
                if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, attempt, "telemetry delivery failed");
                *connection = None;
            }
        }
    }
}

async fn connect(port: u16, connector: &Connector) -> Option<Sender> {
    let connector = connector.clone();
    let stream = tokio::task::spawn_blocking(move || connector(port))
        .await
        .ok()?
        .ok()?;
    stream.set_nonblocking(true).ok()?;
    let _ = stream.set_nodelay(true);
    let stream = tokio::net::TcpStream::from_std(stream).ok()?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_take_lambdas_defaults_and_limits() {
        let parsed = parse_subscription(
            br#"{"schemaVersion":"2022-12-13","types":["platform","function"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:4243/in"}}"#,
        )
        .unwrap();
        assert_eq!(parsed.max_items, 1000);
        assert_eq!(parsed.max_bytes, 262_144);
        assert_eq!(parsed.timeout, Duration::from_millis(1000));
        assert_eq!((parsed.port, parsed.path.as_str()), (4243, "/in"));
        assert!(parsed.streams.platform && parsed.streams.function && !parsed.streams.extension);

        let cases = [
            (
                r#"{"types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1/"}}"#,
                "schemaVersion is required",
            ),
            (
                r#"{"schemaVersion":"2022-12-13","types":["logs"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1/"}}"#,
                "unknown telemetry type",
            ),
            (
                r#"{"schemaVersion":"2022-12-13","types":["platform"],"buffering":{"timeoutMs":10},"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1/"}}"#,
                "buffering.timeoutMs must be a whole number from 25 to 30000",
            ),
            (
                r#"{"schemaVersion":"2022-12-13","types":["platform"],"buffering":{"maxItems":20000},"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1/"}}"#,
                "buffering.maxItems must be a whole number from 1000 to 10000",
            ),
            (
                r#"{"schemaVersion":"2022-12-13","types":["platform"],"buffering":{"maxBytes":1000},"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1/"}}"#,
                "buffering.maxBytes must be a whole number from 262144 to 1048576",
            ),
            (
                r#"{"schemaVersion":"2022-12-13","types":["platform"],"destination":{"protocol":"TCP","URI":"sandbox.localdomain:1"}}"#,
                "TCP is not supported",
            ),
            (
                r#"{"schemaVersion":"2022-12-13","types":["platform"],"destination":{"protocol":"HTTP","URI":"http://example.com:80/"}}"#,
                "a listener inside the sandbox",
            ),
        ];
        for (body, message) in cases {
            let error = parse_subscription(body.as_bytes()).unwrap_err();
            assert!(error.contains(message), "{body}: {error}");
        }
    }
}
