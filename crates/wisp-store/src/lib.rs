//! Storage primitives for Wisp: [`Kv`], [`Log`] and [`Blobs`], their error type,
//! the conformance suite every backend must pass ([`conformance`]), the embedded backend ([`EmbeddedStore`]),
//! and a fault-injecting wrapper for tests ([`UnreliableStore`]).
//!
//! This crate must never know about NATS or any other concrete remote backend: those live in
//! their own crates (`wisp-store-nats`) and are named only by the composition root.
//! Nothing here knows what a function is; keys and topics are opaque strings.

pub mod conformance;
pub mod embedded;
pub mod unreliable;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use embedded::{EmbeddedOptions, EmbeddedStats, EmbeddedStore};
pub use unreliable::UnreliableStore;

/// A value stored under a key, with the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    /// Strictly increasing per store: every successful write of any key gets a new, larger revision.
    pub revision: u64,
}

/// A change seen by [`Kv::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    Put { key: String, entry: Entry },
    Deleted { key: String, revision: u64 },
}

/// One record of a [`Log`] topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the topic, starting at 1, strictly increasing, never reused.
    pub offset: u64,
    /// Milliseconds since the Unix epoch when the record was appended.
    pub timestamp_ms: u64,
    pub payload: Vec<u8>,
    /// How many times this record was handed to the consumer that read it (1 on first delivery).
    /// Always 1 for plain [`Log::read`].
    pub deliveries: u32,
}

/// A sha256 digest, as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(hex::encode(sha2::Sha256::digest(bytes)))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors of every store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// compare-and-set lost: the key's current revision is not the one expected.
    #[error("revision conflict on key {key:?}: expected {expected:?}, found {found:?}")]
    Conflict {
        key: String,
        expected: Option<u64>,
        found: Option<u64>,
    },
    /// the key, topic name or payload is not acceptable to the store.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// the disk or the backend failed; retrying may help.
    #[error("store i/o failed: {0}")]
    Io(String),
    /// the store's data is damaged or was written by an incompatible version.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether repeating the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Io(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A linearizable key-value map with revisions and per-key expiry.
///
/// Guarantees every implementation gives (checked by [`conformance`]):
/// - a write is durable when the call returns (survives `kill -9`; with fsync's power-loss semantics);
/// - operations on one key are linearizable; `compare_and_set` and `put_if_absent` are atomic;
/// - an entry whose TTL has passed is never returned by `get` or `scan` (removal from disk may be lazy);
/// - `scan` returns keys in byte order;
/// - keys are non-empty UTF-8 strings of at most 1024 bytes.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    async fn get(&self, key: &str) -> StoreResult<Option<Entry>>;

    /// Writes unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<u64>;

    /// Writes only if the key is absent (or expired). `Ok(None)` when it exists; `Ok(Some(revision))` when written.
    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<Option<u64>>;

    /// Writes only if the key's current revision equals `expected` (`None` = the key must be absent).
    /// Returns [`StoreError::Conflict`] otherwise.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<u64>;

    /// Removes the key; returns whether it existed.
    async fn delete(&self, key: &str) -> StoreResult<bool>;

    /// Removes the key only if its revision equals `expected`; [`StoreError::Conflict`] otherwise.
    async fn compare_and_delete(&self, key: &str, expected: u64) -> StoreResult<()>;

    /// Up to `limit` live entries whose key starts with `prefix` and sorts strictly after `start_after`, in key order.
    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Entry)>>;

    /// Changes to keys under `prefix` made after this call returns, in commit order.
    /// Expiry of a key is not reported. A watcher that falls too far behind sees its stream end (rather
    /// than silently miss events): re-read with `scan` and watch again.
    async fn watch(&self, prefix: &str) -> StoreResult<BoxStream<'static, KvEvent>>;
}

/// Append-only topics with named consumers.
///
/// Guarantees (checked by [`conformance`]):
/// - `append` is durable when it returns; concurrent appends are group-committed (one fsync for many);
/// - offsets in a topic start at 1 and strictly increase in append order;
/// - a named consumer receives each record at least once: a record handed out by `consume` and not
///   acked within its lease is handed out again (with `deliveries` incremented), also after a restart;
/// - acks are durable when the call returns.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends one record; returns its offset.
    async fn append(&self, topic: &str, payload: Vec<u8>) -> StoreResult<u64>;

    /// Appends records atomically, in order; returns their offsets.
    async fn append_batch(&self, topic: &str, payloads: Vec<Vec<u8>>) -> StoreResult<Vec<u64>>;

    /// Up to `limit` records with offset ≥ `from`, in order. Does not affect consumers.
    async fn read(&self, topic: &str, from: u64, limit: usize) -> StoreResult<Vec<Record>>;

    /// Offset of the last record (0 when the topic is empty or does not exist).
    async fn last_offset(&self, topic: &str) -> StoreResult<u64>;

    /// Up to `limit` records for `consumer` that are neither acked nor leased to it right now, in offset order;
    /// each returned record is leased for `lease`. Returns an empty vector when nothing is available.
    async fn consume(
        &self,
        topic: &str,
        consumer: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<Record>>;

    /// Marks a record as done for `consumer`; it is never delivered to that consumer again.
    /// Acking twice is harmless; acking an offset that was never appended is [`StoreError::Invalid`].
    async fn ack(&self, topic: &str, consumer: &str, offset: u64) -> StoreResult<()>;

    /// Removes records with offset < `before`. Offsets are never reused.
    async fn trim(&self, topic: &str, before: u64) -> StoreResult<()>;

    /// Resolves when a record is appended to `topic` after this call (or at once if one was appended since
    /// `after_offset`). Used to follow a topic without polling.
    async fn wait_for(&self, topic: &str, after_offset: u64) -> StoreResult<()>;
}

/// Content-addressed blobs: the name of a blob is the sha256 of its bytes.
///
/// Guarantees (checked by [`conformance`]): `put` is durable when it returns and idempotent; a blob is never
/// observed partially written; `get` of a digest returns exactly the bytes whose sha256 it is.
#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    async fn put(&self, bytes: Vec<u8>) -> StoreResult<Digest>;
    async fn get(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>>;
    async fn has(&self, digest: &Digest) -> StoreResult<bool>;
    async fn delete(&self, digest: &Digest) -> StoreResult<bool>;
}
