//! Function, version and alias configuration, serialised exactly in AWS Lambda's JSON shape
//! (PascalCase fields), so the same value is stored and answered without a mapping layer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
pub const MIN_TIMEOUT_SECONDS: u32 = 1;
pub const MAX_TIMEOUT_SECONDS: u32 = 900;
pub const MIN_EPHEMERAL_MB: u32 = 512;
pub const MAX_EPHEMERAL_MB: u32 = 10_240;
pub const DEFAULT_MEMORY_MB: u32 = 128;
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 3;
/// Largest deployment package accepted in a request (Lambda's direct upload limit is 50 MB zipped).
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;
/// Largest synchronous request and response payload.
pub const MAX_SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest asynchronous event payload.
pub const MAX_ASYNC_PAYLOAD_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    #[serde(rename = "Variables", default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralStorage {
    /// Size of `/tmp` in MiB.
    #[serde(rename = "Size")]
    pub size: u32,
}

/// A function's configuration for `$LATEST` or one published version, as `GetFunctionConfiguration` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub code_size: u64,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    /// ISO 8601 with milliseconds and a `+0000` offset, as Lambda writes it.
    pub last_modified: String,
    /// base64 of the sha256 of the deployment package, as Lambda reports it.
    pub code_sha256: String,
    pub version: String,
    pub environment: Environment,
    pub ephemeral_storage: EphemeralStorage,
    pub revision_id: String,
    pub state: String,
    pub last_update_status: String,
    pub package_type: String,
    pub architectures: Vec<String>,
    /// The function's layers, in the order they are extracted under `/opt` (absent when none, as Lambda answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<FunctionLayer>,
}

/// One layer of a function, as `GetFunctionConfiguration` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionLayer {
    /// The layer version's ARN (`arn:aws:lambda:{region}:{account}:layer:{name}:{version}`).
    pub arn: String,
    /// Size of the layer's zip, in bytes.
    pub code_size: u64,
}

/// What Wisp stores for `$LATEST` or a published version: the AWS-shaped configuration plus what only Wisp needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVersion {
    pub config: FunctionConfiguration,
    /// Hex sha256 of the deployment package: the name of its blob.
    pub code_digest: String,
    /// Hex sha256 of each layer's zip, in the order of `config.layers`; kept here so a deleted
    /// layer version keeps working for the functions that already use it, as on Lambda.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_digests: Vec<String>,
    /// The types of the event this version accepts and the result it returns (absent: unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::Signature>,
    /// The version's entry points, tried in order; empty: every event goes to the function's handler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<crate::Route>,
}

/// The mutable head of a function: `$LATEST` plus counters and settings that are not versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFunction {
    pub latest: StoredVersion,
    /// Highest version number ever published (numbers are never reused).
    pub last_published: u64,
    /// Reserved concurrency (PutFunctionConcurrency), if set.
    pub reserved_concurrency: Option<u32>,
    /// `RevisionId` of `$LATEST` when version `last_published` was made from it: publishing again
    /// without a change returns that version instead of a new one, as Lambda does.
    #[serde(default)]
    pub published_from_revision: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AliasRoutingConfiguration {
    /// Version number → weight in [0, 1] of traffic sent to it instead of the alias's main version.
    #[serde(rename = "AdditionalVersionWeights", default)]
    pub additional_version_weights: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasConfiguration {
    pub alias_arn: String,
    pub name: String,
    pub function_version: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub routing_config: Option<AliasRoutingConfiguration>,
    pub revision_id: String,
}

/// A provisioned concurrency configuration as stored (PutProvisionedConcurrencyConfig); how many
/// instances are actually ready is the engine's to say, so it is not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProvisionedConcurrency {
    /// The version number or alias name the configuration belongs to.
    pub qualifier: String,
    pub requested: u32,
    pub last_modified: String,
}

/// Progress of a provisioned concurrency configuration, in Lambda's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProvisionedConcurrencyStatus {
    InProgress,
    Ready,
    Failed,
}

/// A provisioned concurrency configuration as Get/Put/ListProvisionedConcurrencyConfig(s) answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionedConcurrencyConfig {
    /// Only in list items: the ARN of the version or alias.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub function_arn: Option<String>,
    pub requested_provisioned_concurrent_executions: u32,
    pub available_provisioned_concurrent_executions: u32,
    pub allocated_provisioned_concurrent_executions: u32,
    pub status: ProvisionedConcurrencyStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status_reason: Option<String>,
    pub last_modified: String,
}

/// Checks a memory size against Lambda's range.
pub fn validate_memory(memory_mb: u32) -> Result<(), ApiError> {
    if (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "MemorySize {memory_mb} is out of range: use {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB"
        )))
    }
}

pub fn validate_timeout(timeout_seconds: u32) -> Result<(), ApiError> {
    if (MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&timeout_seconds) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Timeout {timeout_seconds} is out of range: use {MIN_TIMEOUT_SECONDS} to {MAX_TIMEOUT_SECONDS} seconds"
        )))
    }
}

pub fn validate_ephemeral_storage(size_mb: u32) -> Result<(), ApiError> {
    if (MIN_EPHEMERAL_MB..=MAX_EPHEMERAL_MB).contains(&size_mb) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "EphemeralStorage.Size {size_mb} is out of range: use {MIN_EPHEMERAL_MB} to {MAX_EPHEMERAL_MB} MB"
        )))
    }
}

/// Environment variable rules: names are letters, digits and `_`, start with a letter, are not reserved,
/// and all names and values together stay under Lambda's 4 KB.
pub fn validate_environment(environment: &Environment) -> Result<(), ApiError> {
    const RESERVED: &[&str] = &[
        "_HANDLER",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    ];
    let mut total = 0;
    for (name, value) in &environment.variables {
        let well_formed = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err(ApiError::invalid(format!(
                "environment variable name {name:?} is invalid: use letters, digits and underscores, starting with a letter"
            )));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(ApiError::invalid(format!(
                "environment variable {name} is reserved by the runtime"
            )));
        }
        total += name.len() + value.len();
    }
    if total > 4096 {
        return Err(ApiError::invalid(format!(
            "environment variables take {total} bytes; the limit is 4096"
        )));
    }
    Ok(())
}

/// Lambda's bounds and defaults for asynchronous invocation.
pub const MAX_RETRY_ATTEMPTS: u32 = 2;
pub const MIN_EVENT_AGE_SECONDS: u32 = 60;
pub const MAX_EVENT_AGE_SECONDS: u32 = 21_600;

/// Where an async invocation's outcome is sent (`DestinationConfig.OnSuccess` / `OnFailure`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OnOutcome {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DestinationConfig {
    #[serde(default)]
    pub on_success: OnOutcome,
    #[serde(default)]
    pub on_failure: OnOutcome,
}

/// How a function (version or alias) handles events: `FunctionEventInvokeConfig` in Lambda's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventInvokeConfig {
    /// Seconds since the Unix epoch, as Lambda answers it.
    pub last_modified: f64,
    /// The qualified ARN the configuration belongs to.
    pub function_arn: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub maximum_retry_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub maximum_event_age_in_seconds: Option<u32>,
    #[serde(default)]
    pub destination_config: DestinationConfig,
}

impl EventInvokeConfig {
    /// Retries after a failed run (Lambda's default is 2).
    pub fn retries(&self) -> u32 {
        self.maximum_retry_attempts.unwrap_or(MAX_RETRY_ATTEMPTS)
    }

    /// Oldest an event may be when it starts a run (Lambda's default is 6 hours).
    pub fn max_age_seconds(&self) -> u32 {
        self.maximum_event_age_in_seconds
            .unwrap_or(MAX_EVENT_AGE_SECONDS)
    }
}

/// Checks retry and age settings against Lambda's bounds.
pub fn validate_event_invoke_settings(
    retries: Option<u32>,
    max_age_seconds: Option<u32>,
) -> Result<(), ApiError> {
    if let Some(retries) = retries
        && retries > MAX_RETRY_ATTEMPTS
    {
        return Err(ApiError::invalid(format!(
            "MaximumRetryAttempts {retries} must be from 0 to {MAX_RETRY_ATTEMPTS}"
        )));
    }
    if let Some(age) = max_age_seconds
        && !(MIN_EVENT_AGE_SECONDS..=MAX_EVENT_AGE_SECONDS).contains(&age)
    {
        return Err(ApiError::invalid(format!(
            "MaximumEventAgeInSeconds {age} must be from {MIN_EVENT_AGE_SECONDS} to {MAX_EVENT_AGE_SECONDS}"
        )));
    }
    Ok(())
}

/// Lambda has no idempotency; these are Wisp's bounds for a function's idempotency window.
pub const DEFAULT_IDEMPOTENCY_WINDOW_SECONDS: u32 = 300;
pub const MAX_IDEMPOTENCY_WINDOW_SECONDS: u32 = 7 * 24 * 3600;
/// The request header a caller may send its idempotency key in (the IETF draft's name).
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 1024;

/// A function's idempotency settings (`/wisp/v1/functions/{name}/idempotency`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdempotencyConfig {
    /// RFC 9535 JSONPath into the event whose first match is the key (a string, or any JSON value,
    /// whose compact text is then the key); `None` when the key comes from the `Idempotency-Key` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_json_path: Option<String>,
    /// The key is the request's `Idempotency-Key` header.
    #[serde(default)]
    pub key_header: bool,
    /// How long a finished execution's outcome answers duplicates.
    pub window_seconds: u32,
    /// Whether a failed execution's outcome is replayed too (else a duplicate runs again).
    #[serde(default)]
    pub remember_failures: bool,
    /// Whether a duplicate with a different payload gets the stored outcome (else it is refused).
    #[serde(default)]
    pub allow_payload_mismatch: bool,
    #[serde(default)]
    pub last_modified: String,
}

impl IdempotencyConfig {
    /// Checks the settings a caller sent.
    pub fn validate(&self) -> Result<(), ApiError> {
        match (&self.key_json_path, self.key_header) {
            (Some(_), true) | (None, false) => {
                return Err(ApiError::invalid(
                    "give exactly one key source: KeyJsonPath (a JSONPath into the event, such as $.orderId) or KeyHeader: true (the Idempotency-Key header)",
                ));
            }
            (Some(path), false) => {
                serde_json_path::JsonPath::parse(path).map_err(|error| {
                    ApiError::invalid(format!("KeyJsonPath {path:?} is not a JSONPath: {error}"))
                })?;
            }
            (None, true) => {}
        }
        if !(1..=MAX_IDEMPOTENCY_WINDOW_SECONDS).contains(&self.window_seconds) {
            return Err(ApiError::invalid(format!(
                "WindowSeconds {} must be from 1 to {MAX_IDEMPOTENCY_WINDOW_SECONDS}",
                self.window_seconds
            )));
        }
        Ok(())
    }

    /// The idempotency key of one request: from the header or the event; `None` when the request has none
    /// (it then runs like any other).
    pub fn key_of(&self, payload: &[u8], header: Option<&str>) -> Option<String> {
        let key = if self.key_header {
            header.map(str::to_string)
        } else {
            let path = serde_json_path::JsonPath::parse(self.key_json_path.as_deref()?).ok()?;
            let event: serde_json::Value = serde_json::from_slice(payload).ok()?;
            match path.query(&event).first()? {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            }
        };
        key.filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES)
    }
}

/// Longest a memoized result is kept.
pub const MAX_MEMO_TTL_SECONDS: u32 = 7 * 24 * 3600;

/// A function declared pure (`/wisp/v1/functions/{name}/memoization`): its successful results are cached by
/// (version, sha256 of the input) and answered without running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoizationConfig {
    /// How long a result is kept.
    pub ttl_seconds: u32,
    #[serde(default)]
    pub last_modified: String,
}

impl MemoizationConfig {
    pub fn validate(&self) -> Result<(), ApiError> {
        if !(1..=MAX_MEMO_TTL_SECONDS).contains(&self.ttl_seconds) {
            return Err(ApiError::invalid(format!(
                "TtlSeconds {} must be from 1 to {MAX_MEMO_TTL_SECONDS}",
                self.ttl_seconds
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_path(path: &str) -> IdempotencyConfig {
        IdempotencyConfig {
            key_json_path: Some(path.to_string()),
            key_header: false,
            window_seconds: 60,
            remember_failures: false,
            allow_payload_mismatch: false,
            last_modified: String::new(),
        }
    }

    #[test]
    fn idempotency_keys_come_from_the_event_or_the_header() {
        let event = br#"{"order":{"id":"A-1","n":7,"none":null},"list":[{"k":"first"}]}"#;
        for (path, expected) in [
            ("$.order.id", Some("A-1")),
            ("$.order.n", Some("7")),
            ("$.order", Some(r#"{"id":"A-1","n":7,"none":null}"#)),
            ("$.list[0].k", Some("first")),
            ("$['order']['id']", Some("A-1")),
            ("$.order.none", None),
            ("$.missing", None),
        ] {
            assert_eq!(
                by_path(path).key_of(event, None).as_deref(),
                expected,
                "{path}"
            );
        }
        assert_eq!(by_path("$.order.id").key_of(b"not json", None), None);
        let header = IdempotencyConfig {
            key_json_path: None,
            key_header: true,
            ..by_path("$")
        };
        assert_eq!(header.key_of(event, Some("k-9")).as_deref(), Some("k-9"));
        assert_eq!(header.key_of(event, None), None);
        assert_eq!(header.key_of(event, Some("")), None);
    }

    #[test]
    fn idempotency_settings_are_checked() {
        assert!(by_path("$.id").validate().is_ok());
        assert!(by_path("$[").validate().is_err(), "not a JSONPath");
        assert!(
            IdempotencyConfig {
                window_seconds: 0,
                ..by_path("$.id")
            }
            .validate()
            .is_err()
        );
        assert!(
            IdempotencyConfig {
                key_header: true,
                ..by_path("$.id")
            }
            .validate()
            .is_err(),
            "two key sources"
        );
    }
}

/// A function's invocation hooks (`/wisp/v1/functions/{name}/hooks`): functions of the same account
/// called around its synchronous invocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HooksConfig {
    /// Called with the event before dispatch; answers pass, rewrite or reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<String>,
    /// Sent the invocation record of each synchronous call, as an event, after the response has gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<String>,
    #[serde(default)]
    pub last_modified: String,
}
