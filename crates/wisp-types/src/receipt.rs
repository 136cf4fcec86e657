//! Verifiable receipts: what a function returned for which input, signed with the server's Ed25519
//! key, in a form anyone can check without Wisp's code.
//!
//! # The signed bytes (format `wisp-receipt-v1`)
//!
//! The signature is Ed25519 (RFC 8032, pure, no prehash) over this UTF-8 text: the line
//! `wisp-receipt-v1`, then one `name=value` line per field in exactly this order, each line ending
//! with `\n` (also the last one), no spaces around `=`:
//!
//! ```text
//! wisp-receipt-v1
//! key_id=<id of the signing key>
//! account=<account id>
//! function_arn=<unqualified function ARN>
//! version=<executed version: $LATEST or a number>
//! code_sha256=<hex sha256 of the version's deployment package>
//! request_id=<request id>
//! status=<succeeded | failed | timed_out>
//! input_sha256=<hex sha256 of the request payload as the caller sent it>
//! output_sha256=<hex sha256 of the response or error document the caller got>
//! started_ms=<unix milliseconds, decimal>
//! ended_ms=<unix milliseconds, decimal>
//! ```
//!
//! Hex digits are lowercase. No value may contain a newline, `\r` or NUL ([`Receipt::signed_bytes`]
//! refuses one). The receipt's JSON document carries the same fields under the same names, plus
//! `format`, `algorithm` (`ed25519`), `public_key` (base64 of the 32-byte key, a convenience: trust
//! comes from the server's published keys) and `signature` (base64 of the 64-byte signature). A key id
//! is the first 16 hex digits of the sha256 of the raw public key, so a key list can be checked too.
//!
//! This module does no I/O and reads no clock.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format name: the first line of the signed text.
pub const RECEIPT_FORMAT: &str = "wisp-receipt-v1";
/// The only signature algorithm.
pub const RECEIPT_ALGORITHM: &str = "ed25519";

/// The facts a receipt attests, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    pub account: String,
    pub function_arn: String,
    pub version: String,
    pub code_sha256: String,
    pub request_id: String,
    pub status: String,
    pub input_sha256: String,
    pub output_sha256: String,
    pub started_ms: u64,
    pub ended_ms: u64,
}

/// A signed receipt, as stored and as `GET /wisp/v1/receipts/{request_id}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    pub key_id: String,
    #[serde(flatten)]
    pub body: ReceiptBody,
    pub algorithm: String,
    pub public_key: String,
    pub signature: String,
}

/// A public key as `GET /wisp/v1/keys` publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    pub key_id: String,
    pub algorithm: String,
    /// Base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// RFC 3339 time the key was made.
    pub created: String,
    /// RFC 3339 time it stopped signing; absent for the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

/// Why a receipt does not verify; each message names the field and both values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// the receipt's format is not the one this verifier knows
    #[error("receipt format {0:?} is not supported (expected {RECEIPT_FORMAT:?})")]
    Format(String),
    /// the algorithm is not Ed25519
    #[error("receipt algorithm {0:?} is not supported (expected {RECEIPT_ALGORITHM:?})")]
    Algorithm(String),
    /// a field holds a character the signed text cannot carry
    #[error("receipt field {field} contains a newline, carriage return or NUL")]
    Field { field: &'static str },
    /// the public key is not base64 of 32 bytes, or not a valid curve point
    #[error("public key {key_id} is malformed: {reason}")]
    PublicKey { key_id: String, reason: String },
    /// the key id is not the one derived from the public key
    #[error("key id {key_id} does not match its public key (which has id {derived})")]
    KeyId { key_id: String, derived: String },
    /// the signature is not base64 of 64 bytes
    #[error("signature is malformed: {0}")]
    SignatureMalformed(String),
    /// the signature does not match the signed text under the key
    #[error(
        "signature does not match the receipt under key {0}: a field, the signature or the key differs from what was signed"
    )]
    Signature(String),
    /// a file does not hash to the receipt's digest
    #[error("{what} sha256 {actual} differs from the receipt's {what}_sha256 {expected}")]
    Digest {
        what: &'static str,
        expected: String,
        actual: String,
    },
}

/// Lowercase hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The id of a public key: the first 16 hex digits of its sha256.
pub fn key_id(public_key: &VerifyingKey) -> String {
    sha256_hex(public_key.as_bytes())[..16].to_string()
}

/// A signing key made from 32 secret bytes (the caller brings the randomness).
pub fn signing_key(secret: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(secret)
}

/// Decodes a base64 Ed25519 public key.
pub fn decode_public_key(key_id: &str, base64_key: &str) -> Result<VerifyingKey, ReceiptError> {
    let malformed = |reason: String| ReceiptError::PublicKey {
        key_id: key_id.to_string(),
        reason,
    };
    let bytes = BASE64
        .decode(base64_key)
        .map_err(|error| malformed(format!("not base64: {error}")))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| malformed(format!("{} bytes, expected 32", bytes.len())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| malformed("not a valid Ed25519 point".into()))
}

impl ReceiptBody {
    /// Signs the body with `key`, naming the key in the receipt.
    pub fn sign(self, key: &SigningKey) -> Result<Receipt, ReceiptError> {
        let public = key.verifying_key();
        let mut receipt = Receipt {
            format: RECEIPT_FORMAT.to_string(),
            key_id: key_id(&public),
            body: self,
            algorithm: RECEIPT_ALGORITHM.to_string(),
            public_key: BASE64.encode(public.as_bytes()),
            signature: String::new(),
        };
        let signature = key.sign(&receipt.signed_bytes()?);
        receipt.signature = BASE64.encode(signature.to_bytes());
        Ok(receipt)
    }
}

impl Receipt {
    /// The exact bytes the signature covers (see the module documentation).
    pub fn signed_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let body = &self.body;
        let started = body.started_ms.to_string();
        let ended = body.ended_ms.to_string();
        let fields: [(&'static str, &str); 11] = [
            ("key_id", &self.key_id),
            ("account", &body.account),
            ("function_arn", &body.function_arn),
            ("version", &body.version),
            ("code_sha256", &body.code_sha256),
            ("request_id", &body.request_id),
            ("status", &body.status),
            ("input_sha256", &body.input_sha256),
            ("output_sha256", &body.output_sha256),
            ("started_ms", &started),
            ("ended_ms", &ended),
        ];
        let mut text = String::with_capacity(512);
        text.push_str(RECEIPT_FORMAT);
        text.push('\n');
        for (name, value) in fields {
            if value.contains(['\n', '\r', '\0']) {
                return Err(ReceiptError::Field { field: name });
            }
            text.push_str(name);
            text.push('=');
            text.push_str(value);
            text.push('\n');
        }
        Ok(text.into_bytes())
    }

    /// Checks the signature with `public_key` (the trusted key named by the receipt's key id).
    pub fn verify_with(&self, public_key: &VerifyingKey) -> Result<(), ReceiptError> {
        if self.format != RECEIPT_FORMAT {
            return Err(ReceiptError::Format(self.format.clone()));
        }
        if self.algorithm != RECEIPT_ALGORITHM {
            return Err(ReceiptError::Algorithm(self.algorithm.clone()));
        }
        let derived = key_id(public_key);
        if derived != self.key_id {
            return Err(ReceiptError::KeyId {
                key_id: self.key_id.clone(),
                derived,
            });
        }
        let bytes = BASE64
            .decode(&self.signature)
            .map_err(|error| ReceiptError::SignatureMalformed(format!("not base64: {error}")))?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            ReceiptError::SignatureMalformed(format!("{} bytes, expected 64", bytes.len()))
        })?;
        let signature = Signature::from_bytes(&bytes);
        public_key
            .verify(&self.signed_bytes()?, &signature)
            .map_err(|_| ReceiptError::Signature(self.key_id.clone()))
    }

    /// Checks the signature with the public key the receipt carries. This proves only that the
    /// receipt is intact, not who signed it: compare the key with the server's published keys.
    pub fn verify_embedded(&self) -> Result<(), ReceiptError> {
        let key = decode_public_key(&self.key_id, &self.public_key)?;
        self.verify_with(&key)
    }

    /// Checks that `input` hashes to the receipt's input digest.
    pub fn check_input(&self, input: &[u8]) -> Result<(), ReceiptError> {
        check_digest("input", &self.body.input_sha256, input)
    }

    /// Checks that `output` hashes to the receipt's output digest.
    pub fn check_output(&self, output: &[u8]) -> Result<(), ReceiptError> {
        check_digest("output", &self.body.output_sha256, output)
    }
}

fn check_digest(what: &'static str, expected: &str, bytes: &[u8]) -> Result<(), ReceiptError> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(ReceiptError::Digest {
            what,
            expected: expected.to_string(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> ReceiptBody {
        ReceiptBody {
            account: "000000000000".into(),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:echo".into(),
            version: "3".into(),
            code_sha256: sha256_hex(b"zip"),
            request_id: "0193a0c2-0000-7000-8000-000000000001".into(),
            status: "succeeded".into(),
            input_sha256: sha256_hex(b"{\"a\":1}"),
            output_sha256: sha256_hex(b"{\"b\":2}"),
            started_ms: 1_764_000_000_000,
            ended_ms: 1_764_000_000_012,
        }
    }

    fn key(seed: u8) -> SigningKey {
        signing_key(&[seed; 32])
    }

    #[test]
    fn a_genuine_receipt_verifies_with_its_key_and_its_embedded_key() {
        let receipt = body().sign(&key(1)).unwrap();
        receipt.verify_with(&key(1).verifying_key()).unwrap();
        receipt.verify_embedded().unwrap();
        receipt.check_input(b"{\"a\":1}").unwrap();
        receipt.check_output(b"{\"b\":2}").unwrap();
        // The JSON document round-trips to the same receipt.
        let json = serde_json::to_string(&receipt).unwrap();
        let back: Receipt = serde_json::from_str(&json).unwrap();
        back.verify_with(&key(1).verifying_key()).unwrap();
    }

    #[test]
    fn the_signed_text_is_the_documented_one() {
        let receipt = body().sign(&key(1)).unwrap();
        let text = String::from_utf8(receipt.signed_bytes().unwrap()).unwrap();
        let expected = format!(
            "wisp-receipt-v1\nkey_id={}\naccount=000000000000\nfunction_arn=arn:aws:lambda:us-east-1:000000000000:function:echo\nversion=3\ncode_sha256={}\nrequest_id=0193a0c2-0000-7000-8000-000000000001\nstatus=succeeded\ninput_sha256={}\noutput_sha256={}\nstarted_ms=1764000000000\nended_ms=1764000000012\n",
            receipt.key_id,
            sha256_hex(b"zip"),
            sha256_hex(b"{\"a\":1}"),
            sha256_hex(b"{\"b\":2}"),
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn changing_any_field_breaks_the_signature() {
        type Change = fn(&mut Receipt);
        let changes: &[(&str, Change)] = &[
            ("account", |r| r.body.account.push('1')),
            ("function_arn", |r| r.body.function_arn.push('x')),
            ("version", |r| r.body.version = "4".into()),
            ("code_sha256", |r| r.body.code_sha256 = sha256_hex(b"other")),
            ("request_id", |r| r.body.request_id.push('2')),
            ("status", |r| r.body.status = "failed".into()),
            ("input_sha256", |r| r.body.input_sha256 = sha256_hex(b"x")),
            ("output_sha256", |r| r.body.output_sha256 = sha256_hex(b"y")),
            ("started_ms", |r| r.body.started_ms += 1),
            ("ended_ms", |r| r.body.ended_ms -= 1),
        ];
        let genuine = body().sign(&key(1)).unwrap();
        for (field, change) in changes {
            let mut receipt = genuine.clone();
            change(&mut receipt);
            assert_eq!(
                receipt.verify_with(&key(1).verifying_key()),
                Err(ReceiptError::Signature(genuine.key_id.clone())),
                "changed {field}"
            );
        }
    }

    #[test]
    fn a_wrong_or_malformed_key_or_signature_fails_with_its_reason() {
        let genuine = body().sign(&key(1)).unwrap();
        // Another key: its id differs from the one the receipt names.
        assert!(matches!(
            genuine.verify_with(&key(2).verifying_key()),
            Err(ReceiptError::KeyId { .. })
        ));
        // Another key whose id is claimed: the signature does not match.
        let mut claimed = genuine.clone();
        claimed.key_id = key_id(&key(2).verifying_key());
        assert!(matches!(
            claimed.verify_with(&key(2).verifying_key()),
            Err(ReceiptError::Signature(_))
        ));
        type Change = fn(&mut Receipt);
        type Check = fn(&ReceiptError) -> bool;
        let cases: &[(&str, Change, Check)] = &[
            (
                "signature not base64",
                |r| r.signature = "!!".into(),
                |e| matches!(e, ReceiptError::SignatureMalformed(_)),
            ),
            (
                "signature too short",
                |r| r.signature = BASE64.encode([0u8; 63]),
                |e| matches!(e, ReceiptError::SignatureMalformed(_)),
            ),
            (
                "one byte of the signature changed",
                |r| {
                    let mut bytes = BASE64.decode(&r.signature).unwrap();
                    bytes[10] ^= 1;
                    r.signature = BASE64.encode(bytes);
                },
                |e| matches!(e, ReceiptError::Signature(_)),
            ),
            (
                "embedded key malformed",
                |r| r.public_key = BASE64.encode([1u8; 31]),
                |e| matches!(e, ReceiptError::PublicKey { .. }),
            ),
            (
                "embedded key replaced",
                |r| r.public_key = BASE64.encode(key(3).verifying_key().as_bytes()),
                |e| matches!(e, ReceiptError::KeyId { .. }),
            ),
            (
                "unknown format",
                |r| r.format = "wisp-receipt-v2".into(),
                |e| matches!(e, ReceiptError::Format(_)),
            ),
            (
                "unknown algorithm",
                |r| r.algorithm = "rsa".into(),
                |e| matches!(e, ReceiptError::Algorithm(_)),
            ),
            (
                "newline in a field",
                |r| r.body.version = "3\nstatus=failed".into(),
                |e| matches!(e, ReceiptError::Field { field: "version" }),
            ),
        ];
        for (case, change, expected) in cases {
            let mut receipt = genuine.clone();
            change(&mut receipt);
            let error = receipt.verify_embedded().unwrap_err();
            assert!(expected(&error), "{case}: got {error}");
        }
    }

    #[test]
    fn input_and_output_digests_name_what_differs() {
        let receipt = body().sign(&key(1)).unwrap();
        let error = receipt.check_input(b"{\"a\":2}").unwrap_err();
        assert!(error.to_string().starts_with("input sha256 "), "{error}");
        let error = receipt.check_output(b"{\"b\":3}").unwrap_err();
        assert!(error.to_string().starts_with("output sha256 "), "{error}");
    }
}
