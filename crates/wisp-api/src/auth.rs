//! Authentication: AWS Signature Version 4 on every request, mapped to a Wisp account.
//!
//! The `Authorization` header is always parsed (access key → account, region). The signature is
//! verified against Wisp's key store unless the server runs in dev mode, where any key is accepted
//! and mapped to the root account. Keys are cached in memory: the warm invoke path never reads
//! the store to authenticate.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use wisp_store::Kv;
use wisp_types::{AccountId, ApiError, ErrorCode, sigv4};

/// A stored access key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account: AccountId,
}

pub fn access_key_key(access_key_id: &str) -> String {
    format!("auth/keys/{access_key_id}")
}

/// Verifies requests and tells which account made them.
pub struct Authenticator {
    kv: Arc<dyn Kv>,
    keys: RwLock<HashMap<String, Arc<AccessKey>>>,
    /// When set, signatures are not checked and every request belongs to this account.
    dev_account: Option<AccountId>,
}

/// The parts of a request a signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded).
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>, ApiError> {
    let malformed = |what: &str| {
        ApiError::new(
            ErrorCode::InvalidSignature,
            format!(
                "Authorization header is malformed: {what}; expected AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…"
            ),
        )
    };
    let rest = header
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("unsupported algorithm"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(value) = part.strip_prefix("Credential=") {
            credential = Some(value);
        } else if let Some(value) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(value);
        } else if let Some(value) = part.strip_prefix("Signature=") {
            signature = Some(value);
        }
    }
    let credential = credential.ok_or_else(|| malformed("no Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(malformed(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed_headers
            .ok_or_else(|| malformed("no SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or_else(|| malformed("no Signature"))?,
    })
}

/// The access key id a request is signed with (from its `Authorization` header), if any.
pub fn access_key_id(headers: &http::HeaderMap) -> Option<String> {
    let header = headers.get("authorization")?.to_str().ok()?;
    parse_authorization(header)
        .ok()
        .map(|authorization| authorization.access_key_id.to_string())
}

/// The SigV4 signature of a request with the given secret (hex).
/// How far a request's `X-Amz-Date` may be from the server's clock, as AWS allows.
const MAX_CLOCK_SKEW_SECONDS: i64 = 5 * 60;

/// Refuses requests signed too long ago (or in the future): a captured request cannot be replayed later.
fn check_freshness(amz_date: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), ApiError> {
    let signed_at =
        chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ").map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidSignature,
                format!("X-Amz-Date {amz_date:?} is not in the form 20260102T150405Z"),
            )
        })?;
    let skew = (now.naive_utc() - signed_at).num_seconds();
    let window = chrono::Duration::seconds(MAX_CLOCK_SKEW_SECONDS);
    let stamp = |time: chrono::DateTime<chrono::Utc>| time.format("%Y%m%dT%H%M%SZ").to_string();
    if skew > MAX_CLOCK_SKEW_SECONDS {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.); hint: check this machine's clock",
                stamp(now - window),
                stamp(now)
            ),
        ));
    }
    if skew < -MAX_CLOCK_SKEW_SECONDS {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.); hint: check this machine's clock",
                stamp(now + window),
                stamp(now)
            ),
        ));
    }
    Ok(())
}

fn signature(
    request: &SignedRequest<'_>,
    authorization: &Authorization<'_>,
    secret: &str,
) -> Result<String, ApiError> {
    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidSignature, "X-Amz-Date header is missing")
        })?;
    check_freshness(amz_date, chrono::Utc::now())?;
    let body_hash;
    let payload_hash = match request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|value| value.to_str().ok())
    {
        Some(hash) => hash,
        None => {
            body_hash = sigv4::hex_sha256(request.body);
            &body_hash
        }
    };
    let headers = authorization
        .signed_headers
        .iter()
        .map(|name| {
            (
                *name,
                request
                    .headers
                    .get_all(*name)
                    .iter()
                    .map(|value| value.as_bytes())
                    .collect(),
            )
        })
        .collect();
    let parts = sigv4::CanonicalParts {
        method: request.method,
        raw_path: request.raw_path,
        raw_query: request.raw_query,
        headers,
        payload_hash,
    };
    let scope = sigv4::Scope {
        date: authorization.date,
        region: authorization.region,
        service: authorization.service,
    };
    Ok(sigv4::signature(&parts, &scope, amz_date, secret))
}

fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

impl Authenticator {
    pub fn new(kv: Arc<dyn Kv>, dev_account: Option<AccountId>) -> Authenticator {
        Authenticator {
            kv,
            keys: RwLock::new(HashMap::new()),
            dev_account,
        }
    }

    async fn key(&self, access_key_id: &str) -> Result<Option<Arc<AccessKey>>, ApiError> {
        if let Some(key) = self
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(access_key_id)
        {
            return Ok(Some(key.clone()));
        }
        let entry = self
            .kv
            .get(&access_key_key(access_key_id))
            .await
            .map_err(|error| ApiError::internal(format!("key store unavailable: {error}")))?;
        let Some(entry) = entry else { return Ok(None) };
        let key: AccessKey = serde_json::from_slice(&entry.value).map_err(|error| {
            ApiError::internal(format!("stored access key is unreadable: {error}"))
        })?;
        let key = Arc::new(key);
        self.keys
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(access_key_id.to_string(), key.clone());
        Ok(Some(key))
    }

    /// The account that made the request, or the AWS error to answer with.
    pub async fn authenticate(&self, request: &SignedRequest<'_>) -> Result<AccountId, ApiError> {
        let header = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let Some(header) = header else {
            if let Some(account) = &self.dev_account {
                return Ok(account.clone());
            }
            return Err(ApiError::new(
                ErrorCode::MissingAuthenticationToken,
                "Missing Authentication Token: sign requests with SigV4 (the aws CLI, boto3 and the wisp CLI do this with the key wisp serve printed)",
            ));
        };
        let authorization = parse_authorization(header)?;
        if let Some(account) = &self.dev_account {
            return Ok(match self.key(authorization.access_key_id).await? {
                Some(key) => key.account.clone(),
                None => account.clone(),
            });
        }
        let key = self
            .key(authorization.access_key_id)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnrecognizedClient,
                    "The security token included in the request is invalid.",
                )
            })?;
        let expected = signature(request, &authorization, &key.secret_access_key)?;
        if !constant_time_equal(expected.as_bytes(), authorization.signature.as_bytes()) {
            return Err(ApiError::new(
                ErrorCode::InvalidSignature,
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ));
        }
        Ok(key.account.clone())
    }

    /// The account of a plain access key and secret (the gRPC gateway's `authorization` metadata,
    /// where SigV4 does not fit). In dev mode any key, or none, is accepted as for signed requests.
    pub async fn authenticate_secret(
        &self,
        credentials: Option<(&str, &str)>,
    ) -> Result<AccountId, ApiError> {
        let Some((access_key_id, secret)) = credentials else {
            return self.dev_account.clone().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingAuthenticationToken,
                    "missing credentials: send the metadata \"authorization: Wisp ACCESS_KEY_ID:SECRET_ACCESS_KEY\"",
                )
            });
        };
        let key = self.key(access_key_id).await?;
        if let Some(account) = &self.dev_account {
            return Ok(key.map_or_else(|| account.clone(), |key| key.account.clone()));
        }
        let key = key.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnrecognizedClient,
                format!("access key {access_key_id} is not known"),
            )
        })?;
        if !constant_time_equal(key.secret_access_key.as_bytes(), secret.as_bytes()) {
            return Err(ApiError::new(
                ErrorCode::InvalidSignature,
                format!("the secret access key given for {access_key_id} is wrong"),
            ));
        }
        Ok(key.account.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_signed_outside_five_minutes_are_refused() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let cases = [
            ("20261204T120000Z", true),
            ("20261204T115600Z", true),
            ("20261204T120400Z", true),
            ("20261204T115400Z", false),
            ("20261204T120600Z", false),
            ("20261204", false),
            ("yesterday", false),
        ];
        for (amz_date, accepted) in cases {
            assert_eq!(
                check_freshness(amz_date, now).is_ok(),
                accepted,
                "{amz_date}"
            );
        }
    }
}
