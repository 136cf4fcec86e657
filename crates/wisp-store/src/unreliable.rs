//! Fault injection: [`UnreliableStore`] wraps a real backend and fails every Nth operation with
//! [`StoreError::Io`], so tests can show that store errors reach the caller and that retrying them works.
//!
//! An injected failure happens *before* the wrapped operation runs, so the operation has had no effect and
//! a retry is always safe — the same promise a real `Io` error makes by being `is_retryable()`.
//! This wrapper must never fake a store's behaviour: every operation that is not failed goes to the real
//! backend unchanged. It is for tests; nothing in production should construct it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::{Blobs, Digest, Entry, Kv, KvEvent, Log, Record, StoreError, StoreResult};

/// A store that fails every `fail_every`-th call (counted across all three traits) with [`StoreError::Io`].
pub struct UnreliableStore<S> {
    inner: Arc<S>,
    fail_every: u64,
    calls: AtomicU64,
    failures: AtomicU64,
}

impl<S> UnreliableStore<S> {
    /// Wraps `inner`; `fail_every == 0` never fails, `1` fails every call, `3` every third call.
    pub fn new(inner: Arc<S>, fail_every: u64) -> UnreliableStore<S> {
        UnreliableStore {
            inner,
            fail_every,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// How many failures were injected so far.
    pub fn failures_injected(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn maybe_fail(&self, operation: &str) -> StoreResult<()> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_every != 0 && call.is_multiple_of(self.fail_every) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Io(format!(
                "injected failure of {operation} (call {call})"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Kv> Kv for UnreliableStore<S> {
    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        self.maybe_fail("kv get")?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<u64> {
        self.maybe_fail("kv put")?;
        self.inner.put(key, value, ttl).await
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<Option<u64>> {
        self.maybe_fail("kv put_if_absent")?;
        self.inner.put_if_absent(key, value, ttl).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreResult<u64> {
        self.maybe_fail("kv compare_and_set")?;
        self.inner.compare_and_set(key, expected, value, ttl).await
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.maybe_fail("kv delete")?;
        Kv::delete(&*self.inner, key).await
    }

    async fn compare_and_delete(&self, key: &str, expected: u64) -> StoreResult<()> {
        self.maybe_fail("kv compare_and_delete")?;
        self.inner.compare_and_delete(key, expected).await
    }

    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Entry)>> {
        self.maybe_fail("kv scan")?;
        self.inner.scan(prefix, start_after, limit).await
    }

    async fn watch(&self, prefix: &str) -> StoreResult<BoxStream<'static, KvEvent>> {
        self.maybe_fail("kv watch")?;
        self.inner.watch(prefix).await
    }
}

#[async_trait]
impl<S: Log> Log for UnreliableStore<S> {
    async fn append(&self, topic: &str, payload: Vec<u8>) -> StoreResult<u64> {
        self.maybe_fail("log append")?;
        self.inner.append(topic, payload).await
    }

    async fn append_batch(&self, topic: &str, payloads: Vec<Vec<u8>>) -> StoreResult<Vec<u64>> {
        self.maybe_fail("log append_batch")?;
        self.inner.append_batch(topic, payloads).await
    }

    async fn read(&self, topic: &str, from: u64, limit: usize) -> StoreResult<Vec<Record>> {
        self.maybe_fail("log read")?;
        self.inner.read(topic, from, limit).await
    }

    async fn last_offset(&self, topic: &str) -> StoreResult<u64> {
        self.maybe_fail("log last_offset")?;
        self.inner.last_offset(topic).await
    }

    async fn consume(
        &self,
        topic: &str,
        consumer: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<Record>> {
        self.maybe_fail("log consume")?;
        self.inner.consume(topic, consumer, limit, lease).await
    }

    async fn ack(&self, topic: &str, consumer: &str, offset: u64) -> StoreResult<()> {
        self.maybe_fail("log ack")?;
        self.inner.ack(topic, consumer, offset).await
    }

    async fn trim(&self, topic: &str, before: u64) -> StoreResult<()> {
        self.maybe_fail("log trim")?;
        self.inner.trim(topic, before).await
    }

    async fn wait_for(&self, topic: &str, after_offset: u64) -> StoreResult<()> {
        self.maybe_fail("log wait_for")?;
        self.inner.wait_for(topic, after_offset).await
    }
}

#[async_trait]
impl<S: Blobs> Blobs for UnreliableStore<S> {
    async fn put(&self, bytes: Vec<u8>) -> StoreResult<Digest> {
        self.maybe_fail("blob put")?;
        self.inner.put(bytes).await
    }

    async fn get(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>> {
        self.maybe_fail("blob get")?;
        self.inner.get(digest).await
    }

    async fn has(&self, digest: &Digest) -> StoreResult<bool> {
        self.maybe_fail("blob has")?;
        self.inner.has(digest).await
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<bool> {
        self.maybe_fail("blob delete")?;
        Blobs::delete(&*self.inner, digest).await
    }
}
