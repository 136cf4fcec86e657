//! Idempotent invocations: one execution per idempotency key, its outcome replayed to duplicates.
//!
//! Each key of an idempotent function has one record in the store's `Kv`, at
//! `idk/{account}/{function}/{sha256 of the key}`:
//! - the first call **claims** the key with put-if-absent (or compare-and-set over an expired record),
//!   writing `Running` with a lease that lasts the function's timeout plus a grace period; only then does it run;
//! - duplicates that arrive while it runs **wait** for the record to change (woken in this process at once,
//!   otherwise by re-reading it), then get its outcome: no second execution;
//! - the execution **completes** the key by compare-and-set on the revision it claimed: the outcome (response or
//!   error document, version, original request id) is replayed to duplicates for the function's window; a failure
//!   is replayed only when the function remembers failures, otherwise the key is released so a duplicate runs again;
//! - an execution that dies with the server leaves its `Running` record, which holds the key until its lease
//!   ends, so a retry can never overlap a first attempt that may still be running;
//! - a duplicate with a different payload (compared by sha256) is refused with `IdempotencyKeyMismatchException`
//!   unless the function allows it.
//!
//! Because all of it lives in the store, it holds across restarts and for sync and async calls alike. The
//! outcome is stored before the caller is answered: that store write is the price of idempotency on the invoke
//! path. Records stay readable (as `expired`) for an hour after their window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use wisp_control::Resolved;
use wisp_store::StoreError;
use wisp_types::*;

use crate::Engine;
use crate::instance::unix_ms;

/// How long after its function's timeout a claim still holds the key.
const LEASE_GRACE: Duration = Duration::from_secs(5);
/// How long a record stays readable after its lease or window ends.
const KEPT_AFTER: Duration = Duration::from_secs(3600);
/// How often a waiting duplicate re-reads a key that another process holds.
const RECHECK: Duration = Duration::from_millis(50);

/// Where an execution behind a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Running,
    Succeeded,
    Failed,
}

/// The record of one idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyRecord {
    pub key: String,
    pub state: KeyState,
    /// The request id of the execution.
    pub request_id: String,
    pub payload_sha256: String,
    pub started_ms: u64,
    /// Running: when the claim lapses. Finished: when the outcome stops being replayed.
    pub until_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `errorType` of a failed execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The response or error document, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_base64: Option<String>,
}

impl KeyRecord {
    pub fn result(&self) -> Bytes {
        self.result_base64
            .as_deref()
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// The state as the API reports it: `running`, `succeeded`, `failed` or `expired`.
    pub fn reported_state(&self, now_ms: u64) -> &'static str {
        if now_ms >= self.until_ms {
            return "expired";
        }
        match self.state {
            KeyState::Running => "running",
            KeyState::Succeeded => "succeeded",
            KeyState::Failed => "failed",
        }
    }
}

/// What a call with a key does.
pub(crate) enum Claim {
    /// This call runs the function, then calls [`Engine::complete_key`].
    Run(Held),
    /// This call answers with a stored outcome.
    Replay(KeyRecord),
}

/// A key this call has claimed.
pub(crate) struct Held {
    store_key: String,
    revision: u64,
    record: KeyRecord,
    remember_failures: bool,
    window: Duration,
}

/// Duplicates in this process waiting for a key, woken when it completes.
#[derive(Default)]
pub(crate) struct Waiters {
    keys: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl Waiters {
    fn notify_for(&self, store_key: &str) -> Arc<tokio::sync::Notify> {
        self.keys
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(store_key.to_string())
            .or_default()
            .clone()
    }

    fn wake(&self, store_key: &str) {
        if let Some(notify) = self
            .keys
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(store_key)
        {
            notify.notify_waiters();
        }
    }
}

pub fn key_store_key(account: &str, function: &str, key: &str) -> String {
    format!(
        "idk/{account}/{function}/{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

fn store_failure(error: StoreError) -> ApiError {
    ApiError::internal(format!("store error: {error}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn ttl_until(until_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(until_ms.saturating_sub(now_ms)) + KEPT_AFTER
}

impl Engine {
    /// Claims `key` for the call `request_id` of `version`, waits for another execution of it, or returns
    /// the outcome to replay.
    pub(crate) async fn claim_key(
        &self,
        resolved: &Resolved,
        config: &IdempotencyConfig,
        key: &str,
        payload: &[u8],
        request_id: &str,
        timeout: Duration,
    ) -> Result<Claim, ApiError> {
        let kv = self.control.kv();
        let store_key = key_store_key(&resolved.account.0, &resolved.function_name, key);
        let payload_sha256 = sha256_hex(payload);
        loop {
            let now = unix_ms();
            let running = KeyRecord {
                key: key.to_string(),
                state: KeyState::Running,
                request_id: request_id.to_string(),
                payload_sha256: payload_sha256.clone(),
                started_ms: now,
                until_ms: now + (timeout + LEASE_GRACE).as_millis() as u64,
                version: None,
                error_type: None,
                result_base64: None,
            };
            let bytes = serde_json::to_vec(&running).expect("key records serialise");
            let ttl = ttl_until(running.until_ms, now);
            let held = |revision| {
                Claim::Run(Held {
                    store_key: store_key.clone(),
                    revision,
                    record: running.clone(),
                    remember_failures: config.remember_failures,
                    window: Duration::from_secs(config.window_seconds as u64),
                })
            };
            let Some(entry) = kv.get(&store_key).await.map_err(store_failure)? else {
                match kv
                    .put_if_absent(&store_key, bytes, Some(ttl))
                    .await
                    .map_err(store_failure)?
                {
                    Some(revision) => return Ok(held(revision)),
                    None => continue,
                }
            };
            let record: KeyRecord = serde_json::from_slice(&entry.value).map_err(|error| {
                ApiError::internal(format!(
                    "idempotency record {store_key} is unreadable: {error}"
                ))
            })?;
            let live = now < record.until_ms;
            if !live {
                // The window (or a dead execution's lease) is over: this call starts afresh.
                match kv
                    .compare_and_set(&store_key, Some(entry.revision), bytes, Some(ttl))
                    .await
                {
                    Ok(revision) => return Ok(held(revision)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(error) => return Err(store_failure(error)),
                }
            }
            if record.payload_sha256 != payload_sha256 && !config.allow_payload_mismatch {
                return Err(ApiError::new(
                    ErrorCode::IdempotencyKeyMismatch,
                    format!(
                        "idempotency key {key:?} of {} was first used with another payload (request {}); send the same payload, or use a new key",
                        resolved.function_name, record.request_id
                    ),
                ));
            }
            if record.state != KeyState::Running {
                return Ok(Claim::Replay(record));
            }
            // Another execution holds the key: wait for it to finish (or for its lease to lapse).
            let notify = self.idempotency_waiters.notify_for(&store_key);
            let lapse = Duration::from_millis(record.until_ms.saturating_sub(now));
            let _ = tokio::time::timeout(RECHECK.min(lapse), notify.notified()).await;
        }
    }

    /// Stores the outcome of a claimed execution, before its caller is answered.
    pub(crate) async fn complete_key(
        &self,
        held: Held,
        version: &str,
        error_type: Option<&str>,
        result: &[u8],
    ) {
        let kv = self.control.kv();
        let outcome = if error_type.is_some() && !held.remember_failures {
            // Not remembered: release the key so a duplicate runs again.
            kv.compare_and_delete(&held.store_key, held.revision).await
        } else {
            let now = unix_ms();
            let record = KeyRecord {
                state: if error_type.is_some() {
                    KeyState::Failed
                } else {
                    KeyState::Succeeded
                },
                until_ms: now + held.window.as_millis() as u64,
                version: Some(version.to_string()),
                error_type: error_type.map(str::to_string),
                result_base64: Some(base64::engine::general_purpose::STANDARD.encode(result)),
                ..held.record
            };
            let ttl = ttl_until(record.until_ms, now);
            kv.compare_and_set(
                &held.store_key,
                Some(held.revision),
                serde_json::to_vec(&record).expect("key records serialise"),
                Some(ttl),
            )
            .await
            .map(|_| ())
        };
        if let Err(error) = outcome {
            // The claim lapsed (the run outlived its lease) or the store failed: a later duplicate may run again.
            tracing::warn!(%error, key = held.store_key, "could not store the outcome of an idempotent execution");
        }
        self.idempotency_waiters.wake(&held.store_key);
    }

    /// Gives a claimed key back without an outcome (the call never ran, e.g. it was throttled).
    pub(crate) async fn release_key(&self, held: Held) {
        if let Err(error) = self
            .control
            .kv()
            .compare_and_delete(&held.store_key, held.revision)
            .await
        {
            tracing::warn!(%error, key = held.store_key, "could not release an idempotency key");
        }
        self.idempotency_waiters.wake(&held.store_key);
    }

    /// The record behind a key of a function, for `GET /wisp/v1/functions/{name}/idempotency/{key}`.
    pub async fn idempotency_record(
        &self,
        account: &AccountId,
        function: &str,
        key: &str,
    ) -> Result<Option<KeyRecord>, ApiError> {
        let store_key = key_store_key(&account.0, function, key);
        match self
            .control
            .kv()
            .get(&store_key)
            .await
            .map_err(store_failure)?
        {
            Some(entry) => Ok(Some(serde_json::from_slice(&entry.value).map_err(
                |error| {
                    ApiError::internal(format!(
                        "idempotency record {store_key} is unreadable: {error}"
                    ))
                },
            )?)),
            None => Ok(None),
        }
    }
}
