//! Admission hooks: functions an account names to approve control-plane changes before they are
//! stored (see `docs/EVENTS.md`).
//!
//! Before a change of an admissible type ([`ADMISSIBLE`]) is stored, each hook that sees that type is
//! invoked synchronously with the proposed change: a lifecycle event (`Type`, `Resource`, `Before`,
//! `After` as the change would leave it, `Actor`) plus, for code, `Code` (sha256, size, every file's
//! path, size and sha256, and the text of a top-level `SIGNATURE` file). It answers
//! `{"allow": true}` or `{"allow": false, "reason": "…"}`; anything else — a function error, a
//! timeout, an answer of another shape, a hook function that does not exist — refuses the change
//! (fail closed). A refusal is `AccessDeniedException` with the hook's reason, and nothing is stored.
//!
//! Changes to a hook function itself bypass the hooks, so a broken hook can always be fixed or
//! deleted. The control plane cannot invoke functions: the engine gives it an [`HookInvoker`] at start
//! ([`ControlPlane::admit_with`]); without one (tests, tools) nothing is checked.
//! Key: `admission/{account}` → [`AdmissionConfig`].

use std::io::Read as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;
use wisp_types::*;

use crate::lifecycle::{EventType, LifecycleEvent, event_time};
use crate::{ControlPlane, decode, encode, store_error};

/// The change types hooks can be asked about.
pub const ADMISSIBLE: [EventType; 8] = [
    EventType::FunctionCreated,
    EventType::FunctionCodeUpdated,
    EventType::FunctionConfigurationUpdated,
    EventType::VersionPublished,
    EventType::AliasCreated,
    EventType::AliasUpdated,
    EventType::AliasDeleted,
    EventType::FunctionDeleted,
];

/// How long a hook may take when the configuration does not say.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 10;
/// Longest allowed hook timeout.
pub const MAX_TIMEOUT_SECONDS: u32 = 60;
/// Most hooks per account.
pub const MAX_HOOKS: usize = 5;
/// Largest `SIGNATURE` file whose text is passed to hooks.
pub const MAX_SIGNATURE_BYTES: u64 = 8 * 1024;

fn admission_key(account: &AccountId) -> String {
    format!("admission/{account}")
}

/// One hook: a function, and the change types it sees (all admissible types when empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AdmissionHook {
    /// A function name, `name:qualifier`, or a function ARN of the account.
    pub function_name: String,
    #[serde(default)]
    pub types: Vec<String>,
}

/// An account's admission configuration, as `/wisp/v1/admission` takes and answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AdmissionConfig {
    pub hooks: Vec<AdmissionHook>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    #[serde(default)]
    pub last_modified: String,
}

fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_SECONDS
}

/// What a hook function answered.
#[derive(Debug, Clone)]
pub struct HookAnswer {
    pub payload: Vec<u8>,
    /// Set when the function failed (`Unhandled`).
    pub function_error: Option<String>,
}

/// Invokes hook functions; implemented by the engine, given to the control plane at start.
#[async_trait]
pub trait HookInvoker: Send + Sync + 'static {
    /// Invokes `function` synchronously with `payload`; an `Err` is an invocation that could not be
    /// made (not found, throttled, …).
    async fn invoke_hook(
        &self,
        account: &AccountId,
        function: &FunctionRef,
        payload: Vec<u8>,
    ) -> Result<HookAnswer, ApiError>;
}

#[derive(Default)]
pub(crate) struct Admission {
    invoker: OnceLock<Arc<dyn HookInvoker>>,
}

/// Facts about a proposed deployment package that a code-signing check needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeFacts {
    /// sha256 of the zip, hex.
    pub sha256: String,
    /// sha256 of the zip, base64 (Lambda's `CodeSha256`).
    pub code_sha256: String,
    pub size: u64,
    pub files: Vec<FileFact>,
    /// The text of a top-level file named `SIGNATURE`, when there is one (at most 8 KiB).
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileFact {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Hashes every file of a package that `archive::inspect` already accepted.
pub fn code_facts(zip: &[u8]) -> Result<CodeFacts, ApiError> {
    let unreadable = |error: &dyn std::fmt::Display| {
        ApiError::invalid(format!("deployment package refused: {error}"))
    };
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|error| unreadable(&error))?;
    let mut files = Vec::new();
    let mut signature = None;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|error| unreadable(&error))?;
        if !entry.is_file() {
            continue;
        }
        let path = entry.name().trim_start_matches("./").to_string();
        let mut hasher = sha2::Sha256::new();
        let mut contents = Vec::new();
        let mut buffer = [0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let read = entry
                .read(&mut buffer)
                .map_err(|error| unreadable(&error))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            if path == "SIGNATURE" && size < MAX_SIGNATURE_BYTES {
                contents.extend_from_slice(&buffer[..read]);
            }
            size += read as u64;
        }
        if path == "SIGNATURE" && size <= MAX_SIGNATURE_BYTES {
            signature = Some(String::from_utf8_lossy(&contents).into_owned());
        }
        files.push(FileFact {
            path,
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    use base64::Engine as _;
    let digest = sha2::Sha256::digest(zip);
    Ok(CodeFacts {
        sha256: hex::encode(digest),
        code_sha256: base64::engine::general_purpose::STANDARD.encode(digest),
        size: zip.len() as u64,
        files,
        signature,
    })
}

/// A change about to be stored, as hooks see it.
pub(crate) struct Proposal {
    pub kind: EventType,
    pub resource: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub code: Option<CodeFacts>,
}

impl ControlPlane {
    /// Invokes hooks through `invoker` from now on.
    pub fn admit_with(&self, invoker: Arc<dyn HookInvoker>) {
        let _ = self.admission.invoker.set(invoker);
    }

    /// The account's admission configuration, if it has one.
    pub async fn get_admission(
        &self,
        account: &AccountId,
    ) -> Result<Option<AdmissionConfig>, ApiError> {
        let key = admission_key(account);
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => Ok(Some(decode(&key, &entry.value)?)),
            None => Ok(None),
        }
    }

    /// Replaces the account's admission configuration. Every hook function must exist.
    pub async fn put_admission(
        &self,
        account: &AccountId,
        mut config: AdmissionConfig,
    ) -> Result<AdmissionConfig, ApiError> {
        if config.hooks.is_empty() {
            return Err(ApiError::invalid(
                "Hooks is empty: name at least one function, or delete the configuration (wisp admission rm)",
            ));
        }
        if config.hooks.len() > MAX_HOOKS {
            return Err(ApiError::invalid(format!(
                "{} hooks; an account has at most {MAX_HOOKS}",
                config.hooks.len()
            )));
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&config.timeout_seconds) {
            return Err(ApiError::invalid(format!(
                "TimeoutSeconds {} is out of range: use 1 to {MAX_TIMEOUT_SECONDS}",
                config.timeout_seconds
            )));
        }
        for hook in &mut config.hooks {
            for name in &hook.types {
                let kind = EventType::parse(name)?;
                if !ADMISSIBLE.contains(&kind) {
                    let names: Vec<_> = ADMISSIBLE.iter().map(|kind| kind.as_str()).collect();
                    return Err(ApiError::invalid(format!(
                        "hooks cannot be asked about {name}; the admissible types are {}",
                        names.join(", ")
                    )));
                }
            }
            let reference = self.hook_reference(account, &hook.function_name)?;
            self.get_function(account, &reference.name, reference.qualifier.as_ref())
                .await
                .map_err(|error| {
                    ApiError::invalid(format!(
                        "hook function {:?} cannot be used: {}",
                        hook.function_name, error.message
                    ))
                })?;
        }
        config.last_modified = event_time(chrono::Utc::now());
        self.kv
            .put(&admission_key(account), encode(&config), None)
            .await
            .map_err(store_error)?;
        Ok(config)
    }

    /// Removes the account's admission configuration; returns whether there was one.
    pub async fn delete_admission(&self, account: &AccountId) -> Result<bool, ApiError> {
        self.kv
            .delete(&admission_key(account))
            .await
            .map_err(store_error)
    }

    fn hook_reference(&self, account: &AccountId, text: &str) -> Result<FunctionRef, ApiError> {
        let reference = FunctionRef::parse(text)?;
        if let Some(named) = &reference.account
            && named != account
        {
            return Err(ApiError::invalid(format!(
                "hook function {text:?} belongs to account {named}; hooks must be functions of account {account}"
            )));
        }
        Ok(reference)
    }

    /// The hooks that must approve a change of `kind` to `function` (none when the account has no
    /// configuration, no invoker is set, or `function` is itself a hook).
    pub(crate) async fn hooks_for(
        &self,
        account: &AccountId,
        kind: EventType,
        function: &str,
    ) -> Result<Option<(Vec<FunctionRef>, Duration)>, ApiError> {
        if self.admission.invoker.get().is_none() {
            return Ok(None);
        }
        let Some(config) = self.get_admission(account).await? else {
            return Ok(None);
        };
        let mut hooks = Vec::new();
        for hook in &config.hooks {
            let reference = self.hook_reference(account, &hook.function_name)?;
            if reference.name == function {
                tracing::info!(function, "a change to an admission hook bypasses the hooks");
                return Ok(None);
            }
            if hook.types.is_empty() || hook.types.iter().any(|name| name == kind.as_str()) {
                hooks.push(reference);
            }
        }
        if hooks.is_empty() {
            return Ok(None);
        }
        Ok(Some((
            hooks,
            Duration::from_secs(config.timeout_seconds.into()),
        )))
    }

    /// Asks each hook about a proposed change; the first refusal is returned as `AccessDenied`.
    pub(crate) async fn ask_hooks(
        &self,
        account: &AccountId,
        (hooks, timeout): (Vec<FunctionRef>, Duration),
        proposal: Proposal,
    ) -> Result<(), ApiError> {
        let Some(invoker) = self.admission.invoker.get() else {
            return Ok(());
        };
        let event = LifecycleEvent::new(
            &account.0,
            proposal.kind,
            proposal.resource.clone(),
            proposal.before,
            proposal.after,
        );
        let mut body = serde_json::to_value(&event).expect("events serialise");
        if let Some(code) = &proposal.code {
            body["Code"] = serde_json::to_value(code).expect("facts serialise");
        }
        let payload = serde_json::to_vec(&body).expect("events serialise");
        for hook in hooks {
            let refused = |reason: String| {
                ApiError::new(
                    ErrorCode::AccessDenied,
                    format!(
                        "admission hook {:?} refused {} of {}: {reason}",
                        hook.name, proposal.kind, proposal.resource
                    ),
                )
            };
            let answer = match tokio::time::timeout(
                timeout,
                invoker.invoke_hook(account, &hook, payload.clone()),
            )
            .await
            {
                Err(_) => {
                    return Err(refused(format!(
                        "the hook did not answer within {} s (hooks fail closed)",
                        timeout.as_secs()
                    )));
                }
                Ok(Err(error)) => {
                    return Err(refused(format!(
                        "the hook could not be invoked (hooks fail closed): {error}"
                    )));
                }
                Ok(Ok(answer)) => answer,
            };
            let text = String::from_utf8_lossy(&answer.payload);
            let excerpt: String = text.chars().take(300).collect();
            if let Some(kind) = answer.function_error {
                return Err(refused(format!(
                    "the hook failed ({kind}; hooks fail closed): {excerpt}"
                )));
            }
            let verdict: Option<Value> = serde_json::from_slice(&answer.payload).ok();
            match verdict.as_ref().and_then(|value| value.get("allow")) {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    let reason = verdict
                        .as_ref()
                        .and_then(|value| value.get("reason"))
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(refused(reason.to_string()));
                }
                _ => {
                    return Err(refused(format!(
                        "the hook answered {excerpt}, not {}; hooks fail closed",
                        json!({"allow": false, "reason": "…"})
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn code_facts_hash_every_file_and_read_the_signature() {
        let mut bytes = Vec::new();
        {
            let mut writer = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
            let options = zip::write::SimpleFileOptions::default();
            writer.start_file("handler.py", options).unwrap();
            writer.write_all(b"print(1)\n").unwrap();
            writer.start_file("SIGNATURE", options).unwrap();
            writer.write_all(b"abc123").unwrap();
            writer.finish().unwrap();
        }
        let facts = code_facts(&bytes).unwrap();
        assert_eq!(facts.size, bytes.len() as u64);
        assert_eq!(facts.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
        assert_eq!(facts.signature.as_deref(), Some("abc123"));
        let paths: Vec<_> = facts.files.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["SIGNATURE", "handler.py"]);
        assert_eq!(
            facts.files[1].sha256,
            hex::encode(sha2::Sha256::digest(b"print(1)\n"))
        );
        assert_eq!(facts.files[1].size, 9);
    }
}
