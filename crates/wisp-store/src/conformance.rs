//! The conformance suite: the behaviour every [`Kv`], [`Log`] and [`Blobs`] backend must show, written once.
//!
//! Each backend's tests call [`kv_suite`], [`log_suite`] and [`blobs_suite`] with a real instance (a
//! tempdir-backed embedded store, a real `nats-server -js`, a fault-injecting wrapper around one of them).
//! A failed check panics with the name of the check and what differed, like any test assertion.
//!
//! Every check works under its own freshly generated key prefix or topic, so the suite can run against a
//! store that holds other data, or concurrently with itself. The suite must never depend on a particular
//! backend (no downcasts, no backend-specific setup), and never assume the store is empty.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;

use crate::{Blobs, Digest, Entry, Kv, KvEvent, Log, StoreError};

/// How long any single awaited condition may take before the check fails rather than hangs.
const PATIENCE: Duration = Duration::from_secs(10);
/// TTLs and leases used by time-based checks: short, but long enough for a loaded CI machine.
const SHORT: Duration = Duration::from_millis(300);
/// Comfortably past [`SHORT`].
const PAST_SHORT: Duration = Duration::from_millis(900);

/// A name no earlier run of the suite used, so checks never see each other's data.
fn unique(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0);
    format!(
        "conformance-{what}-{nanos:x}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn assert_conflict(
    result: Result<u64, StoreError>,
    expected: Option<u64>,
    found: Option<u64>,
    check: &str,
) {
    match result {
        Err(StoreError::Conflict {
            expected: got_expected,
            found: got_found,
            ..
        }) => {
            assert_eq!(
                (got_expected, got_found),
                (expected, found),
                "{check}: conflict reports the wrong revisions"
            );
        }
        other => panic!(
            "{check}: expected a conflict (expected {expected:?}, found {found:?}), got {other:?}"
        ),
    }
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, check: &str) {
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "{check}: expected StoreError::Invalid, got {result:?}"
    );
}

async fn within<T>(check: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{check}: did not complete within {PATIENCE:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Kv
// ---------------------------------------------------------------------------------------------------------

/// Runs every Kv check.
pub async fn kv_suite(kv: Arc<dyn Kv>) {
    kv_put_get_delete(kv.clone()).await;
    kv_revisions_increase(kv.clone()).await;
    kv_compare_and_set(kv.clone()).await;
    kv_compare_and_delete(kv.clone()).await;
    kv_put_if_absent(kv.clone()).await;
    kv_ttl_expiry(kv.clone()).await;
    kv_scan(kv.clone()).await;
    kv_watch(kv.clone()).await;
    kv_invalid_keys(kv.clone()).await;
    kv_concurrent_compare_and_set(kv).await;
}

pub async fn kv_put_get_delete(kv: Arc<dyn Kv>) {
    let key = format!("{}/key", unique("kv-basic"));
    assert_eq!(
        kv.get(&key).await.expect("get"),
        None,
        "a key never written is absent"
    );
    let revision = kv.put(&key, b"one".to_vec(), None).await.expect("put");
    assert!(revision > 0, "revisions are positive");
    assert_eq!(
        kv.get(&key).await.expect("get"),
        Some(Entry {
            value: b"one".to_vec(),
            revision
        })
    );
    let second = kv
        .put(&key, Vec::new(), None)
        .await
        .expect("put empty value");
    assert_eq!(
        kv.get(&key).await.expect("get"),
        Some(Entry {
            value: Vec::new(),
            revision: second
        }),
        "empty values are kept"
    );
    assert!(
        kv.delete(&key).await.expect("delete"),
        "delete reports an existing key"
    );
    assert_eq!(
        kv.get(&key).await.expect("get"),
        None,
        "a deleted key is absent"
    );
    assert!(
        !kv.delete(&key).await.expect("delete"),
        "delete reports a missing key"
    );
}

pub async fn kv_revisions_increase(kv: Arc<dyn Kv>) {
    let prefix = unique("kv-revisions");
    let mut last = 0;
    for round in 0..5 {
        for name in ["a", "b"] {
            let revision = kv
                .put(&format!("{prefix}/{name}"), vec![round], None)
                .await
                .expect("put");
            assert!(
                revision > last,
                "every write gets a larger revision than the one before ({revision} after {last})"
            );
            last = revision;
        }
    }
    let created = kv
        .compare_and_set(&format!("{prefix}/c"), None, b"x".to_vec(), None)
        .await
        .expect("cas");
    assert!(created > last, "compare_and_set gets a larger revision");
}

pub async fn kv_compare_and_set(kv: Arc<dyn Kv>) {
    let key = format!("{}/key", unique("kv-cas"));
    let first = kv
        .compare_and_set(&key, None, b"v1".to_vec(), None)
        .await
        .expect("cas creating an absent key");
    assert_conflict(
        kv.compare_and_set(&key, None, b"v2".to_vec(), None).await,
        None,
        Some(first),
        "cas(None) on a present key",
    );
    let second = kv
        .compare_and_set(&key, Some(first), b"v2".to_vec(), None)
        .await
        .expect("cas with the right revision");
    assert!(second > first);
    assert_conflict(
        kv.compare_and_set(&key, Some(first), b"v3".to_vec(), None)
            .await,
        Some(first),
        Some(second),
        "cas with a stale revision",
    );
    assert_eq!(
        kv.get(&key).await.expect("get").map(|entry| entry.value),
        Some(b"v2".to_vec()),
        "a lost cas writes nothing"
    );
    let missing = format!("{key}-missing");
    assert_conflict(
        kv.compare_and_set(&missing, Some(second), b"x".to_vec(), None)
            .await,
        Some(second),
        None,
        "cas(Some) on an absent key",
    );
    assert_eq!(kv.get(&missing).await.expect("get"), None);
}

pub async fn kv_compare_and_delete(kv: Arc<dyn Kv>) {
    let key = format!("{}/key", unique("kv-cad"));
    let revision = kv.put(&key, b"v".to_vec(), None).await.expect("put");
    match kv.compare_and_delete(&key, revision + 1000).await {
        Err(StoreError::Conflict {
            expected, found, ..
        }) => {
            assert_eq!((expected, found), (Some(revision + 1000), Some(revision)));
        }
        other => {
            panic!("compare_and_delete with a wrong revision: expected a conflict, got {other:?}")
        }
    }
    assert!(
        kv.get(&key).await.expect("get").is_some(),
        "a lost compare_and_delete deletes nothing"
    );
    kv.compare_and_delete(&key, revision)
        .await
        .expect("compare_and_delete with the right revision");
    assert_eq!(kv.get(&key).await.expect("get"), None);
    assert!(
        matches!(
            kv.compare_and_delete(&key, revision).await,
            Err(StoreError::Conflict { found: None, .. })
        ),
        "compare_and_delete on an absent key conflicts"
    );
}

pub async fn kv_put_if_absent(kv: Arc<dyn Kv>) {
    let key = format!("{}/key", unique("kv-pia"));
    let revision = kv
        .put_if_absent(&key, b"first".to_vec(), None)
        .await
        .expect("put_if_absent");
    let revision = revision.expect("put_if_absent writes an absent key");
    assert_eq!(
        kv.put_if_absent(&key, b"second".to_vec(), None)
            .await
            .expect("put_if_absent"),
        None,
        "put_if_absent leaves a present key"
    );
    assert_eq!(
        kv.get(&key).await.expect("get"),
        Some(Entry {
            value: b"first".to_vec(),
            revision
        })
    );
    kv.delete(&key).await.expect("delete");
    assert!(
        kv.put_if_absent(&key, b"third".to_vec(), None)
            .await
            .expect("put_if_absent")
            .is_some(),
        "a deleted key is absent again"
    );
}

pub async fn kv_ttl_expiry(kv: Arc<dyn Kv>) {
    let prefix = unique("kv-ttl");
    let short = format!("{prefix}/short");
    let lasting = format!("{prefix}/lasting");
    let revived = format!("{prefix}/revived");
    let cas_key = format!("{prefix}/cas");
    let short_revision = kv
        .put(&short, b"s".to_vec(), Some(SHORT))
        .await
        .expect("put with ttl");
    kv.put(&lasting, b"l".to_vec(), Some(Duration::from_secs(3600)))
        .await
        .expect("put with long ttl");
    kv.put(&revived, b"r".to_vec(), Some(SHORT))
        .await
        .expect("put with ttl");
    let cas_revision = kv
        .put(&cas_key, b"c".to_vec(), Some(SHORT))
        .await
        .expect("put with ttl");
    assert!(
        kv.get(&short).await.expect("get").is_some(),
        "an entry is visible before its ttl passes"
    );
    assert_eq!(kv.scan(&prefix, None, 10).await.expect("scan").len(), 4);

    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        kv.get(&short).await.expect("get"),
        None,
        "get never returns an expired entry"
    );
    let keys: Vec<String> = kv
        .scan(&prefix, None, 10)
        .await
        .expect("scan")
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        keys,
        vec![lasting.clone()],
        "scan never returns an expired entry"
    );
    assert!(
        kv.put_if_absent(&revived, b"again".to_vec(), None)
            .await
            .expect("put_if_absent")
            .is_some(),
        "put_if_absent treats an expired key as absent"
    );
    assert_eq!(
        kv.get(&revived)
            .await
            .expect("get")
            .map(|entry| entry.value),
        Some(b"again".to_vec())
    );
    assert_conflict(
        kv.compare_and_set(&cas_key, Some(cas_revision), b"x".to_vec(), None)
            .await,
        Some(cas_revision),
        None,
        "cas against the revision of an expired entry",
    );
    kv.compare_and_set(&cas_key, None, b"fresh".to_vec(), None)
        .await
        .expect("cas(None) on an expired key");
    assert!(
        !kv.delete(&short).await.expect("delete"),
        "deleting an expired key reports it absent"
    );
    assert!(
        kv.compare_and_delete(&short, short_revision).await.is_err(),
        "compare_and_delete against an expired entry conflicts"
    );
    // A rewrite without ttl clears the old ttl.
    let cleared = format!("{prefix}/cleared");
    kv.put(&cleared, b"1".to_vec(), Some(SHORT))
        .await
        .expect("put");
    kv.put(&cleared, b"2".to_vec(), None).await.expect("put");
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        kv.get(&cleared)
            .await
            .expect("get")
            .map(|entry| entry.value),
        Some(b"2".to_vec()),
        "a rewrite without ttl never expires"
    );
}

pub async fn kv_scan(kv: Arc<dyn Kv>) {
    let prefix = unique("kv-scan");
    let outside = format!("{prefix}-sibling/a");
    kv.put(&outside, b"no".to_vec(), None).await.expect("put");
    let names = ["d", "a", "ab", "c", "b", "b/inner"];
    for name in names {
        kv.put(&format!("{prefix}/{name}"), name.as_bytes().to_vec(), None)
            .await
            .expect("put");
    }
    let dir = format!("{prefix}/");
    let scanned = |entries: Vec<(String, Entry)>| -> Vec<String> {
        entries
            .into_iter()
            .map(|(key, entry)| {
                let name = key
                    .strip_prefix(&dir)
                    .expect("scan returned a key outside the prefix")
                    .to_owned();
                assert_eq!(
                    entry.value,
                    name.as_bytes(),
                    "scan returns each key's own value"
                );
                name
            })
            .collect()
    };
    assert_eq!(
        scanned(kv.scan(&dir, None, 100).await.expect("scan")),
        ["a", "ab", "b", "b/inner", "c", "d"],
        "scan is in byte order, prefix only"
    );
    assert_eq!(
        scanned(kv.scan(&dir, None, 2).await.expect("scan")),
        ["a", "ab"],
        "scan honours limit"
    );
    assert_eq!(
        scanned(
            kv.scan(&dir, Some(&format!("{prefix}/ab")), 2)
                .await
                .expect("scan")
        ),
        ["b", "b/inner"],
        "start_after is exclusive"
    );
    assert_eq!(
        scanned(
            kv.scan(&dir, Some(&format!("{prefix}/bz")), 100)
                .await
                .expect("scan")
        ),
        ["c", "d"],
        "start_after need not exist"
    );
    assert_eq!(
        scanned(kv.scan(&dir, Some(&prefix), 100).await.expect("scan")).len(),
        6,
        "start_after before the prefix is harmless"
    );
    assert!(
        kv.scan(&dir, Some(&format!("{prefix}/z")), 100)
            .await
            .expect("scan")
            .is_empty()
    );
    assert_eq!(
        scanned(
            kv.scan(&format!("{prefix}/b"), None, 100)
                .await
                .expect("scan")
        ),
        ["b", "b/inner"]
    );
    assert!(
        kv.scan(&format!("{prefix}/nothing"), None, 100)
            .await
            .expect("scan")
            .is_empty()
    );
    assert!(
        kv.scan(&dir, None, 0).await.expect("scan").is_empty(),
        "limit 0 returns nothing"
    );
    // Paging through with start_after visits every key once.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = kv.scan(&dir, after.as_deref(), 4).await.expect("scan");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        paged.extend(scanned(page));
    }
    assert_eq!(
        paged,
        ["a", "ab", "b", "b/inner", "c", "d"],
        "paging with start_after"
    );
}

pub async fn kv_watch(kv: Arc<dyn Kv>) {
    let prefix = unique("kv-watch");
    let watched = format!("{prefix}/in/");
    let mut events = kv.watch(&watched).await.expect("watch");
    let first = kv
        .put(&format!("{watched}one"), b"1".to_vec(), None)
        .await
        .expect("put");
    kv.put(&format!("{prefix}/out/one"), b"x".to_vec(), None)
        .await
        .expect("put outside the prefix");
    let second = kv
        .put(&format!("{watched}two"), b"2".to_vec(), None)
        .await
        .expect("put");
    assert!(kv.delete(&format!("{watched}one")).await.expect("delete"));
    assert_eq!(
        next_event(&mut events).await,
        KvEvent::Put {
            key: format!("{watched}one"),
            entry: Entry {
                value: b"1".to_vec(),
                revision: first
            }
        }
    );
    assert_eq!(
        next_event(&mut events).await,
        KvEvent::Put {
            key: format!("{watched}two"),
            entry: Entry {
                value: b"2".to_vec(),
                revision: second
            }
        }
    );
    match next_event(&mut events).await {
        KvEvent::Deleted { key, revision } => {
            assert_eq!(key, format!("{watched}one"));
            assert!(revision > second, "a delete gets its own, larger revision");
        }
        other => panic!("expected the delete, got {other:?}"),
    }
    // Many writes from concurrent tasks arrive in revision (commit) order, none missing.
    let writers: Vec<_> = (0..8)
        .map(|task| {
            let kv = kv.clone();
            let watched = watched.clone();
            tokio::spawn(async move {
                for index in 0..10 {
                    kv.put(&format!("{watched}task{task}-{index}"), vec![index], None)
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }
    let mut last_revision = 0;
    for _ in 0..80 {
        let KvEvent::Put { entry, .. } = next_event(&mut events).await else {
            panic!("expected only puts")
        };
        assert!(
            entry.revision > last_revision,
            "watch delivers in commit order"
        );
        last_revision = entry.revision;
    }
}

async fn next_event(events: &mut futures::stream::BoxStream<'static, KvEvent>) -> KvEvent {
    within("watch event", events.next())
        .await
        .expect("watch stream ended early")
}

pub async fn kv_invalid_keys(kv: Arc<dyn Kv>) {
    assert_invalid(kv.get("").await, "get of an empty key");
    assert_invalid(kv.put("", b"v".to_vec(), None).await, "put of an empty key");
    let long = "k".repeat(1025);
    assert_invalid(
        kv.put(&long, b"v".to_vec(), None).await,
        "put of a 1025-byte key",
    );
    assert_invalid(
        kv.put_if_absent(&long, b"v".to_vec(), None).await,
        "put_if_absent of a 1025-byte key",
    );
    assert_invalid(
        kv.compare_and_set(&long, None, b"v".to_vec(), None).await,
        "cas of a 1025-byte key",
    );
    assert_invalid(kv.delete("").await, "delete of an empty key");
    let mut longest = format!("{}/", unique("kv-long"));
    longest.extend(std::iter::repeat_n('k', 1024 - longest.len()));
    let longest = longest.as_str();
    kv.put(longest, b"v".to_vec(), None)
        .await
        .expect("a 1024-byte key is accepted");
    assert!(kv.get(longest).await.expect("get").is_some());
}

/// Many tasks increment one counter with compare-and-set retry loops; linearizable CAS loses no increment.
pub async fn kv_concurrent_compare_and_set(kv: Arc<dyn Kv>) {
    let key = format!("{}/counter", unique("kv-counter"));
    kv.put(&key, 0u64.to_be_bytes().to_vec(), None)
        .await
        .expect("put");
    let tasks = 8;
    let increments = 10;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let kv = kv.clone();
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..increments {
                    loop {
                        let entry = kv.get(&key).await.expect("get").expect("counter exists");
                        let value =
                            u64::from_be_bytes(entry.value.as_slice().try_into().expect("8 bytes"));
                        match kv
                            .compare_and_set(
                                &key,
                                Some(entry.revision),
                                (value + 1).to_be_bytes().to_vec(),
                                None,
                            )
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(error) => panic!("cas failed: {error}"),
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        within("concurrent cas", handle).await.expect("cas task");
    }
    let entry = kv.get(&key).await.expect("get").expect("counter exists");
    assert_eq!(
        u64::from_be_bytes(entry.value.as_slice().try_into().expect("8 bytes")),
        (tasks * increments) as u64,
        "no increment lost"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Log
// ---------------------------------------------------------------------------------------------------------

/// Runs every Log check.
pub async fn log_suite(log: Arc<dyn Log>) {
    log_offsets_start_at_one(log.clone()).await;
    log_append_batch(log.clone()).await;
    log_concurrent_appends(log.clone()).await;
    log_consume_and_ack(log.clone()).await;
    log_redelivery_after_lease(log.clone()).await;
    log_consumers_are_independent(log.clone()).await;
    log_trim(log.clone()).await;
    log_wait_for(log.clone()).await;
    log_invalid_names(log).await;
}

pub async fn log_offsets_start_at_one(log: Arc<dyn Log>) {
    let topic = unique("log-offsets");
    assert_eq!(
        log.last_offset(&topic).await.expect("last_offset"),
        0,
        "an unknown topic's last offset is 0"
    );
    assert!(log.read(&topic, 1, 10).await.expect("read").is_empty());
    let before_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0);
    for expected in 1..=5u64 {
        let offset = log
            .append(&topic, format!("record {expected}").into_bytes())
            .await
            .expect("append");
        assert_eq!(offset, expected, "offsets start at 1 and increase by one");
    }
    assert_eq!(log.last_offset(&topic).await.expect("last_offset"), 5);
    let records = log.read(&topic, 1, 100).await.expect("read");
    assert_eq!(
        records
            .iter()
            .map(|record| record.offset)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    for record in &records {
        assert_eq!(
            record.payload,
            format!("record {}", record.offset).into_bytes()
        );
        assert_eq!(record.deliveries, 1, "plain reads report one delivery");
        assert!(
            record.timestamp_ms + 5_000 >= before_ms,
            "timestamps are milliseconds since the epoch"
        );
    }
    assert_eq!(
        log.read(&topic, 3, 2)
            .await
            .expect("read")
            .iter()
            .map(|record| record.offset)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(
        log.read(&topic, 0, 1).await.expect("read")[0].offset,
        1,
        "reading from 0 starts at the first record"
    );
    assert!(log.read(&topic, 6, 10).await.expect("read").is_empty());
    assert!(
        log.read(&topic, 1, 0).await.expect("read").is_empty(),
        "limit 0 returns nothing"
    );
}

pub async fn log_append_batch(log: Arc<dyn Log>) {
    let topic = unique("log-batch");
    log.append(&topic, b"first".to_vec()).await.expect("append");
    let offsets = log
        .append_batch(&topic, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        .await
        .expect("append_batch");
    assert_eq!(
        offsets,
        [2, 3, 4],
        "a batch gets consecutive offsets after the last"
    );
    assert!(
        log.append_batch(&topic, Vec::new())
            .await
            .expect("empty batch")
            .is_empty()
    );
    let payloads: Vec<Vec<u8>> = log
        .read(&topic, 1, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|record| record.payload)
        .collect();
    assert_eq!(
        payloads,
        [
            b"first".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
            b"c".to_vec()
        ]
    );
}

pub async fn log_concurrent_appends(log: Arc<dyn Log>) {
    let topic = unique("log-concurrent");
    let tasks = 64u64;
    let per_task = 16u64;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let log = log.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut offsets = Vec::new();
                for index in 0..per_task {
                    let offset = log
                        .append(&topic, format!("{task}:{index}").into_bytes())
                        .await
                        .expect("append");
                    offsets.push((offset, format!("{task}:{index}")));
                }
                offsets
            })
        })
        .collect();
    let mut written = Vec::new();
    for handle in handles {
        let offsets = within("concurrent appends", handle)
            .await
            .expect("append task");
        // One task's appends are ordered: each returned before the next began.
        assert!(
            offsets.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "a task's appends get increasing offsets"
        );
        written.extend(offsets);
    }
    let distinct: BTreeSet<u64> = written.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(
        distinct.len() as u64,
        tasks * per_task,
        "every append got its own offset"
    );
    assert_eq!(
        distinct,
        (1..=tasks * per_task).collect(),
        "offsets are dense from 1"
    );
    let records = log.read(&topic, 1, usize::MAX).await.expect("read");
    assert_eq!(
        records.len() as u64,
        tasks * per_task,
        "every appended record is readable"
    );
    for (offset, payload) in written {
        assert_eq!(
            records[(offset - 1) as usize].payload,
            payload.into_bytes(),
            "record {offset} holds what was appended"
        );
    }
}

fn offsets(records: &[crate::Record]) -> Vec<u64> {
    records.iter().map(|record| record.offset).collect()
}

pub async fn log_consume_and_ack(log: Arc<dyn Log>) {
    let topic = unique("log-consume");
    let consumer = "worker";
    assert!(
        log.consume(&topic, consumer, 10, Duration::from_secs(60))
            .await
            .expect("consume")
            .is_empty(),
        "nothing to consume yet"
    );
    for index in 1..=5u8 {
        log.append(&topic, vec![index]).await.expect("append");
    }
    let lease = Duration::from_secs(60);
    let first = log
        .consume(&topic, consumer, 3, lease)
        .await
        .expect("consume");
    assert_eq!(
        offsets(&first),
        [1, 2, 3],
        "consume hands out the oldest records first, up to limit"
    );
    assert!(
        first.iter().all(|record| record.deliveries == 1),
        "first delivery counts 1"
    );
    assert_eq!(first[0].payload, vec![1]);
    let second = log
        .consume(&topic, consumer, 10, lease)
        .await
        .expect("consume");
    assert_eq!(
        offsets(&second),
        [4, 5],
        "leased records are not handed out again while leased"
    );
    assert!(
        log.consume(&topic, consumer, 10, lease)
            .await
            .expect("consume")
            .is_empty()
    );
    // Acks in any order; acking twice is harmless.
    for offset in [3, 1, 2, 5, 4, 4] {
        log.ack(&topic, consumer, offset).await.expect("ack");
    }
    log.append(&topic, vec![6]).await.expect("append");
    let third = log
        .consume(&topic, consumer, 10, lease)
        .await
        .expect("consume");
    assert_eq!(
        offsets(&third),
        [6],
        "acked records are never delivered again; new ones are"
    );
    assert_eq!(
        log.read(&topic, 1, 10).await.expect("read").len(),
        6,
        "acks do not remove records"
    );
    assert!(
        log.consume(&topic, consumer, 0, lease)
            .await
            .expect("consume")
            .is_empty(),
        "limit 0 returns nothing"
    );
}

pub async fn log_redelivery_after_lease(log: Arc<dyn Log>) {
    let topic = unique("log-redelivery");
    let consumer = "worker";
    for index in 1..=3u8 {
        log.append(&topic, vec![index]).await.expect("append");
    }
    let first = log
        .consume(&topic, consumer, 2, SHORT)
        .await
        .expect("consume");
    assert_eq!(offsets(&first), [1, 2]);
    log.ack(&topic, consumer, 1).await.expect("ack");
    tokio::time::sleep(PAST_SHORT).await;
    let second = log
        .consume(&topic, consumer, 10, SHORT)
        .await
        .expect("consume");
    assert_eq!(
        offsets(&second),
        [2, 3],
        "an unacked record is handed out again after its lease"
    );
    assert_eq!(second[0].deliveries, 2, "a redelivery counts");
    assert_eq!(second[0].payload, vec![2]);
    assert_eq!(second[1].deliveries, 1);
    tokio::time::sleep(PAST_SHORT).await;
    let third = log
        .consume(&topic, consumer, 10, Duration::from_secs(60))
        .await
        .expect("consume");
    assert_eq!(offsets(&third), [2, 3]);
    assert_eq!(
        third
            .iter()
            .map(|record| record.deliveries)
            .collect::<Vec<_>>(),
        [3, 2]
    );
    log.ack(&topic, consumer, 2).await.expect("ack");
    log.ack(&topic, consumer, 3).await.expect("ack");
    assert!(
        log.consume(&topic, consumer, 10, SHORT)
            .await
            .expect("consume")
            .is_empty()
    );
}

pub async fn log_consumers_are_independent(log: Arc<dyn Log>) {
    let topic = unique("log-consumers");
    for index in 1..=3u8 {
        log.append(&topic, vec![index]).await.expect("append");
    }
    let lease = Duration::from_secs(60);
    let alpha = log
        .consume(&topic, "alpha", 10, lease)
        .await
        .expect("consume");
    for record in &alpha {
        log.ack(&topic, "alpha", record.offset).await.expect("ack");
    }
    let beta = log
        .consume(&topic, "beta", 10, lease)
        .await
        .expect("consume");
    assert_eq!(
        offsets(&beta),
        [1, 2, 3],
        "another consumer gets every record regardless of the first's acks and leases"
    );
    assert!(
        beta.iter().all(|record| record.deliveries == 1),
        "delivery counts are per consumer"
    );
    assert!(
        log.consume(&topic, "alpha", 10, lease)
            .await
            .expect("consume")
            .is_empty()
    );
}

pub async fn log_trim(log: Arc<dyn Log>) {
    let topic = unique("log-trim");
    for index in 1..=10u8 {
        log.append(&topic, vec![index]).await.expect("append");
    }
    let lease = Duration::from_secs(60);
    let consumed = log
        .consume(&topic, "worker", 3, lease)
        .await
        .expect("consume");
    assert_eq!(offsets(&consumed), [1, 2, 3]);
    // A consumer with only out-of-order acks, on both sides of the trim point.
    log.ack(&topic, "sparse", 2).await.expect("ack");
    log.ack(&topic, "sparse", 8).await.expect("ack");
    log.trim(&topic, 6).await.expect("trim");
    assert_eq!(
        offsets(&log.read(&topic, 1, 100).await.expect("read")),
        [6, 7, 8, 9, 10],
        "trim removes records before the offset"
    );
    assert_eq!(log.last_offset(&topic).await.expect("last_offset"), 10);
    log.trim(&topic, 3)
        .await
        .expect("trimming less than before is harmless");
    assert_eq!(
        log.append(&topic, vec![11]).await.expect("append"),
        11,
        "offsets are never reused after trim"
    );
    let sparse = log
        .consume(&topic, "sparse", 100, lease)
        .await
        .expect("consume");
    assert_eq!(
        offsets(&sparse),
        [6, 7, 9, 10, 11],
        "acks above the trim point survive it"
    );
    let after = log
        .consume(&topic, "worker", 100, lease)
        .await
        .expect("consume");
    assert_eq!(
        offsets(&after),
        [6, 7, 8, 9, 10, 11],
        "a consumer continues after the trimmed records"
    );
    for record in &after {
        log.ack(&topic, "worker", record.offset).await.expect("ack");
    }
    log.trim(&topic, 12).await.expect("trim everything");
    assert!(log.read(&topic, 1, 100).await.expect("read").is_empty());
    assert_eq!(
        log.last_offset(&topic).await.expect("last_offset"),
        11,
        "the last offset survives trimming everything"
    );
    assert_eq!(log.append(&topic, vec![12]).await.expect("append"), 12);
    assert_eq!(
        offsets(
            &log.consume(&topic, "worker", 100, lease)
                .await
                .expect("consume")
        ),
        [12]
    );
}

pub async fn log_wait_for(log: Arc<dyn Log>) {
    let topic = unique("log-wait");
    let waiter = {
        let log = log.clone();
        let topic = topic.clone();
        tokio::spawn(async move { log.wait_for(&topic, 0).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "wait_for waits while nothing is appended"
    );
    log.append(&topic, b"wake".to_vec()).await.expect("append");
    within("wait_for after an append", waiter)
        .await
        .expect("waiter task")
        .expect("wait_for");
    within("wait_for with an older offset", log.wait_for(&topic, 0))
        .await
        .expect("wait_for resolves at once when a newer record exists");
    // Many waiters, one append.
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            let topic = topic.clone();
            tokio::spawn(async move { log.wait_for(&topic, 1).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.append(&topic, b"again".to_vec()).await.expect("append");
    for waiter in waiters {
        within("many waiters", waiter)
            .await
            .expect("waiter task")
            .expect("wait_for");
    }
}

pub async fn log_invalid_names(log: Arc<dyn Log>) {
    assert_invalid(
        log.append("", b"x".to_vec()).await,
        "append to an empty topic",
    );
    assert_invalid(
        log.append(&"t".repeat(1025), b"x".to_vec()).await,
        "append to a 1025-byte topic",
    );
    assert_invalid(log.read("", 1, 1).await, "read of an empty topic");
    let topic = unique("log-invalid");
    log.append(&topic, b"x".to_vec()).await.expect("append");
    assert_invalid(
        log.consume(&topic, "", 1, SHORT).await,
        "consume with an empty consumer",
    );
    assert_invalid(log.ack(&topic, "", 1).await, "ack with an empty consumer");
}

// ---------------------------------------------------------------------------------------------------------
// Blobs
// ---------------------------------------------------------------------------------------------------------

/// Runs every Blobs check.
pub async fn blobs_suite(blobs: Arc<dyn Blobs>) {
    blobs_digest_is_sha256(blobs.clone()).await;
    blobs_put_is_idempotent(blobs.clone()).await;
    blobs_missing_and_delete(blobs.clone()).await;
    blobs_sizes(blobs.clone()).await;
    blobs_concurrent_puts(blobs.clone()).await;
    blobs_invalid_digest(blobs).await;
}

pub async fn blobs_digest_is_sha256(blobs: Arc<dyn Blobs>) {
    let digest = blobs.put(b"hello".to_vec()).await.expect("put");
    assert_eq!(
        digest.0, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "the name of a blob is its sha256"
    );
    assert_eq!(
        blobs.get(&digest).await.expect("get"),
        Some(b"hello".to_vec())
    );
    assert!(blobs.has(&digest).await.expect("has"));
}

pub async fn blobs_put_is_idempotent(blobs: Arc<dyn Blobs>) {
    let bytes = unique("blob-idempotent").into_bytes();
    let first = blobs.put(bytes.clone()).await.expect("put");
    let second = blobs.put(bytes.clone()).await.expect("put again");
    assert_eq!(first, second);
    assert_eq!(first, Digest::of(&bytes));
    assert_eq!(blobs.get(&first).await.expect("get"), Some(bytes));
}

pub async fn blobs_missing_and_delete(blobs: Arc<dyn Blobs>) {
    let bytes = unique("blob-delete").into_bytes();
    let digest = Digest::of(&bytes);
    assert_eq!(
        blobs.get(&digest).await.expect("get"),
        None,
        "a blob never put is absent"
    );
    assert!(!blobs.has(&digest).await.expect("has"));
    assert!(
        !blobs.delete(&digest).await.expect("delete"),
        "deleting a missing blob reports false"
    );
    blobs.put(bytes.clone()).await.expect("put");
    assert!(blobs.delete(&digest).await.expect("delete"));
    assert!(!blobs.has(&digest).await.expect("has"));
    assert_eq!(blobs.get(&digest).await.expect("get"), None);
    assert_eq!(
        blobs.put(bytes.clone()).await.expect("put after delete"),
        digest
    );
    assert_eq!(blobs.get(&digest).await.expect("get"), Some(bytes));
}

pub async fn blobs_sizes(blobs: Arc<dyn Blobs>) {
    let empty = blobs.put(Vec::new()).await.expect("put empty");
    assert_eq!(
        empty.0,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(blobs.get(&empty).await.expect("get"), Some(Vec::new()));
    let mut large = unique("blob-large").into_bytes();
    large.extend((0..5 * 1024 * 1024u32).map(|index| (index % 251) as u8));
    let digest = blobs.put(large.clone()).await.expect("put 5 MiB");
    assert_eq!(digest, Digest::of(&large));
    assert!(
        blobs.get(&digest).await.expect("get") == Some(large),
        "a large blob comes back byte for byte"
    );
}

pub async fn blobs_concurrent_puts(blobs: Arc<dyn Blobs>) {
    let bytes = unique("blob-concurrent").repeat(1000).into_bytes();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let blobs = blobs.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move { blobs.put(bytes).await })
        })
        .collect();
    for handle in handles {
        assert_eq!(
            within("concurrent puts", handle)
                .await
                .expect("put task")
                .expect("put"),
            Digest::of(&bytes)
        );
    }
    assert_eq!(
        blobs.get(&Digest::of(&bytes)).await.expect("get"),
        Some(bytes),
        "concurrent puts of one blob leave it whole"
    );
}

pub async fn blobs_invalid_digest(blobs: Arc<dyn Blobs>) {
    for bad in [
        "",
        "xyz",
        "../../etc/passwd",
        &"A".repeat(64),
        &"0".repeat(63),
    ] {
        let digest = Digest(bad.to_owned());
        assert_invalid(blobs.get(&digest).await, "get of a malformed digest");
        assert_invalid(blobs.has(&digest).await, "has of a malformed digest");
        assert_invalid(blobs.delete(&digest).await, "delete of a malformed digest");
    }
}
