//! Background writers for invocation records, function logs, receipts and instance lifecycle events.
//!
//! The invoke path only pushes into an unbounded channel; a writer task drains it and appends
//! whole batches to the store's `Log` (one group commit for many records, at most one per
//! [`FLUSH_INTERVAL`]), so no invocation waits for a disk. Each record is also kept under its request
//! id in the `Kv` (`inv/{account}/{request id}`, with the function's result) for the retention period,
//! so a caller can fetch it later; async invocations write their queued and running states there too.
//! Records and logs of the last interval may be lost on `kill -9`; they are observations, not accepted
//! work (an accepted event itself is in its queue, and its record is written again when it runs).
//! [`Sinks::flush`] waits until everything pushed before it is written (the engine's shutdown uses it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use wisp_store::{Kv, Log};
use wisp_types::{InvocationRecord, result_value};

/// Topic of a function's invocation records.
pub fn records_topic(account: &str, function: &str) -> String {
    format!("invocations/{account}/{function}")
}

/// Topic of a function's log text.
pub fn logs_topic(account: &str, function: &str) -> String {
    format!("logs/{account}/{function}")
}

/// Key of one invocation's record by request id.
pub fn record_key(account: &str, request_id: &str) -> String {
    format!("inv/{account}/{request_id}")
}

enum Item {
    /// A finished run: listed in the function's records topic and kept by request id.
    Record(InvocationRecord, Option<Bytes>),
    /// A state an invocation passes through (queued, running): kept by request id only.
    State(InvocationRecord, Option<Bytes>),
    /// Raw text as the function wrote it; readers decode it leniently.
    Log { topic: String, text: Vec<u8> },
    /// A receipt to hash, sign and keep by request id (see [`crate::receipts`]).
    Receipt(Box<crate::receipts::PendingReceipt>),
    /// An instance lifecycle event for the account's `wisp.lifecycle` topic.
    Lifecycle(Box<wisp_control::lifecycle::LifecycleEvent>),
    /// Answered once everything sent before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Cheap handle to push records and log text; cloning shares the writer.
#[derive(Clone)]
pub struct Sinks {
    sender: mpsc::UnboundedSender<Item>,
}

impl Sinks {
    /// Starts the writer on a thread of its own, so encoding and storing records never takes
    /// time from the thread that serves invocations. The writer ends when every `Sinks` is dropped.
    /// Records by request id are kept for `retention` (none are kept when it is zero).
    pub fn start(
        log: Arc<dyn Log>,
        kv: Arc<dyn Kv>,
        retention: Duration,
    ) -> std::io::Result<Sinks> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("wisp-records".into())
            .spawn(move || runtime.block_on(write_batches(log, kv, retention, receiver)))?;
        Ok(Sinks { sender })
    }

    /// A finished run and what the function returned (its response or error document).
    pub fn record(&self, record: InvocationRecord, result: Option<Bytes>) {
        let _ = self.sender.send(Item::Record(record, result));
    }

    /// An invocation's current state, replacing its earlier one under its request id.
    pub fn state(&self, record: InvocationRecord, result: Option<Bytes>) {
        let _ = self.sender.send(Item::State(record, result));
    }

    /// A receipt to sign and store.
    pub(crate) fn receipt(&self, receipt: crate::receipts::PendingReceipt) {
        let _ = self.sender.send(Item::Receipt(Box::new(receipt)));
    }

    /// Resolves once everything pushed before this call is written (at server shutdown).
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.sender.send(Item::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// An observed lifecycle event (an instance started or stopped).
    pub fn lifecycle(&self, event: wisp_control::lifecycle::LifecycleEvent) {
        let _ = self.sender.send(Item::Lifecycle(Box::new(event)));
    }

    pub fn log(&self, account: &str, function: &str, text: impl Into<Vec<u8>>) {
        let text = text.into();
        if !text.is_empty() {
            let _ = self.sender.send(Item::Log {
                topic: logs_topic(account, function),
                text,
            });
        }
    }
}

/// How long the writer gathers items before it writes them: one commit per interval at most, so a
/// busy server spends its disk's fsyncs on accepted work, not on observations.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
const MAX_BATCH: usize = 16 * 1024;

async fn write_batches(
    log: Arc<dyn Log>,
    kv: Arc<dyn Kv>,
    retention: Duration,
    mut receiver: mpsc::UnboundedReceiver<Item>,
) {
    let mut buffer = Vec::new();
    while receiver.recv_many(&mut buffer, MAX_BATCH).await > 0 {
        tokio::time::sleep(FLUSH_INTERVAL).await;
        while buffer.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(item) => buffer.push(item),
                Err(_) => break,
            }
        }
        let mut batches: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        // The last state of each invocation in this batch; earlier ones are superseded.
        let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
        let mut receipts = Vec::new();
        let mut flushes = Vec::new();
        for item in buffer.drain(..) {
            match item {
                Item::Record(record, result) => {
                    batches
                        .entry(records_topic(&record.account, &record.function_name))
                        .or_default()
                        .push(serde_json::to_vec(&record).expect("records serialise"));
                    if !retention.is_zero() {
                        keep_by_id(&mut by_id, record, result);
                    }
                }
                Item::State(record, result) => {
                    if !retention.is_zero() {
                        keep_by_id(&mut by_id, record, result);
                    }
                }
                Item::Log { topic, text } => batches.entry(topic).or_default().push(text),
                Item::Receipt(pending) => receipts.extend(pending.sign()),
                Item::Lifecycle(event) => batches
                    .entry(wisp_control::lifecycle::lifecycle_topic(&event.account))
                    .or_default()
                    .push(event.encode()),
                Item::Flush(done) => flushes.push(done),
            }
        }
        // Records expire after the retention period; receipts are kept.
        let by_id = by_id
            .into_iter()
            .map(|(key, value)| (key, value, Some(retention)));
        let receipts = receipts.into_iter().map(|(key, value)| (key, value, None));
        let puts = by_id.chain(receipts).map(|(key, value, ttl)| {
            let kv = kv.clone();
            async move {
                if let Err(error) = kv.put(&key, value, ttl).await {
                    tracing::warn!(%error, key, "could not store an invocation record");
                }
            }
        });
        // All topics at once: the store commits concurrent appends together.
        let writes = batches.into_iter().map(|(topic, payloads)| {
            let log = log.clone();
            async move {
                if let Err(error) = log.append_batch(&topic, payloads).await {
                    tracing::warn!(%error, topic, "could not store invocation records or logs");
                }
            }
        });
        futures::future::join(
            futures::future::join_all(writes),
            futures::future::join_all(puts),
        )
        .await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn keep_by_id(
    by_id: &mut HashMap<String, Vec<u8>>,
    record: InvocationRecord,
    result: Option<Bytes>,
) {
    let (key, value) = by_id_entry(record, result);
    by_id.insert(key, value);
}

/// The key and value under which a record is kept by request id.
pub fn by_id_entry(mut record: InvocationRecord, result: Option<Bytes>) -> (String, Vec<u8>) {
    record.result = result.map(|bytes| result_value(&bytes));
    (
        record_key(&record.account, &record.request_id),
        serde_json::to_vec(&record).expect("records serialise"),
    )
}
