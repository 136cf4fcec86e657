//! `wisp check`: every place one function of an account is wired to another, checked again as it
//! would be checked if it were made now — the target exists, is in the account, and accepts what the
//! source sends (`compat`). Wiring is checked when it is made; this finds wirings that a later change
//! broke (a signature changed, a target deleted).

use serde::Serialize;
use wisp_types::*;

use crate::ControlPlane;

/// One wiring and what is wrong with it, if anything.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Wiring {
    /// The function (qualified) whose outcomes or events flow.
    pub source: String,
    /// What kind of wiring, e.g. `OnSuccess destination`.
    pub kind: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Every wiring of an account, with the number that have a problem.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WiringReport {
    pub wirings: Vec<Wiring>,
    pub problems: usize,
}

/// An alias move being checked before it is stored: wirings see the alias at `config`'s versions.
#[derive(Clone, Copy)]
pub(crate) struct PendingAlias<'a> {
    pub function: &'a str,
    pub alias: &'a str,
    pub config: &'a AliasConfiguration,
}

impl PendingAlias<'_> {
    /// Whether `reference` (a function name or ARN with a qualifier) names this alias.
    fn names(&self, reference: &str) -> bool {
        FunctionRef::parse(reference).is_ok_and(|reference| {
            reference.name == self.function
                && matches!(&reference.qualifier, Some(Qualifier::Alias(alias)) if alias == self.alias)
        })
    }
}

impl ControlPlane {
    pub async fn check_wiring(&self, account: &AccountId) -> Result<WiringReport, ApiError> {
        self.check_wiring_with(account, None).await
    }

    /// Refuses an alias move that would break a wiring from or to the alias.
    pub(crate) async fn check_alias_wiring(
        &self,
        account: &AccountId,
        pending: PendingAlias<'_>,
    ) -> Result<(), ApiError> {
        let report = self.check_wiring_with(account, Some(pending)).await?;
        let broken: Vec<String> = report
            .wirings
            .iter()
            .filter(|wiring| pending.names(&wiring.source) || pending.names(&wiring.target))
            .filter_map(|wiring| {
                wiring.problem.as_ref().map(|problem| {
                    format!(
                        "{} -> {} ({}): {problem}",
                        wiring.source, wiring.target, wiring.kind
                    )
                })
            })
            .collect();
        if broken.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid(format!(
            "alias {} of {} cannot point to version {}: it would break {} wiring(s): {}",
            pending.alias,
            pending.function,
            pending.config.function_version,
            broken.len(),
            broken.join("; ")
        )))
    }

    /// The target of a wiring (`what` names the setting in errors, `role` the kind of target): a function
    /// of the same account, other than `name`, that exists.
    pub(crate) async fn wired_function(
        &self,
        account: &AccountId,
        name: &str,
        what: &str,
        role: &str,
        target: &str,
    ) -> Result<FunctionRef, ApiError> {
        let reference = FunctionRef::parse(target).map_err(|error| {
            ApiError::invalid(format!(
                "{what} {target:?} is not a function name or ARN: {}",
                error.message
            ))
        })?;
        if reference
            .account
            .as_ref()
            .is_some_and(|named| named != account)
        {
            return Err(ApiError::invalid(format!(
                "{what} {target:?} belongs to another account; {role}s must be functions of account {account}"
            )));
        }
        if reference.name == name {
            return Err(ApiError::invalid(format!(
                "{what} {target:?} is the function {name} itself; a function may not be its own {role} (it would invoke itself in a loop)"
            )));
        }
        self.get_function(account, &reference.name, reference.qualifier.as_ref())
            .await
            .map_err(|error| {
                if error.code == ErrorCode::ResourceNotFound {
                    ApiError::invalid(format!(
                        "{what} {target:?} does not exist: {}",
                        error.message
                    ))
                } else {
                    error
                }
            })?;
        Ok(reference)
    }

    /// Where the input types of every version `target` may run disagree with what the source may
    /// send (one schema per source version); empty when every pair is compatible.
    pub(crate) async fn refusals(
        &self,
        account: &AccountId,
        target: &FunctionRef,
        pending: Option<PendingAlias<'_>>,
        produced: &[serde_json::Value],
    ) -> Result<Vec<crate::compat::Mismatch>, ApiError> {
        let targets = self
            .signatures_for(account, &target.name, target.qualifier.clone(), pending)
            .await?;
        for accepted in targets.iter().flatten() {
            let Some(accepted) = &accepted.input else {
                continue;
            };
            let accepted = crate::signature::accepted_schema(accepted)?;
            for produced in produced {
                let mismatches = crate::compat::check(produced, &accepted);
                if !mismatches.is_empty() {
                    return Ok(mismatches);
                }
            }
        }
        Ok(Vec::new())
    }

    /// The signatures of every version a qualifier may run (both versions of a weighted alias), as
    /// they are, or as `pending` would make them.
    pub(crate) async fn signatures_for(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<Qualifier>,
        pending: Option<PendingAlias<'_>>,
    ) -> Result<Vec<Option<Signature>>, ApiError> {
        if let (Some(pending), Some(Qualifier::Alias(alias))) = (pending, &qualifier)
            && pending.function == name
            && pending.alias == alias
        {
            let mut versions = vec![pending.config.function_version.clone()];
            if let Some(routing) = &pending.config.routing_config {
                versions.extend(routing.additional_version_weights.keys().cloned());
            }
            let mut signatures = Vec::new();
            for version in versions {
                let qualifier = Qualifier::parse(&version)?;
                signatures.push(self.get_signature(account, name, Some(qualifier)).await?);
            }
            return Ok(signatures);
        }
        let resolved = self.resolve_by_name(account, name, qualifier).await?;
        let mut signatures = vec![resolved.primary.signature.clone()];
        if let Some((additional, _)) = &resolved.additional {
            signatures.push(additional.signature.clone());
        }
        Ok(signatures)
    }

    async fn check_wiring_with(
        &self,
        account: &AccountId,
        pending: Option<PendingAlias<'_>>,
    ) -> Result<WiringReport, ApiError> {
        let mut wirings = Vec::new();
        let mut marker = None;
        loop {
            let (functions, next) = self
                .list_functions(account, marker.as_deref(), 1000)
                .await?;
            for function in functions {
                self.check_destinations(account, &function.function_name, pending, &mut wirings)
                    .await?;
                self.check_hooks(account, &function.function_name, pending, &mut wirings)
                    .await?;
            }
            match next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        self.check_rules(account, pending, &mut wirings).await?;
        let problems = wirings
            .iter()
            .filter(|wiring| wiring.problem.is_some())
            .count();
        Ok(WiringReport { wirings, problems })
    }

    /// Every event-bus rule's targets, checked as when the rule was put.
    async fn check_rules(
        &self,
        account: &AccountId,
        pending: Option<PendingAlias<'_>>,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        for topic in self.list_topics(account).await? {
            for rule in self.list_rules(account, &topic.topic_name).await? {
                let pattern = crate::pattern::EventPattern::parse(&rule.event_pattern);
                for target in &rule.targets {
                    let problem = match &pattern {
                        Ok(pattern) => self
                            .check_rule_target(
                                account,
                                &topic.topic_name,
                                pattern,
                                &target.arn,
                                pending,
                            )
                            .await
                            .err()
                            .map(|error| error.message),
                        Err(error) => Some(error.message.clone()),
                    };
                    wirings.push(Wiring {
                        source: format!("topic {}", topic.topic_name),
                        kind: format!("event-bus rule {}", rule.rule_name),
                        target: target.arn.clone(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }

    async fn check_hooks(
        &self,
        account: &AccountId,
        name: &str,
        pending: Option<PendingAlias<'_>>,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        let Some(hooks) = self.stored_hooks(account, name).await? else {
            return Ok(());
        };
        let source = match self.get_signature(account, name, None).await {
            Ok(source) => source,
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for (which, hook) in [("Pre", &hooks.pre), ("Post", &hooks.post)] {
            let Some(hook) = hook else { continue };
            let problem = self
                .check_hook(account, name, which, hook, source.as_ref(), pending)
                .await
                .err()
                .map(|error| error.message);
            wirings.push(Wiring {
                source: function_arn(&self.options.region, account, name),
                kind: format!("{which}-invocation hook"),
                target: hook.clone(),
                problem,
            });
        }
        Ok(())
    }

    async fn check_destinations(
        &self,
        account: &AccountId,
        name: &str,
        pending: Option<PendingAlias<'_>>,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        let configs = match self
            .list_event_invoke_configs(account, name, None, 10_000)
            .await
        {
            Ok((configs, _)) => configs,
            // Deleted while the account was being checked: nothing of it is wired any more.
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for config in configs {
            let qualifier = FunctionRef::parse(&config.function_arn)?.qualifier;
            let sources = self
                .signatures_for(account, name, qualifier, pending)
                .await?;
            for (which, target) in [
                (
                    "OnSuccess",
                    &config.destination_config.on_success.destination,
                ),
                (
                    "OnFailure",
                    &config.destination_config.on_failure.destination,
                ),
            ] {
                let Some(target) = target else { continue };
                let problem = self
                    .check_destination(account, name, which, target, &sources, pending)
                    .await
                    .err()
                    .map(|error| error.message);
                wirings.push(Wiring {
                    source: config.function_arn.clone(),
                    kind: format!("{which} destination"),
                    target: target.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }
}
