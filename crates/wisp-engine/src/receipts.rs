//! Issuing receipts: when a function (or its account) has receipts on, each completed invocation
//! gets a receipt signed with the server's current key and kept by request id in the `Kv`
//! (`receipt/{account}/{request id}`, without expiry).
//!
//! The invoke path only gathers what the receipt needs (cheap clones of the input and output
//! bytes); hashing and signing happen on the background writer ([`crate::sinks`]), so a receipt
//! adds no store write and no cryptography to the caller's wait. A streamed response gets no
//! receipt: its bytes go to the caller chunk by chunk and are not kept to be hashed.

use std::sync::Arc;

use bytes::Bytes;
use wisp_control::Resolved;
use wisp_control::receipts::CurrentKey;
use wisp_types::receipt::{ReceiptBody, sha256_hex};
use wisp_types::{InvocationRecord, InvocationStatus, StoredVersion, function_arn};

/// Key of one invocation's receipt.
pub fn receipt_key(account: &str, request_id: &str) -> String {
    format!("receipt/{account}/{request_id}")
}

/// A receipt waiting to be hashed and signed by the background writer.
pub(crate) struct PendingReceipt {
    key: Arc<CurrentKey>,
    body: ReceiptBody,
    input: Bytes,
    output: Bytes,
}

impl PendingReceipt {
    /// Hashes the payloads and signs; returns the key and stored value.
    pub(crate) fn sign(mut self) -> Option<(String, Vec<u8>)> {
        self.body.input_sha256 = sha256_hex(&self.input);
        self.body.output_sha256 = sha256_hex(&self.output);
        let key = receipt_key(&self.body.account, &self.body.request_id);
        match self.body.sign(&self.key.key) {
            Ok(receipt) => Some((
                key,
                serde_json::to_vec(&receipt).expect("receipts serialise"),
            )),
            Err(error) => {
                tracing::warn!(%error, key, "could not sign a receipt");
                None
            }
        }
    }
}

fn status_name(status: InvocationStatus) -> &'static str {
    match status {
        InvocationStatus::Succeeded => "succeeded",
        InvocationStatus::TimedOut => "timed_out",
        _ => "failed",
    }
}

/// What the receipt of a finished run will say, or `None` when the function has receipts off
/// (or the server has no key yet). `input` is the payload as the caller sent it, `output` what
/// the caller got back.
pub(crate) fn pending(
    region: &str,
    resolved: &Resolved,
    version: &StoredVersion,
    record: &InvocationRecord,
    key: Option<Arc<CurrentKey>>,
    input: Bytes,
    output: Bytes,
) -> Option<PendingReceipt> {
    let key = key?;
    Some(PendingReceipt {
        key,
        body: ReceiptBody {
            account: record.account.clone(),
            function_arn: function_arn(region, &resolved.account, &resolved.function_name),
            version: record.version.clone(),
            code_sha256: version.code_digest.clone(),
            request_id: record.request_id.clone(),
            status: status_name(record.status).to_string(),
            input_sha256: String::new(),
            output_sha256: String::new(),
            started_ms: record.started_ms,
            ended_ms: crate::instance::unix_ms(),
        },
        input,
        output,
    })
}
