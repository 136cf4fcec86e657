//! Background writers for invocation records and function logs.
//!
//! The invoke path only pushes into an unbounded channel; a writer task drains it and appends
//! whole batches to the store's `Log` (one group commit for many records, at most one per
//! [`FLUSH_INTERVAL`]), so no invocation waits for a disk. Records and logs of the last interval may
//! be lost on `kill -9`; they are observations, not accepted work.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use wisp_store::Log;
use wisp_types::InvocationRecord;

/// Topic of a function's invocation records.
pub fn records_topic(account: &str, function: &str) -> String {
    format!("invocations/{account}/{function}")
}

/// Topic of a function's log text.
pub fn logs_topic(account: &str, function: &str) -> String {
    format!("logs/{account}/{function}")
}

enum Item {
    Record(InvocationRecord),
    /// Raw text as the function wrote it; readers decode it leniently.
    Log {
        topic: String,
        text: Vec<u8>,
    },
}

/// Cheap handle to push records and log text; cloning shares the writer.
#[derive(Clone)]
pub struct Sinks {
    sender: mpsc::UnboundedSender<Item>,
}

impl Sinks {
    /// Starts the writer on a thread of its own, so encoding and storing records never takes
    /// time from the thread that serves invocations. The writer ends when every `Sinks` is dropped.
    pub fn start(log: Arc<dyn Log>) -> std::io::Result<Sinks> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("wisp-records".into())
            .spawn(move || runtime.block_on(write_batches(log, receiver)))?;
        Ok(Sinks { sender })
    }

    pub fn record(&self, record: InvocationRecord) {
        let _ = self.sender.send(Item::Record(record));
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

async fn write_batches(log: Arc<dyn Log>, mut receiver: mpsc::UnboundedReceiver<Item>) {
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
        for item in buffer.drain(..) {
            let (topic, payload) = match item {
                Item::Record(record) => (
                    records_topic(&record.account, &record.function_name),
                    serde_json::to_vec(&record).expect("records serialise"),
                ),
                Item::Log { topic, text } => (topic, text),
            };
            batches.entry(topic).or_default().push(payload);
        }
        // All topics at once: the store commits concurrent appends together.
        let writes = batches.into_iter().map(|(topic, payloads)| {
            let log = log.clone();
            async move {
                if let Err(error) = log.append_batch(&topic, payloads).await {
                    tracing::warn!(%error, topic, "could not store invocation records or logs");
                }
            }
        });
        futures::future::join_all(writes).await;
    }
}
