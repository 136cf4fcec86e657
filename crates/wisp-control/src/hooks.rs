//! Invocation hooks (`/wisp/v1/functions/{name}/hooks`): a pre-invocation hook is a function called with
//! each event before dispatch (it passes, rewrites or rejects it), a post-invocation hook a function sent
//! the invocation record of each synchronous call. Stored at `hooks/{account}/{function}`, carried in the
//! resolution. Hooks are checked like any wiring when they are set: they must be other functions of the
//! account, and accept what they will be sent (`compat`).

use serde_json::{Value, json};
use wisp_types::*;

use crate::wiring::Produced;
use crate::{ControlPlane, decode, encode, lambda_timestamp, lifecycle, store_error};

pub(crate) fn hooks_key(account: &AccountId, name: &str) -> String {
    format!("hooks/{account}/{name}")
}

impl ControlPlane {
    pub async fn put_hooks(
        &self,
        account: &AccountId,
        name: &str,
        mut config: HooksConfig,
    ) -> Result<HooksConfig, ApiError> {
        let _ = self.load_function(account, name).await?;
        if config.pre.is_none() && config.post.is_none() {
            return Err(ApiError::invalid(
                "give Pre, Post or both; DELETE the hooks to remove them",
            ));
        }
        let source = self.get_signature(account, name, None).await?;
        for (which, hook) in [("Pre", &config.pre), ("Post", &config.post)] {
            if let Some(hook) = hook {
                self.check_hook(account, name, which, hook, source.as_ref(), None)
                    .await?;
            }
        }
        config.last_modified = lambda_timestamp(chrono::Utc::now());
        let key = hooks_key(account, name);
        let before = self.kv.get(&key).await.map_err(store_error)?;
        self.kv
            .put(&key, encode(&config), None)
            .await
            .map_err(store_error)?;
        self.forget(account, name);
        self.announce(
            account,
            lifecycle::EventType::HooksChanged,
            function_arn(&self.options.region, account, name),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    pub async fn get_hooks(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<HooksConfig, ApiError> {
        let _ = self.load_function(account, name).await?;
        self.stored_hooks(account, name).await?.ok_or_else(|| {
            ApiError::not_found(format!(
                "function {name} has no hooks; hint: PUT /wisp/v1/functions/{name}/hooks with Pre and/or Post"
            ))
        })
    }

    pub(crate) async fn stored_hooks(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<HooksConfig>, ApiError> {
        let key = hooks_key(account, name);
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => Ok(Some(decode(&key, &entry.value)?)),
            None => Ok(None),
        }
    }

    pub async fn delete_hooks(&self, account: &AccountId, name: &str) -> Result<(), ApiError> {
        let _ = self.load_function(account, name).await?;
        let key = hooks_key(account, name);
        let before = self.kv.get(&key).await.map_err(store_error)?;
        if !self.kv.delete(&key).await.map_err(store_error)? {
            return Err(ApiError::not_found(format!("function {name} has no hooks")));
        }
        self.forget(account, name);
        self.announce(
            account,
            lifecycle::EventType::HooksChanged,
            function_arn(&self.options.region, account, name),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            None,
        )
        .await?;
        Ok(())
    }

    /// A hook must be another existing function of the account that accepts what it will be sent.
    pub(crate) async fn check_hook(
        &self,
        account: &AccountId,
        name: &str,
        which: &str,
        hook: &str,
        source: Option<&Signature>,
        pending: Option<crate::wiring::PendingAlias<'_>>,
    ) -> Result<(), ApiError> {
        let what = format!("{which} hook");
        let reference = self
            .wired_function(account, name, &what, "hook", hook)
            .await?;
        let input = source.and_then(|signature| signature.input.as_ref());
        let produced = if which == "Pre" {
            Produced::schema(pre_hook_event_schema(source)).carrying("/event", input)
        } else {
            Produced::schema(post_hook_event_schema(source)).carrying("/requestPayload", input)
        };
        let mismatches = self
            .refusals(account, &reference, pending, &[produced])
            .await?;
        if !mismatches.is_empty() {
            let shown: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
            return Err(ApiError::invalid(format!(
                "{what} {hook:?} does not accept what {name} would send it: {}",
                shown.join("; ")
            )));
        }
        Ok(())
    }
}

fn side(spec: Option<&TypeSpec>) -> Value {
    crate::event_config::produced_schema(spec)
}

/// What a pre-invocation hook is called with: `{"functionArn", "requestId", "event"}`.
pub fn pre_hook_event_schema(source: Option<&Signature>) -> Value {
    json!({
        "type": "object",
        "required": ["functionArn", "requestId", "event"],
        "properties": {
            "functionArn": { "type": "string" },
            "requestId": { "type": "string" },
            "event": side(source.and_then(|signature| signature.input.as_ref())),
        },
        "additionalProperties": false,
    })
}

/// What a post-invocation hook is sent: a destination's invocation record, with condition `Success`
/// or `Failure` and always a response.
pub fn post_hook_event_schema(source: Option<&Signature>) -> Value {
    let mut schema = crate::event_config::destination_event_schema(source, true);
    schema["properties"]["requestContext"]["properties"]["condition"] =
        json!({ "enum": ["Success", "Failure"] });
    schema["properties"]["responseContext"]["properties"]["functionError"] =
        json!({ "type": "string" });
    // A failed call's response is its error document, not the output type.
    schema["properties"]["responsePayload"] = json!({});
    schema
}
