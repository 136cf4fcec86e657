//! The embedded backend: [`Kv`], [`Log`] and [`Blobs`] in one local directory, with no external service.
//!
//! Layout of the data directory:
//! - `store.redb`: one [redb] database holding the key-value map, the log topics and consumer state;
//! - `blobs/<first 2 hex>/<sha256>`: one file per blob.
//!
//! How it works:
//! - **Every write goes through one writer thread.** Callers queue a job and await its answer; the thread
//!   drains everything queued (up to [`EmbeddedOptions::max_batch`]), applies it in *one* redb write
//!   transaction, commits it with one fsync (`Durability::Immediate`), and only then answers each caller.
//!   That is the group commit: concurrent appends, puts and acks share an fsync, and a caller is never told
//!   "done" before its write is on disk. Jobs in a batch are applied one after another, so compare-and-set
//!   stays linearizable.
//! - Reads run on tokio's blocking pool against redb read transactions (MVCC snapshots of the last commit).
//! - Kv entries are `key → (revision, expires_at_ms, value)`; a global revision counter lives in a meta
//!   table. Expired entries are filtered out by every read, so TTL is correct without the sweeper; the
//!   sweeper (a tokio task holding only a `Weak` reference) just reclaims space through an expiry index.
//! - Kv watchers are fed from a broadcast channel by the writer thread after each commit, in commit order.
//! - Log records are keyed by `(topic, offset)`; the last offset of each topic is kept separately so that
//!   trimming never lets an offset be reused.
//! - Consumer state. **Durable:** acks (an "everything up to here is acked" floor per consumer plus the
//!   out-of-order acks above it) and, per delivered-but-unacked record, how many times it was delivered —
//!   a record that crashes the process therefore still has its count raised, so a retry limit holds across
//!   crash loops. **In memory only:** lease deadlines. Leases are held by tasks of this process, which a
//!   restart ends, so after a restart every unacked record is available at once, with its delivery count.
//!
//! This module must never block a tokio worker on disk I/O (redb is synchronous: it runs on the writer
//! thread or on the blocking pool), never answer a write before its commit, and never expose partially
//! written blobs (they are written to a temporary file, fsync'd, then renamed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::BoxStream;
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{broadcast, oneshot, watch};

use crate::{Blobs, Digest, Entry, Kv, KvEvent, Log, Record, StoreError, StoreResult};

/// Version of the on-disk format; a store written with another version is refused as corrupt.
const FORMAT_VERSION: u64 = 1;
/// Longest key, topic or consumer name accepted, in bytes.
const MAX_NAME_BYTES: usize = 1024;
/// How many expired keys one sweep removes at most, so a sweep never holds the writer for long.
const SWEEP_LIMIT: usize = 1000;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// key → (revision, expires_at_ms or 0 for never, value)
const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
/// (expires_at_ms, key) → (): lets the sweeper find expired keys without a full scan.
const KV_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("kv_expiry");
/// (topic, offset) → (timestamp_ms, payload)
const LOG_RECORDS: TableDefinition<(&str, u64), (u64, &[u8])> = TableDefinition::new("log_records");
/// topic → last offset ever assigned (kept after trim so offsets are never reused)
const LOG_TOPICS: TableDefinition<&str, u64> = TableDefinition::new("log_topics");
/// (topic, consumer) → every offset ≤ this is acked
const LOG_ACK_FLOORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("log_ack_floors");
/// (topic, consumer, offset) → (): acks above the floor, received out of order
const LOG_ACKS: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("log_acks");
/// (topic, consumer, offset) → times delivered, for delivered records not yet acked
const LOG_DELIVERIES: TableDefinition<(&str, &str, u64), u32> =
    TableDefinition::new("log_deliveries");

const META_FORMAT_VERSION: &str = "format_version";
const META_KV_REVISION: &str = "kv_revision";

/// Options of the embedded backend.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The data directory (`./.wisp` or `$WISP_DATA` by convention). Created if missing.
    pub dir: PathBuf,
    /// How often expired Kv entries are removed from disk. `Duration::ZERO` disables the sweeper
    /// (expired entries are still never returned).
    pub sweep_interval: Duration,
    /// Most write jobs committed together in one transaction (one fsync).
    pub max_batch: usize,
    /// How many Kv events a watcher may fall behind before its stream ends.
    pub watch_capacity: usize,
}

impl EmbeddedOptions {
    /// Options with defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> EmbeddedOptions {
        EmbeddedOptions {
            dir: dir.into(),
            sweep_interval: Duration::from_secs(30),
            max_batch: 4096,
            watch_capacity: 4096,
        }
    }
}

/// Counters of the writer thread, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Write transactions committed (each one fsync).
    pub commits: u64,
    /// Write jobs applied (appends, puts, acks…); `jobs / commits` is the mean group size.
    pub jobs: u64,
}

/// [`Kv`], [`Log`] and [`Blobs`] in one local directory. See the module documentation.
pub struct EmbeddedStore {
    dir: PathBuf,
    blobs_dir: PathBuf,
    db: Arc<Database>,
    /// `None` only while dropping.
    writer: Option<Writer>,
    kv_events: broadcast::Sender<KvEvent>,
    signals: Arc<Signals>,
}

struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// State shared between the writer thread and the async side.
struct Signals {
    /// Last offset per topic that someone is waiting on; the writer updates existing entries after commit.
    topics: Mutex<HashMap<String, watch::Sender<u64>>>,
    commits: AtomicU64,
    jobs: AtomicU64,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `options.dir` and starts its writer thread and sweeper.
    ///
    /// Must be called within a tokio runtime (the sweeper is a tokio task). Fails with a clear message
    /// when another process has the directory open.
    pub async fn open(options: EmbeddedOptions) -> StoreResult<Arc<EmbeddedStore>> {
        let sweep_interval = options.sweep_interval;
        let store = run_blocking(move || EmbeddedStore::open_blocking(options)).await?;
        let store = Arc::new(store);
        if !sweep_interval.is_zero() {
            spawn_sweeper(Arc::downgrade(&store), sweep_interval);
        }
        Ok(store)
    }

    fn open_blocking(options: EmbeddedOptions) -> StoreResult<EmbeddedStore> {
        let dir = options.dir;
        let blobs_dir = dir.join("blobs");
        fs::create_dir_all(&blobs_dir).map_err(|error| {
            StoreError::Io(format!(
                "cannot create data directory {}: {error}",
                blobs_dir.display()
            ))
        })?;
        let db_path = dir.join("store.redb");
        let db = Database::create(&db_path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Io(format!(
                "data directory {} is in use by another wisp process",
                dir.display()
            )),
            other => match db_error(other) {
                StoreError::Io(message) => {
                    StoreError::Io(format!("cannot open {}: {message}", db_path.display()))
                }
                StoreError::Corrupt(message) => {
                    StoreError::Corrupt(format!("cannot open {}: {message}", db_path.display()))
                }
                other => other,
            },
        })?;
        initialize(&db)?;
        remove_stale_temp_files(&blobs_dir);

        let db = Arc::new(db);
        let signals = Arc::new(Signals {
            topics: Mutex::new(HashMap::new()),
            commits: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
        });
        let (kv_events, _) = broadcast::channel(options.watch_capacity.max(1));
        let (jobs_sender, jobs_receiver) = mpsc::channel();
        let mut writer_state = WriterState {
            db: db.clone(),
            signals: signals.clone(),
            kv_events: kv_events.clone(),
            leases: HashMap::new(),
            max_batch: options.max_batch.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("wisp-store-writer".into())
            .spawn(move || writer_state.run(jobs_receiver))
            .map_err(|error| {
                StoreError::Io(format!("cannot start the store writer thread: {error}"))
            })?;
        Ok(EmbeddedStore {
            dir,
            blobs_dir,
            db,
            writer: Some(Writer {
                jobs: jobs_sender,
                thread,
            }),
            kv_events,
            signals,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters of the writer thread.
    pub fn stats(&self) -> EmbeddedStats {
        EmbeddedStats {
            commits: self.signals.commits.load(Ordering::Relaxed),
            jobs: self.signals.jobs.load(Ordering::Relaxed),
        }
    }

    /// Removes up to 1000 expired Kv entries from disk now; returns how many. The sweeper calls this.
    pub async fn sweep_expired(&self) -> StoreResult<usize> {
        match self.submit(Op::Sweep).await? {
            Done::Count(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Queues a write job and waits until it is committed (or failed).
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the job: it may still be committed.
    async fn submit(&self, op: Op) -> StoreResult<Done> {
        let (reply, answer) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or_else(writer_gone)?;
        writer
            .jobs
            .send(Job { op, reply })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Runs `read` against a snapshot of the last commit, on the blocking pool.
    async fn read<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        let db = self.db.clone();
        run_blocking(move || {
            let txn = db.begin_read().map_err(db_error)?;
            read(&txn)
        })
        .await
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir.join(&digest.0[..2]).join(&digest.0)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer after its current batch; joining it releases its handle on the
        // database, so the directory can be reopened as soon as the store is dropped.
        if let Some(writer) = self.writer.take() {
            drop(writer.jobs);
            if writer.thread.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "store writer thread panicked");
            }
        }
    }
}

fn spawn_sweeper(store: Weak<EmbeddedStore>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; skip it so opening a store does not start with a sweep.
        ticker.tick().await;
        loop {
            ticker.tick().await;
            // Only a Weak reference lives here, so a dropped store is not kept alive by its sweeper.
            let Some(store) = store.upgrade() else { break };
            if let Err(error) = store.sweep_expired().await {
                tracing::warn!(dir = %store.dir.display(), %error, "sweeping expired keys failed");
            }
        }
    });
}

/// Creates every table so readers never meet a missing one, and checks the format version.
fn initialize(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let version = meta
            .get(META_FORMAT_VERSION)
            .map_err(db_error)?
            .map(|guard| guard.value());
        match version {
            None => {
                meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)
                    .map_err(db_error)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "store format version {other} is not supported (expected {FORMAT_VERSION})"
                )));
            }
        }
        txn.open_table(KV).map_err(db_error)?;
        txn.open_table(KV_EXPIRY).map_err(db_error)?;
        txn.open_table(LOG_RECORDS).map_err(db_error)?;
        txn.open_table(LOG_TOPICS).map_err(db_error)?;
        txn.open_table(LOG_ACK_FLOORS).map_err(db_error)?;
        txn.open_table(LOG_ACKS).map_err(db_error)?;
        txn.open_table(LOG_DELIVERIES).map_err(db_error)?;
    }
    txn.commit().map_err(db_error)
}

/// Temporary blob files left by a crash are garbage: nothing ever refers to them. We hold the directory's
/// lock, so no other process can be writing one right now.
fn remove_stale_temp_files(blobs_dir: &Path) {
    let Ok(shards) = fs::read_dir(blobs_dir) else {
        return;
    };
    for shard in shards.flatten() {
        let Ok(files) = fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            if file.file_name().to_string_lossy().starts_with(".tmp") {
                let _ = fs::remove_file(file.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------------------------------------

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<Done>>,
}

enum PutMode {
    Always,
    IfAbsent,
    IfRevision(Option<u64>),
}

enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
        mode: PutMode,
    },
    Delete {
        key: String,
        expected: Option<u64>,
    },
    Append {
        topic: String,
        payloads: Vec<Vec<u8>>,
    },
    Consume {
        topic: String,
        consumer: String,
        limit: usize,
        lease: Duration,
    },
    Ack {
        topic: String,
        consumer: String,
        offset: u64,
    },
    Trim {
        topic: String,
        before: u64,
    },
    Sweep,
}

#[derive(Debug)]
enum Done {
    Revision(Option<u64>),
    Existed(bool),
    Offsets(Vec<u64>),
    Records(Vec<Record>),
    Count(usize),
    Nothing,
}

fn unexpected(done: Done) -> StoreError {
    StoreError::Io(format!(
        "store writer answered with an unexpected result {done:?}"
    ))
}

fn writer_gone() -> StoreError {
    StoreError::Io("the store's writer thread has stopped".into())
}

/// What a batch did that others must learn about, published only after its commit.
#[derive(Default)]
struct Effects {
    kv_events: Vec<KvEvent>,
    topic_last_offsets: HashMap<String, u64>,
    /// Leases granted in this batch, withdrawn if the commit fails (the records were never handed out).
    granted_leases: Vec<(String, String, Vec<u64>)>,
}

type LeaseKey = (String, String);

struct WriterState {
    db: Arc<Database>,
    signals: Arc<Signals>,
    kv_events: broadcast::Sender<KvEvent>,
    /// (topic, consumer) → offset → lease deadline. Only the writer thread touches it.
    leases: HashMap<LeaseKey, BTreeMap<u64, Instant>>,
    max_batch: usize,
}

struct Tables<'txn> {
    meta: redb::Table<'txn, &'static str, u64>,
    kv: redb::Table<'txn, &'static str, (u64, u64, &'static [u8])>,
    kv_expiry: redb::Table<'txn, (u64, &'static str), ()>,
    records: redb::Table<'txn, (&'static str, u64), (u64, &'static [u8])>,
    topics: redb::Table<'txn, &'static str, u64>,
    ack_floors: redb::Table<'txn, (&'static str, &'static str), u64>,
    acks: redb::Table<'txn, (&'static str, &'static str, u64), ()>,
    deliveries: redb::Table<'txn, (&'static str, &'static str, u64), u32>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>, StoreError> {
        Ok(Tables {
            meta: txn.open_table(META).map_err(db_error)?,
            kv: txn.open_table(KV).map_err(db_error)?,
            kv_expiry: txn.open_table(KV_EXPIRY).map_err(db_error)?,
            records: txn.open_table(LOG_RECORDS).map_err(db_error)?,
            topics: txn.open_table(LOG_TOPICS).map_err(db_error)?,
            ack_floors: txn.open_table(LOG_ACK_FLOORS).map_err(db_error)?,
            acks: txn.open_table(LOG_ACKS).map_err(db_error)?,
            deliveries: txn.open_table(LOG_DELIVERIES).map_err(db_error)?,
        })
    }
}

/// The clock a batch runs under: one reading for the whole batch, so all its jobs agree on "now".
struct Clock {
    now_ms: u64,
    now: Instant,
}

impl WriterState {
    fn run(&mut self, jobs: mpsc::Receiver<Job>) {
        // `recv` returns an error once every sender is gone, i.e. when the store is dropped.
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            // Everything that queued up while the previous batch was being fsync'd goes into this one:
            // that is what turns many concurrent writes into one commit.
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<Job>) {
        let clock = Clock {
            now_ms: now_ms(),
            now: Instant::now(),
        };
        let mut effects = Effects::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        let result = self.db.begin_write().map_err(db_error).and_then(|txn| {
            {
                let mut tables = Tables::open(&txn)?;
                for job in &batch {
                    // The outer `?` is a failure of the transaction itself (disk, corruption): it aborts the
                    // whole batch. The inner result is the job's own answer (e.g. a CAS conflict), and a job
                    // that answers with an error has written nothing.
                    outcomes.push(self.apply(&mut tables, &job.op, &clock, &mut effects)?);
                }
            }
            txn.commit().map_err(db_error)
        });

        match result {
            Ok(()) => {
                self.signals.commits.fetch_add(1, Ordering::Relaxed);
                self.signals
                    .jobs
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.publish(effects);
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    // A caller that stopped waiting is not an error: its write is committed all the same.
                    let _ = job.reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "store write transaction failed");
                for (topic, consumer, offsets) in effects.granted_leases {
                    if let Some(leases) = self.leases.get_mut(&(topic, consumer)) {
                        for offset in offsets {
                            leases.remove(&offset);
                        }
                    }
                }
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn publish(&self, effects: Effects) {
        for event in effects.kv_events {
            // No receiver is fine: nobody is watching.
            let _ = self.kv_events.send(event);
        }
        if effects.topic_last_offsets.is_empty() {
            return;
        }
        let mut topics = match self.signals.topics.lock() {
            Ok(topics) => topics,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (topic, last_offset) in effects.topic_last_offsets {
            if let Some(sender) = topics.get(&topic) {
                if sender.receiver_count() == 0 {
                    topics.remove(&topic);
                } else {
                    sender.send_replace(last_offset);
                }
            }
        }
    }

    fn apply(
        &mut self,
        tables: &mut Tables<'_>,
        op: &Op,
        clock: &Clock,
        effects: &mut Effects,
    ) -> Result<StoreResult<Done>, StoreError> {
        match op {
            Op::Put {
                key,
                value,
                ttl,
                mode,
            } => apply_put(tables, key, value, *ttl, mode, clock, effects),
            Op::Delete { key, expected } => apply_delete(tables, key, *expected, clock, effects),
            Op::Append { topic, payloads } => apply_append(tables, topic, payloads, clock, effects),
            Op::Consume {
                topic,
                consumer,
                limit,
                lease,
            } => self.apply_consume(tables, topic, consumer, *limit, *lease, clock, effects),
            Op::Ack {
                topic,
                consumer,
                offset,
            } => self.apply_ack(tables, topic, consumer, *offset),
            Op::Trim { topic, before } => self.apply_trim(tables, topic, *before),
            Op::Sweep => apply_sweep(tables, clock),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_consume(
        &mut self,
        tables: &mut Tables<'_>,
        topic: &str,
        consumer: &str,
        limit: usize,
        lease: Duration,
        clock: &Clock,
        effects: &mut Effects,
    ) -> Result<StoreResult<Done>, StoreError> {
        let floor = tables
            .ack_floors
            .get((topic, consumer))
            .map_err(db_error)?
            .map(|guard| guard.value())
            .unwrap_or(0);
        let leases = self
            .leases
            .entry((topic.to_owned(), consumer.to_owned()))
            .or_default();
        let mut chosen = Vec::new();
        let range = tables
            .records
            .range((topic, floor.saturating_add(1))..=(topic, u64::MAX))
            .map_err(db_error)?;
        for item in range {
            if chosen.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(db_error)?;
            let offset = key.value().1;
            if leases
                .get(&offset)
                .is_some_and(|deadline| *deadline > clock.now)
            {
                continue;
            }
            if tables
                .acks
                .get((topic, consumer, offset))
                .map_err(db_error)?
                .is_some()
            {
                continue;
            }
            let (timestamp_ms, payload) = value.value();
            chosen.push(Record {
                offset,
                timestamp_ms,
                payload: payload.to_vec(),
                deliveries: 0,
            });
        }
        // A caller may pass an enormous lease ("forever"); clamp it instead of overflowing the clock.
        let deadline = clock
            .now
            .checked_add(lease)
            .unwrap_or_else(|| clock.now + Duration::from_secs(100 * 365 * 24 * 3600));
        for record in &mut chosen {
            let key = (topic, consumer, record.offset);
            let previous = tables
                .deliveries
                .get(key)
                .map_err(db_error)?
                .map(|guard| guard.value())
                .unwrap_or(0);
            record.deliveries = previous.saturating_add(1);
            tables
                .deliveries
                .insert(key, record.deliveries)
                .map_err(db_error)?;
            leases.insert(record.offset, deadline);
        }
        if !chosen.is_empty() {
            let offsets = chosen.iter().map(|record| record.offset).collect();
            effects
                .granted_leases
                .push((topic.to_owned(), consumer.to_owned(), offsets));
        }
        Ok(Ok(Done::Records(chosen)))
    }

    fn apply_ack(
        &mut self,
        tables: &mut Tables<'_>,
        topic: &str,
        consumer: &str,
        offset: u64,
    ) -> Result<StoreResult<Done>, StoreError> {
        let last_offset = tables
            .topics
            .get(topic)
            .map_err(db_error)?
            .map(|guard| guard.value())
            .unwrap_or(0);
        if offset == 0 || offset > last_offset {
            return Ok(Err(StoreError::Invalid(format!(
                "cannot ack offset {offset} of topic {topic:?}: its last offset is {last_offset}"
            ))));
        }
        if let Some(leases) = self
            .leases
            .get_mut(&(topic.to_owned(), consumer.to_owned()))
        {
            leases.remove(&offset);
        }
        tables
            .deliveries
            .remove((topic, consumer, offset))
            .map_err(db_error)?;
        let floor = tables
            .ack_floors
            .get((topic, consumer))
            .map_err(db_error)?
            .map(|guard| guard.value())
            .unwrap_or(0);
        if offset <= floor {
            return Ok(Ok(Done::Nothing));
        }
        if offset == floor + 1 {
            raise_floor(tables, topic, consumer, offset)?;
        } else {
            tables
                .acks
                .insert((topic, consumer, offset), ())
                .map_err(db_error)?;
        }
        Ok(Ok(Done::Nothing))
    }

    fn apply_trim(
        &mut self,
        tables: &mut Tables<'_>,
        topic: &str,
        before: u64,
    ) -> Result<StoreResult<Done>, StoreError> {
        if before <= 1 {
            return Ok(Ok(Done::Nothing));
        }
        tables
            .records
            .retain_in((topic, 0)..(topic, before), |_, _| false)
            .map_err(db_error)?;

        // Consumer state below `before` is about records that no longer exist. Raising each floor to
        // `before - 1` keeps the floor able to advance past the trimmed gap.
        let last_offset = tables
            .topics
            .get(topic)
            .map_err(db_error)?
            .map(|guard| guard.value())
            .unwrap_or(0);
        let new_floor = (before - 1).min(last_offset);
        let mut consumers = BTreeSet::new();
        for item in tables.ack_floors.range((topic, "")..).map_err(db_error)? {
            let (key, _) = item.map_err(db_error)?;
            let (key_topic, consumer) = key.value();
            if key_topic != topic {
                break;
            }
            consumers.insert(consumer.to_owned());
        }
        // A consumer may have only out-of-order acks or unacked deliveries, and no floor yet.
        consumers_with_rows(&tables.acks, topic, &mut consumers)?;
        consumers_with_rows(&tables.deliveries, topic, &mut consumers)?;
        for consumer in &consumers {
            let consumer = consumer.as_str();
            tables
                .acks
                .retain_in((topic, consumer, 0)..(topic, consumer, before), |_, _| {
                    false
                })
                .map_err(db_error)?;
            tables
                .deliveries
                .retain_in((topic, consumer, 0)..(topic, consumer, before), |_, _| {
                    false
                })
                .map_err(db_error)?;
            let floor = tables
                .ack_floors
                .get((topic, consumer))
                .map_err(db_error)?
                .map(|guard| guard.value());
            if floor.unwrap_or(0) < new_floor {
                raise_floor(tables, topic, consumer, new_floor)?;
            }
        }
        for ((lease_topic, _), leases) in self.leases.iter_mut() {
            if lease_topic == topic {
                leases.retain(|offset, _| *offset >= before);
            }
        }
        Ok(Ok(Done::Nothing))
    }
}

/// Sets a consumer's ack floor to `floor`, then advances it over any out-of-order acks right above
/// it, so the acks table only ever holds the far side of gaps instead of one row per record forever.
fn raise_floor(
    tables: &mut Tables<'_>,
    topic: &str,
    consumer: &str,
    floor: u64,
) -> Result<(), StoreError> {
    let mut floor = floor;
    while tables
        .acks
        .remove((topic, consumer, floor + 1))
        .map_err(db_error)?
        .is_some()
    {
        floor += 1;
    }
    tables
        .ack_floors
        .insert((topic, consumer), floor)
        .map_err(db_error)?;
    Ok(())
}

/// Adds to `consumers` every consumer that has a row of `topic` in a `(topic, consumer, offset)` table.
fn consumers_with_rows<V: redb::Value + 'static>(
    table: &redb::Table<'_, (&'static str, &'static str, u64), V>,
    topic: &str,
    consumers: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let mut from = String::new();
    // Jump from consumer to consumer instead of reading every row: after each hit, restart the range
    // just past that consumer's last possible row.
    loop {
        let mut range = table.range((topic, from.as_str(), 0)..).map_err(db_error)?;
        let Some(item) = range.next() else {
            return Ok(());
        };
        let (key, _) = item.map_err(db_error)?;
        let (key_topic, consumer, _) = key.value();
        if key_topic != topic {
            return Ok(());
        }
        consumers.insert(consumer.to_owned());
        // `consumer` followed by NUL is the smallest name sorting after `consumer`, so every row of this
        // consumer sorts before it and every other consumer's after.
        from = format!("{consumer}\0");
    }
}

fn is_expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms != 0 && expires_at_ms <= now_ms
}

fn next_revision(tables: &mut Tables<'_>) -> Result<u64, StoreError> {
    let current = tables
        .meta
        .get(META_KV_REVISION)
        .map_err(db_error)?
        .map(|guard| guard.value())
        .unwrap_or(0);
    let next = current + 1;
    tables
        .meta
        .insert(META_KV_REVISION, next)
        .map_err(db_error)?;
    Ok(next)
}

/// The stored (revision, expires_at_ms) of a key, expired or not.
fn stored_version(tables: &Tables<'_>, key: &str) -> Result<Option<(u64, u64)>, StoreError> {
    Ok(tables.kv.get(key).map_err(db_error)?.map(|guard| {
        let (revision, expires_at_ms, _) = guard.value();
        (revision, expires_at_ms)
    }))
}

fn apply_put(
    tables: &mut Tables<'_>,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
    mode: &PutMode,
    clock: &Clock,
    effects: &mut Effects,
) -> Result<StoreResult<Done>, StoreError> {
    let stored = stored_version(tables, key)?;
    let live_revision = stored
        .filter(|(_, expires_at_ms)| !is_expired(*expires_at_ms, clock.now_ms))
        .map(|(revision, _)| revision);
    match mode {
        PutMode::Always => {}
        PutMode::IfAbsent => {
            if live_revision.is_some() {
                return Ok(Ok(Done::Revision(None)));
            }
        }
        PutMode::IfRevision(expected) => {
            if live_revision != *expected {
                return Ok(Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected: *expected,
                    found: live_revision,
                }));
            }
        }
    }
    let revision = next_revision(tables)?;
    if let Some((_, old_expires_at_ms)) = stored
        && old_expires_at_ms != 0
    {
        tables
            .kv_expiry
            .remove((old_expires_at_ms, key))
            .map_err(db_error)?;
    }
    let expires_at_ms = match ttl {
        // Round up so that a sub-millisecond TTL still lives for at least a millisecond.
        Some(ttl) => clock.now_ms.saturating_add(
            ttl.as_micros()
                .div_ceil(1000)
                .try_into()
                .unwrap_or(u64::MAX),
        ),
        None => 0,
    };
    tables
        .kv
        .insert(key, (revision, expires_at_ms, value))
        .map_err(db_error)?;
    if expires_at_ms != 0 {
        tables
            .kv_expiry
            .insert((expires_at_ms, key), ())
            .map_err(db_error)?;
    }
    effects.kv_events.push(KvEvent::Put {
        key: key.to_owned(),
        entry: Entry {
            value: value.to_vec(),
            revision,
        },
    });
    Ok(Ok(Done::Revision(Some(revision))))
}

fn apply_delete(
    tables: &mut Tables<'_>,
    key: &str,
    expected: Option<u64>,
    clock: &Clock,
    effects: &mut Effects,
) -> Result<StoreResult<Done>, StoreError> {
    let stored = stored_version(tables, key)?;
    let live_revision = stored
        .filter(|(_, expires_at_ms)| !is_expired(*expires_at_ms, clock.now_ms))
        .map(|(revision, _)| revision);
    if let Some(expected) = expected
        && live_revision != Some(expected)
    {
        return Ok(Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: Some(expected),
            found: live_revision,
        }));
    }
    let Some((_, expires_at_ms)) = stored else {
        return Ok(Ok(Done::Existed(false)));
    };
    tables.kv.remove(key).map_err(db_error)?;
    if expires_at_ms != 0 {
        tables
            .kv_expiry
            .remove((expires_at_ms, key))
            .map_err(db_error)?;
    }
    if live_revision.is_none() {
        // It had already expired: removing it is housekeeping, not a change anyone observes.
        return Ok(Ok(Done::Existed(false)));
    }
    let revision = next_revision(tables)?;
    effects.kv_events.push(KvEvent::Deleted {
        key: key.to_owned(),
        revision,
    });
    Ok(Ok(Done::Existed(true)))
}

fn apply_sweep(tables: &mut Tables<'_>, clock: &Clock) -> Result<StoreResult<Done>, StoreError> {
    let mut due = Vec::new();
    for item in tables
        .kv_expiry
        .range(..(clock.now_ms.saturating_add(1), ""))
        .map_err(db_error)?
    {
        if due.len() >= SWEEP_LIMIT {
            break;
        }
        let (key, _) = item.map_err(db_error)?;
        let (expires_at_ms, name) = key.value();
        due.push((expires_at_ms, name.to_owned()));
    }
    let mut removed = 0;
    for (expires_at_ms, key) in &due {
        tables
            .kv_expiry
            .remove((*expires_at_ms, key.as_str()))
            .map_err(db_error)?;
        // The index entry may be stale if the key was rewritten; only remove the entry it describes.
        if stored_version(tables, key)?
            .is_some_and(|(_, stored_expiry)| stored_expiry == *expires_at_ms)
        {
            tables.kv.remove(key.as_str()).map_err(db_error)?;
            removed += 1;
        }
    }
    Ok(Ok(Done::Count(removed)))
}

fn apply_append(
    tables: &mut Tables<'_>,
    topic: &str,
    payloads: &[Vec<u8>],
    clock: &Clock,
    effects: &mut Effects,
) -> Result<StoreResult<Done>, StoreError> {
    let mut last_offset = tables
        .topics
        .get(topic)
        .map_err(db_error)?
        .map(|guard| guard.value())
        .unwrap_or(0);
    let mut offsets = Vec::with_capacity(payloads.len());
    for payload in payloads {
        last_offset += 1;
        tables
            .records
            .insert((topic, last_offset), (clock.now_ms, payload.as_slice()))
            .map_err(db_error)?;
        offsets.push(last_offset);
    }
    tables.topics.insert(topic, last_offset).map_err(db_error)?;
    effects
        .topic_last_offsets
        .insert(topic.to_owned(), last_offset);
    Ok(Ok(Done::Offsets(offsets)))
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

/// Maps any redb error onto the store's error kinds.
fn db_error(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Corrupted(message) => StoreError::Corrupt(message),
        redb::Error::UpgradeRequired(version) => StoreError::Corrupt(format!(
            "the database file has format {version}, which needs an upgrade"
        )),
        redb::Error::ValueTooLarge(size) => {
            StoreError::Invalid(format!("value of {size} bytes is too large"))
        }
        error @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }) => StoreError::Corrupt(error.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

async fn run_blocking<T, F>(work: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Io(format!("store task failed: {error}")))?
}

fn check_name(what: &str, name: &str) -> StoreResult<()> {
    if name.is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(StoreError::Invalid(format!(
            "{what} is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        )));
    }
    Ok(())
}

fn check_ttl(ttl: Option<Duration>) -> StoreResult<()> {
    if ttl.is_some_and(|ttl| ttl.is_zero()) {
        return Err(StoreError::Invalid(
            "ttl must be greater than zero (use None for no expiry)".into(),
        ));
    }
    Ok(())
}

fn check_digest(digest: &Digest) -> StoreResult<()> {
    let valid = digest.0.len() == 64
        && digest
            .0
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{:?} is not a sha256 digest (64 lowercase hex characters)",
            digest.0
        )))
    }
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| {
            StoreError::Io(format!("cannot fsync directory {}: {error}", dir.display()))
        })
}

// ---------------------------------------------------------------------------------------------------------
// Trait implementations
// ---------------------------------------------------------------------------------------------------------

#[async_trait]
impl Kv for EmbeddedStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        check_name("key", key)?;
        let key = key.to_owned();
        self.read(move |txn| {
            let table = txn.open_table(KV).map_err(db_error)?;
            let Some(guard) = table.get(key.as_str()).map_err(db_error)? else {
                return Ok(None);
            };
            let (revision, expires_at_ms, value) = guard.value();
            if is_expired(expires_at_ms, now_ms()) {
                return Ok(None);
            }
            Ok(Some(Entry {
                value: value.to_vec(),
                revision,
            }))
        })
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<u64> {
        check_name("key", key)?;
        check_ttl(ttl)?;
        match self
            .submit(Op::Put {
                key: key.to_owned(),
                value,
                ttl,
                mode: PutMode::Always,
            })
            .await?
        {
            Done::Revision(Some(revision)) => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<Option<u64>> {
        check_name("key", key)?;
        check_ttl(ttl)?;
        match self
            .submit(Op::Put {
                key: key.to_owned(),
                value,
                ttl,
                mode: PutMode::IfAbsent,
            })
            .await?
        {
            Done::Revision(revision) => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<u64> {
        check_name("key", key)?;
        check_ttl(ttl)?;
        match self
            .submit(Op::Put {
                key: key.to_owned(),
                value,
                ttl,
                mode: PutMode::IfRevision(expected),
            })
            .await?
        {
            Done::Revision(Some(revision)) => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        check_name("key", key)?;
        match self
            .submit(Op::Delete {
                key: key.to_owned(),
                expected: None,
            })
            .await?
        {
            Done::Existed(existed) => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    async fn compare_and_delete(&self, key: &str, expected: u64) -> StoreResult<()> {
        check_name("key", key)?;
        match self
            .submit(Op::Delete {
                key: key.to_owned(),
                expected: Some(expected),
            })
            .await?
        {
            Done::Existed(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Entry)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |txn| {
            let table = txn.open_table(KV).map_err(db_error)?;
            let now = now_ms();
            let start = match &start_after {
                Some(after) if after.as_str() >= prefix.as_str() => after.as_str(),
                _ => prefix.as_str(),
            };
            let mut entries = Vec::new();
            for item in table.range(start..).map_err(db_error)? {
                let (key, value) = item.map_err(db_error)?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                if start_after.as_deref() == Some(key) {
                    continue;
                }
                let (revision, expires_at_ms, value) = value.value();
                if is_expired(expires_at_ms, now) {
                    continue;
                }
                entries.push((
                    key.to_owned(),
                    Entry {
                        value: value.to_vec(),
                        revision,
                    },
                ));
                if entries.len() >= limit {
                    break;
                }
            }
            Ok(entries)
        })
        .await
    }

    async fn watch(&self, prefix: &str) -> StoreResult<BoxStream<'static, KvEvent>> {
        let receiver = self.kv_events.subscribe();
        let prefix = prefix.to_owned();
        let stream = futures::stream::unfold(
            (receiver, prefix),
            |(mut receiver, prefix)| async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            let key = match &event {
                                KvEvent::Put { key, .. } | KvEvent::Deleted { key, .. } => key,
                            };
                            if key.starts_with(prefix.as_str()) {
                                return Some((event, (receiver, prefix)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            // Skipping events would silently break "in commit order, nothing missed"; ending the
                            // stream tells the watcher to re-read with `scan` and watch again.
                            tracing::warn!(%prefix, missed, "kv watcher fell behind; ending its stream");
                            return None;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }
}

#[async_trait]
impl Log for EmbeddedStore {
    async fn append(&self, topic: &str, payload: Vec<u8>) -> StoreResult<u64> {
        let offsets = self.append_batch(topic, vec![payload]).await?;
        offsets
            .first()
            .copied()
            .ok_or_else(|| StoreError::Io("append returned no offset".into()))
    }

    async fn append_batch(&self, topic: &str, payloads: Vec<Vec<u8>>) -> StoreResult<Vec<u64>> {
        check_name("topic", topic)?;
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .submit(Op::Append {
                topic: topic.to_owned(),
                payloads,
            })
            .await?
        {
            Done::Offsets(offsets) => Ok(offsets),
            other => Err(unexpected(other)),
        }
    }

    async fn read(&self, topic: &str, from: u64, limit: usize) -> StoreResult<Vec<Record>> {
        check_name("topic", topic)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let topic = topic.to_owned();
        EmbeddedStore::read(self, move |txn| {
            let table = txn.open_table(LOG_RECORDS).map_err(db_error)?;
            let mut records = Vec::new();
            for item in table
                .range((topic.as_str(), from)..=(topic.as_str(), u64::MAX))
                .map_err(db_error)?
            {
                let (key, value) = item.map_err(db_error)?;
                let (timestamp_ms, payload) = value.value();
                records.push(Record {
                    offset: key.value().1,
                    timestamp_ms,
                    payload: payload.to_vec(),
                    deliveries: 1,
                });
                if records.len() >= limit {
                    break;
                }
            }
            Ok(records)
        })
        .await
    }

    async fn last_offset(&self, topic: &str) -> StoreResult<u64> {
        check_name("topic", topic)?;
        let topic = topic.to_owned();
        self.read(move |txn| {
            let table = txn.open_table(LOG_TOPICS).map_err(db_error)?;
            Ok(table
                .get(topic.as_str())
                .map_err(db_error)?
                .map(|guard| guard.value())
                .unwrap_or(0))
        })
        .await
    }

    async fn consume(
        &self,
        topic: &str,
        consumer: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<Record>> {
        check_name("topic", topic)?;
        check_name("consumer", consumer)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let op = Op::Consume {
            topic: topic.to_owned(),
            consumer: consumer.to_owned(),
            limit,
            lease,
        };
        match self.submit(op).await? {
            Done::Records(records) => Ok(records),
            other => Err(unexpected(other)),
        }
    }

    async fn ack(&self, topic: &str, consumer: &str, offset: u64) -> StoreResult<()> {
        check_name("topic", topic)?;
        check_name("consumer", consumer)?;
        let op = Op::Ack {
            topic: topic.to_owned(),
            consumer: consumer.to_owned(),
            offset,
        };
        match self.submit(op).await? {
            Done::Nothing => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn trim(&self, topic: &str, before: u64) -> StoreResult<()> {
        check_name("topic", topic)?;
        match self
            .submit(Op::Trim {
                topic: topic.to_owned(),
                before,
            })
            .await?
        {
            Done::Nothing => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn wait_for(&self, topic: &str, after_offset: u64) -> StoreResult<()> {
        check_name("topic", topic)?;
        // Subscribe before reading the last offset: an append committed after the read is then certain to
        // reach the subscription, and one committed before it is seen by the read.
        let mut receiver = {
            let mut topics = match self.signals.topics.lock() {
                Ok(topics) => topics,
                Err(poisoned) => poisoned.into_inner(),
            };
            match topics.get(topic) {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(0);
                    topics.insert(topic.to_owned(), sender);
                    receiver
                }
            }
        };
        if self.last_offset(topic).await? > after_offset {
            return Ok(());
        }
        receiver
            .wait_for(|last_offset| *last_offset > after_offset)
            .await
            .map_err(|_| writer_gone())?;
        Ok(())
    }
}

#[async_trait]
impl Blobs for EmbeddedStore {
    async fn put(&self, bytes: Vec<u8>) -> StoreResult<Digest> {
        let blobs_dir = self.blobs_dir.clone();
        run_blocking(move || {
            let digest = Digest::of(&bytes);
            let shard = blobs_dir.join(&digest.0[..2]);
            let path = shard.join(&digest.0);
            // A file at the final path is always complete (it only ever appears by rename), so it is the
            // same blob: putting it again is a no-op.
            if path.exists() {
                return Ok(digest);
            }
            let io = |what: &str, error: std::io::Error| {
                StoreError::Io(format!(
                    "cannot {what} blob {} in {}: {error}",
                    digest.0,
                    shard.display()
                ))
            };
            if !shard.exists() {
                fs::create_dir_all(&shard).map_err(|error| io("create the directory of", error))?;
                // The new shard directory must itself survive a crash, or the blob inside it would vanish.
                sync_dir(&blobs_dir)?;
            }
            let mut temp = tempfile::NamedTempFile::new_in(&shard)
                .map_err(|error| io("create a temporary file for", error))?;
            temp.write_all(&bytes).map_err(|error| io("write", error))?;
            temp.as_file()
                .sync_all()
                .map_err(|error| io("fsync", error))?;
            temp.persist(&path)
                .map_err(|error| io("rename into place", error.error))?;
            sync_dir(&shard)?;
            Ok(digest)
        })
        .await
    }

    async fn get(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>> {
        check_digest(digest)?;
        let path = self.blob_path(digest);
        run_blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::Io(format!(
                "cannot read blob {}: {error}",
                path.display()
            ))),
        })
        .await
    }

    async fn has(&self, digest: &Digest) -> StoreResult<bool> {
        check_digest(digest)?;
        let path = self.blob_path(digest);
        run_blocking(move || match fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(StoreError::Io(format!(
                "cannot stat blob {}: {error}",
                path.display()
            ))),
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<bool> {
        check_digest(digest)?;
        let path = self.blob_path(digest);
        run_blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(shard) = path.parent() {
                    sync_dir(shard)?;
                }
                Ok(true)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(StoreError::Io(format!(
                "cannot delete blob {}: {error}",
                path.display()
            ))),
        })
        .await
    }
}
