//! Faults injected into a real embedded store: errors reach the caller as retryable `Io`, a failed call has
//! no effect, and a caller that retries sees a store that still passes the whole conformance suite.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use wisp_store::{
    Blobs, Digest, EmbeddedOptions, EmbeddedStore, Entry, Kv, KvEvent, Log, Record, StoreError,
    StoreResult, UnreliableStore, conformance,
};

async fn unreliable(dir: &std::path::Path, fail_every: u64) -> Arc<UnreliableStore<EmbeddedStore>> {
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir))
        .await
        .expect("open");
    Arc::new(UnreliableStore::new(store, fail_every))
}

/// The retry policy a caller would apply: repeat while the error says retrying may help.
async fn retry<T, F, Fut>(mut operation: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut attempts = 0;
    loop {
        match operation().await {
            Err(error) if error.is_retryable() && attempts < 10 => attempts += 1,
            other => return other,
        }
    }
}

/// Retries every retryable failure of the wrapped store.
struct Retrying<S>(Arc<S>);

#[async_trait]
impl<S: Kv> Kv for Retrying<S> {
    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        retry(|| self.0.get(key)).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<u64> {
        retry(|| self.0.put(key, value.clone(), ttl)).await
    }
    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<Option<u64>> {
        retry(|| self.0.put_if_absent(key, value.clone(), ttl)).await
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<u64> {
        retry(|| self.0.compare_and_set(key, expected, value.clone(), ttl)).await
    }
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        retry(|| Kv::delete(&*self.0, key)).await
    }
    async fn compare_and_delete(&self, key: &str, expected: u64) -> StoreResult<()> {
        retry(|| self.0.compare_and_delete(key, expected)).await
    }
    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Entry)>> {
        retry(|| self.0.scan(prefix, start_after, limit)).await
    }
    async fn watch(&self, prefix: &str) -> StoreResult<BoxStream<'static, KvEvent>> {
        retry(|| self.0.watch(prefix)).await
    }
}

#[async_trait]
impl<S: Log> Log for Retrying<S> {
    async fn append(&self, topic: &str, payload: Vec<u8>) -> StoreResult<u64> {
        retry(|| self.0.append(topic, payload.clone())).await
    }
    async fn append_batch(&self, topic: &str, payloads: Vec<Vec<u8>>) -> StoreResult<Vec<u64>> {
        retry(|| self.0.append_batch(topic, payloads.clone())).await
    }
    async fn read(&self, topic: &str, from: u64, limit: usize) -> StoreResult<Vec<Record>> {
        retry(|| self.0.read(topic, from, limit)).await
    }
    async fn last_offset(&self, topic: &str) -> StoreResult<u64> {
        retry(|| self.0.last_offset(topic)).await
    }
    async fn consume(
        &self,
        topic: &str,
        consumer: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<Record>> {
        retry(|| self.0.consume(topic, consumer, limit, lease)).await
    }
    async fn ack(&self, topic: &str, consumer: &str, offset: u64) -> StoreResult<()> {
        retry(|| self.0.ack(topic, consumer, offset)).await
    }
    async fn trim(&self, topic: &str, before: u64) -> StoreResult<()> {
        retry(|| self.0.trim(topic, before)).await
    }
    async fn wait_for(&self, topic: &str, after_offset: u64) -> StoreResult<()> {
        retry(|| self.0.wait_for(topic, after_offset)).await
    }
}

#[async_trait]
impl<S: Blobs> Blobs for Retrying<S> {
    async fn put(&self, bytes: Vec<u8>) -> StoreResult<Digest> {
        retry(|| self.0.put(bytes.clone())).await
    }
    async fn get(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>> {
        retry(|| self.0.get(digest)).await
    }
    async fn has(&self, digest: &Digest) -> StoreResult<bool> {
        retry(|| self.0.has(digest)).await
    }
    async fn delete(&self, digest: &Digest) -> StoreResult<bool> {
        retry(|| Blobs::delete(&*self.0, digest)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_holds_through_injected_failures_when_callers_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = unreliable(dir.path(), 3).await;
    let retrying = Arc::new(Retrying(store.clone()));
    conformance::kv_suite(retrying.clone()).await;
    conformance::log_suite(retrying.clone()).await;
    conformance::blobs_suite(retrying).await;
    assert!(
        store.failures_injected() > 100,
        "the suite ran into injected failures ({})",
        store.failures_injected()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_reach_the_caller_as_retryable_io_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = unreliable(dir.path(), 1).await;
    let errors = [
        Kv::put(&*store, "key", b"v".to_vec(), None)
            .await
            .map(|_| ()),
        Log::append(&*store, "topic", b"r".to_vec())
            .await
            .map(|_| ()),
        Blobs::put(&*store, b"blob".to_vec()).await.map(|_| ()),
        Log::ack(&*store, "topic", "worker", 1).await,
    ];
    for error in errors {
        match error {
            Err(error @ StoreError::Io(_)) => {
                assert!(error.is_retryable(), "{error} should be retryable")
            }
            other => panic!("expected an injected Io error, got {other:?}"),
        }
    }
    // The failed calls had no effect on the real store underneath.
    let inner = store.inner();
    assert_eq!(Kv::get(&**inner, "key").await.expect("get"), None);
    assert_eq!(inner.last_offset("topic").await.expect("last_offset"), 0);
    assert!(!inner.has(&Digest::of(b"blob")).await.expect("has"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_appends_land_exactly_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = unreliable(dir.path(), 2).await;
    let mut offsets = Vec::new();
    for index in 0..20u8 {
        offsets.push(
            retry(|| store.append("queue", vec![index]))
                .await
                .expect("append with retries"),
        );
    }
    assert_eq!(offsets, (1..=20).collect::<Vec<u64>>());
    assert!(store.failures_injected() >= 10);
    let records = store.inner().read("queue", 1, 100).await.expect("read");
    assert_eq!(
        records
            .iter()
            .map(|record| record.payload[0])
            .collect::<Vec<_>>(),
        (0..20).collect::<Vec<u8>>()
    );
    // Consuming and acking through failures still ends with everything acked once.
    let mut acked = 0;
    loop {
        let batch = retry(|| store.consume("queue", "worker", 7, Duration::from_secs(60)))
            .await
            .expect("consume");
        if batch.is_empty() {
            break;
        }
        for record in batch {
            retry(|| store.ack("queue", "worker", record.offset))
                .await
                .expect("ack");
            acked += 1;
        }
    }
    assert_eq!(acked, 20);
}
