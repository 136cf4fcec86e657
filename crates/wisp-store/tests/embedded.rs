//! The embedded backend against the conformance suite, plus what only it can show: group commit, the
//! sweeper, reopening a directory, and refusing a directory another process holds.

use std::sync::Arc;
use std::time::Duration;

use wisp_store::{Blobs, Digest, EmbeddedOptions, EmbeddedStore, Kv, Log, StoreError, conformance};

async fn open(dir: &std::path::Path) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(EmbeddedOptions::new(dir))
        .await
        .expect("open the embedded store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_kv_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::kv_suite(open(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_log_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::log_suite(open(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_blobs_pass_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::blobs_suite(open(dir.path()).await).await;
}

#[tokio::test(flavor = "current_thread")]
async fn embedded_store_works_on_a_current_thread_runtime() {
    // The store must not rely on block_in_place or a multi-threaded runtime.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    Kv::put(&*store, "key", b"v".to_vec(), None)
        .await
        .expect("put");
    assert_eq!(
        store.append("topic", b"r".to_vec()).await.expect("append"),
        1
    );
    conformance::log_wait_for(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    let before = store.stats();
    let appenders: Vec<_> = (0..64)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for index in 0..8 {
                    store
                        .append("events", format!("{task}-{index}").into_bytes())
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.await.expect("appender");
    }
    let after = store.stats();
    let jobs = after.jobs - before.jobs;
    let commits = after.commits - before.commits;
    assert_eq!(jobs, 64 * 8);
    assert!(
        commits < jobs / 2,
        "512 concurrent appends took {commits} commits: group commit is not batching"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_removes_expired_keys_without_being_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        sweep_interval: Duration::from_millis(50),
        ..EmbeddedOptions::new(dir.path())
    };
    let store = EmbeddedStore::open(options).await.expect("open");
    for index in 0..20 {
        Kv::put(
            &*store,
            &format!("short/{index}"),
            b"x".to_vec(),
            Some(Duration::from_millis(100)),
        )
        .await
        .expect("put");
    }
    Kv::put(
        &*store,
        "lasting",
        b"x".to_vec(),
        Some(Duration::from_secs(3600)),
    )
    .await
    .expect("put");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.sweep_expired().await.expect("sweep"),
        0,
        "the background sweeper already removed every expired key"
    );
    assert!(
        Kv::get(&*store, "lasting").await.expect("get").is_some(),
        "the sweeper leaves live keys alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_skips_keys_rewritten_after_their_ttl_was_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        sweep_interval: Duration::ZERO,
        ..EmbeddedOptions::new(dir.path())
    };
    let store = EmbeddedStore::open(options).await.expect("open");
    Kv::put(
        &*store,
        "rewritten",
        b"1".to_vec(),
        Some(Duration::from_millis(50)),
    )
    .await
    .expect("put");
    Kv::put(
        &*store,
        "rewritten",
        b"2".to_vec(),
        Some(Duration::from_secs(3600)),
    )
    .await
    .expect("put");
    Kv::put(
        &*store,
        "expiring",
        b"1".to_vec(),
        Some(Duration::from_millis(50)),
    )
    .await
    .expect("put");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.sweep_expired().await.expect("sweep"),
        1,
        "only the really expired key is removed"
    );
    assert_eq!(
        Kv::get(&*store, "rewritten")
            .await
            .expect("get")
            .map(|entry| entry.value),
        Some(b"2".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_store_keeps_data_acks_and_redelivers_unacked_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let digest;
    let first_revision;
    {
        let store = open(dir.path()).await;
        first_revision = Kv::put(&*store, "function/echo", b"config".to_vec(), None)
            .await
            .expect("put");
        Kv::put(
            &*store,
            "expiring",
            b"x".to_vec(),
            Some(Duration::from_millis(100)),
        )
        .await
        .expect("put");
        for index in 1..=5u8 {
            store.append("queue", vec![index]).await.expect("append");
        }
        let leased = store
            .consume("queue", "worker", 10, Duration::from_secs(3600))
            .await
            .expect("consume");
        assert_eq!(leased.len(), 5);
        for offset in [1, 2, 4] {
            store.ack("queue", "worker", offset).await.expect("ack");
        }
        digest = Blobs::put(&*store, b"code".to_vec())
            .await
            .expect("blob put");
    }
    let store = open(dir.path()).await;
    let entry = Kv::get(&*store, "function/echo")
        .await
        .expect("get")
        .expect("kv entry survives reopen");
    assert_eq!(
        (entry.value.as_slice(), entry.revision),
        (&b"config"[..], first_revision)
    );
    let next_revision = Kv::put(&*store, "function/other", b"x".to_vec(), None)
        .await
        .expect("put");
    assert!(
        next_revision > first_revision,
        "the revision counter survives reopen"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        Kv::get(&*store, "expiring").await.expect("get"),
        None,
        "ttl holds across reopen"
    );
    assert_eq!(store.last_offset("queue").await.expect("last_offset"), 5);
    let redelivered = store
        .consume("queue", "worker", 10, Duration::from_secs(60))
        .await
        .expect("consume");
    assert_eq!(
        redelivered
            .iter()
            .map(|record| (record.offset, record.deliveries))
            .collect::<Vec<_>>(),
        [(3, 2), (5, 2)],
        "acked records stay acked; unacked ones come back at once, their delivery count remembered"
    );
    assert_eq!(
        store.append("queue", vec![6]).await.expect("append"),
        6,
        "offsets continue after reopen"
    );
    assert_eq!(
        Blobs::get(&*store, &digest).await.expect("blob get"),
        Some(b"code".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_use_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path()).await;
    match EmbeddedStore::open(EmbeddedOptions::new(dir.path())).await {
        Err(StoreError::Io(message)) => {
            assert_eq!(
                message,
                format!(
                    "data directory {} is in use by another wisp process",
                    dir.path().display()
                )
            );
        }
        other => panic!("expected the directory to be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_releases_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 1..=3u64 {
        let store = open(dir.path()).await;
        assert_eq!(
            store.append("topic", b"x".to_vec()).await.expect("append"),
            round
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_temporary_blob_files_are_invisible_and_cleaned_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = b"half written".to_vec();
    let digest = Digest::of(&bytes);
    // What a crash in the middle of `put` leaves behind: a temporary file next to where the blob would go.
    let shard = dir.path().join("blobs").join(&digest.0[..2]);
    std::fs::create_dir_all(&shard).expect("mkdir");
    let leftover = shard.join(".tmpAbCdEf");
    std::fs::write(&leftover, &bytes[..4]).expect("write");
    let store = open(dir.path()).await;
    assert!(
        !store.has(&digest).await.expect("has"),
        "a partially written blob is never visible"
    );
    assert!(
        !leftover.exists(),
        "temporary files of a crashed put are removed on open"
    );
    assert_eq!(
        Blobs::put(&*store, bytes.clone()).await.expect("put"),
        digest
    );
    assert_eq!(
        Blobs::get(&*store, &digest).await.expect("get"),
        Some(bytes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_sees_its_stream_end() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        watch_capacity: 4,
        ..EmbeddedOptions::new(dir.path())
    };
    let store = EmbeddedStore::open(options).await.expect("open");
    let mut events = store.watch("k/").await.expect("watch");
    for index in 0..20 {
        Kv::put(&*store, &format!("k/{index}"), vec![index], None)
            .await
            .expect("put");
    }
    let mut seen = 0;
    while tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("stream answers")
        .is_some()
    {
        seen += 1;
    }
    assert!(
        seen < 20,
        "a watcher that missed events must not go on as if it had not"
    );
}
