//! Event invoke configurations (`/2019-09-25/functions/{name}/event-invoke-config`): how a function's
//! async invocations are retried, how old an event may get, and where outcomes go.
//!
//! One configuration per qualifier (`$LATEST` when unqualified, a version, or an alias), stored at
//! `eic/{account}/{function}/{qualifier}`. Destinations are checked when they are set, never when the
//! first event needs them: the target must be a function of the same account that exists, and it may not
//! be the configured function itself (that would be an accidental loop).

use wisp_types::*;

use crate::wiring::Produced;
use crate::{ControlPlane, decode, encode, store_error};

fn config_prefix(account: &AccountId, name: &str) -> String {
    format!("eic/{account}/{name}/")
}

fn config_key(account: &AccountId, name: &str, qualifier: &Qualifier) -> String {
    format!("eic/{account}/{name}/{qualifier}")
}

/// What a caller asked to set; `None` fields keep their value on update and take defaults on put.
#[derive(Debug, Clone, Default)]
pub struct EventInvokeInput {
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age_in_seconds: Option<u32>,
    pub destination_config: Option<DestinationConfig>,
}

impl ControlPlane {
    /// PutFunctionEventInvokeConfig (`replace`: unset fields are cleared) and
    /// UpdateFunctionEventInvokeConfig (`!replace`: unset fields keep their value).
    pub async fn put_event_invoke_config(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<&Qualifier>,
        input: EventInvokeInput,
        replace: bool,
    ) -> Result<EventInvokeConfig, ApiError> {
        let qualifier = qualifier.cloned().unwrap_or(Qualifier::Latest);
        // The function, and the version or alias the qualifier names, must exist.
        self.get_function(account, name, Some(&qualifier)).await?;
        validate_event_invoke_settings(
            input.maximum_retry_attempts,
            input.maximum_event_age_in_seconds,
        )?;
        if let Some(destinations) = &input.destination_config {
            let sources = self
                .signatures_for(account, name, Some(qualifier.clone()), None)
                .await?;
            for (which, target) in [
                ("OnSuccess", &destinations.on_success.destination),
                ("OnFailure", &destinations.on_failure.destination),
            ] {
                if let Some(target) = target {
                    self.check_destination(account, name, which, target, &sources, None)
                        .await?;
                }
            }
        }
        let key = config_key(account, name, &qualifier);
        let existing = self.kv.get(&key).await.map_err(store_error)?;
        let previous: Option<EventInvokeConfig> = match &existing {
            Some(entry) if !replace => Some(decode(&key, &entry.value)?),
            _ => None,
        };
        let previous = previous.as_ref();
        let config = EventInvokeConfig {
            last_modified: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
            function_arn: qualified_arn(
                &self.options.region,
                account,
                name,
                &qualifier.to_string(),
            ),
            maximum_retry_attempts: input
                .maximum_retry_attempts
                .or_else(|| previous.and_then(|config| config.maximum_retry_attempts)),
            maximum_event_age_in_seconds: input
                .maximum_event_age_in_seconds
                .or_else(|| previous.and_then(|config| config.maximum_event_age_in_seconds)),
            destination_config: input
                .destination_config
                .or_else(|| previous.map(|config| config.destination_config.clone()))
                .unwrap_or_default(),
        };
        self.kv
            .put(&key, encode(&config), None)
            .await
            .map_err(store_error)?;
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::EventInvokeConfigChanged,
            config.function_arn.clone(),
            existing.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            crate::lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    /// GetFunctionEventInvokeConfig.
    pub async fn get_event_invoke_config(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<&Qualifier>,
    ) -> Result<EventInvokeConfig, ApiError> {
        let qualifier = qualifier.cloned().unwrap_or(Qualifier::Latest);
        let _ = self.load_function(account, name).await?;
        self.stored_event_invoke_config(account, name, &qualifier)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "The function {} doesn't have an EventInvokeConfig",
                    qualified_arn(&self.options.region, account, name, &qualifier.to_string())
                ))
            })
    }

    pub(crate) async fn stored_event_invoke_config(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: &Qualifier,
    ) -> Result<Option<EventInvokeConfig>, ApiError> {
        let key = config_key(account, name, qualifier);
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => Ok(Some(decode(&key, &entry.value)?)),
            None => Ok(None),
        }
    }

    /// DeleteFunctionEventInvokeConfig.
    pub async fn delete_event_invoke_config(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<&Qualifier>,
    ) -> Result<(), ApiError> {
        let qualifier = qualifier.cloned().unwrap_or(Qualifier::Latest);
        let _ = self.load_function(account, name).await?;
        let key = config_key(account, name, &qualifier);
        let before = self.kv.get(&key).await.map_err(store_error)?;
        if !self.kv.delete(&key).await.map_err(store_error)? {
            return Err(ApiError::not_found(format!(
                "The function {} doesn't have an EventInvokeConfig",
                qualified_arn(&self.options.region, account, name, &qualifier.to_string())
            )));
        }
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::EventInvokeConfigChanged,
            qualified_arn(&self.options.region, account, name, &qualifier.to_string()),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            None,
        )
        .await?;
        Ok(())
    }

    /// ListFunctionEventInvokeConfigs: every qualifier's configuration, in qualifier order.
    pub async fn list_event_invoke_configs(
        &self,
        account: &AccountId,
        name: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<EventInvokeConfig>, Option<String>), ApiError> {
        let _ = self.load_function(account, name).await?;
        let prefix = config_prefix(account, name);
        let start_after = marker.map(|marker| format!("{prefix}{marker}"));
        let mut entries = self
            .kv
            .scan(&prefix, start_after.as_deref(), limit + 1)
            .await
            .map_err(store_error)?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_marker = if more {
            entries
                .last()
                .map(|(key, _)| key[prefix.len()..].to_string())
        } else {
            None
        };
        let configs = entries
            .iter()
            .map(|(key, entry)| decode(key, &entry.value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((configs, next_marker))
    }

    /// Removes every event invoke configuration of a function (when it is deleted).
    pub(crate) async fn delete_event_invoke_configs(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<(), ApiError> {
        let prefix = config_prefix(account, name);
        loop {
            let entries = self
                .kv
                .scan(&prefix, None, 500)
                .await
                .map_err(store_error)?;
            if entries.is_empty() {
                return Ok(());
            }
            for (key, _) in entries {
                self.kv.delete(&key).await.map_err(store_error)?;
            }
        }
    }

    pub(crate) async fn check_destination(
        &self,
        account: &AccountId,
        name: &str,
        which: &str,
        target: &str,
        sources: &[Option<Signature>],
        pending: Option<crate::wiring::PendingAlias<'_>>,
    ) -> Result<(), ApiError> {
        let service = target.split(':').nth(2).unwrap_or_default();
        if !target.starts_with("arn:") || service.is_empty() {
            return Err(ApiError::invalid(format!(
                "DestinationConfig.{which}.Destination {target:?} is not an ARN; give a function ARN such as {}",
                function_arn(&self.options.region, account, "my-function")
            )));
        }
        if service != "lambda" {
            return Err(ApiError::invalid(format!(
                "DestinationConfig.{which}.Destination {target:?} is a {service} ARN; Wisp delivers async outcomes to functions only"
            )));
        }
        let what = format!("DestinationConfig.{which}.Destination");
        let reference = self
            .wired_function(account, name, &what, "destination", target)
            .await?;
        // What the destination receives must be what it accepts.
        let on_success = which == "OnSuccess";
        let produced: Vec<_> = sources
            .iter()
            .map(|source| {
                let source = source.as_ref();
                let produced = Produced::schema(destination_event_schema(source, on_success))
                    .carrying(
                        "/requestPayload",
                        source.and_then(|signature| signature.input.as_ref()),
                    );
                if on_success {
                    produced.carrying(
                        "/responsePayload",
                        source.and_then(|signature| signature.output.as_ref()),
                    )
                } else {
                    produced
                }
            })
            .collect();
        let mismatches = self
            .refusals(account, &reference, pending, &produced)
            .await?;
        if !mismatches.is_empty() {
            let shown: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
            return Err(ApiError::invalid(format!(
                "{what} {target:?} does not accept the invocation records {name} sends it: {}; hint: widen its input schema or change {name}'s signature",
                shown.join("; ")
            )));
        }
        Ok(())
    }
}

/// What a function may send as one side of its signature, as JSON Schema: the schema itself, or for a
/// protobuf message every document that maps onto it (inputs and outputs are checked against it, so
/// nothing else gets through); any value when the side has no type.
pub(crate) fn produced_schema(spec: Option<&TypeSpec>) -> serde_json::Value {
    spec.and_then(|spec| crate::signature::accepted_schema(spec).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The JSON Schema of the invocation record a destination receives (Lambda's shape), with the source's
/// input and output types in `requestPayload` and `responsePayload` (any value where it has none).
pub fn destination_event_schema(source: Option<&Signature>, on_success: bool) -> serde_json::Value {
    use serde_json::json;
    let side = |spec: Option<&TypeSpec>| produced_schema(spec);
    let request = side(source.and_then(|signature| signature.input.as_ref()));
    // A failure's response is the error document (or nothing, when the event expired unrun).
    let response = if on_success {
        side(source.and_then(|signature| signature.output.as_ref()))
    } else {
        json!({})
    };
    let mut response_context = json!({
        "type": "object",
        "required": ["statusCode", "executedVersion"],
        "properties": {
            "statusCode": { "type": "integer" },
            "executedVersion": { "type": "string" },
            "functionError": { "type": "string" },
        },
        "additionalProperties": false,
    });
    let mut required = vec!["version", "timestamp", "requestContext", "requestPayload"];
    if on_success {
        required.extend(["responseContext", "responsePayload"]);
        response_context["properties"]
            .as_object_mut()
            .expect("an object")
            .remove("functionError");
    }
    json!({
        "type": "object",
        "required": required,
        "properties": {
            "version": { "type": "string" },
            "timestamp": { "type": "string" },
            "requestContext": {
                "type": "object",
                "required": ["requestId", "functionArn", "condition", "approximateInvokeCount"],
                "properties": {
                    "requestId": { "type": "string" },
                    "functionArn": { "type": "string" },
                    "condition": if on_success {
                        json!({ "const": "Success" })
                    } else {
                        json!({ "enum": ["RetriesExhausted", "EventAgeExceeded", "FunctionNotFound", "DeliveryLimitExceeded", "IdempotencyKeyMismatch"] })
                    },
                    "approximateInvokeCount": { "type": "integer" },
                },
                "additionalProperties": false,
            },
            "requestPayload": request,
            "responseContext": response_context,
            "responsePayload": response,
        },
        "additionalProperties": false,
    })
}
