//! Memoization of pure functions: a successful result is cached under
//! `memo/{account}/{function}/{version}/{configuration revision}/{sha256 of the input}` for the function's TTL,
//! and a call with the same input to the same version is answered from it without touching an instance.
//!
//! The revision is part of the key, so changing `$LATEST`'s code or configuration never serves an old
//! result. Failures are never cached. The cost is visible: the run whose result was cached records
//! `memo_byte_seconds` (bytes stored × seconds kept), and a hit records `memoized: true` with no duration.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use wisp_control::Resolved;
use wisp_types::*;

use crate::Engine;
use crate::instance::unix_ms;

/// One cached result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MemoEntry {
    /// The run that produced it.
    pub request_id: String,
    pub version: String,
    pub stored_ms: u64,
    pub result_base64: String,
}

impl MemoEntry {
    pub fn result(&self) -> Bytes {
        base64::engine::general_purpose::STANDARD
            .decode(&self.result_base64)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

fn memo_key(resolved: &Resolved, version: &StoredVersion, payload: &[u8]) -> String {
    format!(
        "memo/{}/{}/{}/{}/{}",
        resolved.account,
        resolved.function_name,
        version.config.version,
        version.config.revision_id,
        hex::encode(sha2::Sha256::digest(payload))
    )
}

impl Engine {
    /// The cached result for this input, if any (a store read; errors count as a miss).
    pub(crate) async fn memo_lookup(
        &self,
        resolved: &Resolved,
        version: &StoredVersion,
        payload: &[u8],
    ) -> Option<MemoEntry> {
        let key = memo_key(resolved, version, payload);
        match self.control.kv().get(&key).await {
            Ok(Some(entry)) => serde_json::from_slice(&entry.value).ok(),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, key, "could not read a memoized result; running the function");
                None
            }
        }
    }

    /// Caches a successful result in the background; returns its cost in byte-seconds.
    /// The first result cached for an input stays until it expires: a run that raced it (started
    /// before the cache held anything) does not replace it.
    pub(crate) fn memo_store(
        &self,
        resolved: &Resolved,
        config: &MemoizationConfig,
        version: &StoredVersion,
        payload: &[u8],
        request_id: &str,
        result: &[u8],
    ) -> u64 {
        let key = memo_key(resolved, version, payload);
        let entry = MemoEntry {
            request_id: request_id.to_string(),
            version: version.config.version.clone(),
            stored_ms: unix_ms(),
            result_base64: base64::engine::general_purpose::STANDARD.encode(result),
        };
        let bytes = serde_json::to_vec(&entry).expect("memo entries serialise");
        let cost = (bytes.len() + key.len()) as u64 * config.ttl_seconds as u64;
        let kv = self.control.kv().clone();
        let ttl = Duration::from_secs(config.ttl_seconds as u64);
        tokio::spawn(async move {
            if let Err(error) = kv.put_if_absent(&key, bytes, Some(ttl)).await {
                tracing::warn!(%error, key, "could not cache a pure function's result");
            }
        });
        cost
    }
}
