//! Provisioned concurrency configurations (Put/Get/Delete/ListProvisionedConcurrencyConfig(s)):
//! Lambda's rules on which qualifiers may have one and how many instances they may ask for, and the
//! records under `pc/{account}/{name}/{qualifier}`.
//!
//! This module only stores what was asked for. Keeping instances warm, and so the status of a
//! configuration (how many are allocated and ready), belongs to the engine, which reads
//! [`ControlPlane::provisioned_targets`] whenever a function changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use wisp_types::*;

use crate::{ControlPlane, decode, encode, lambda_timestamp, store_error};

fn provisioned_prefix(account: &AccountId, name: &str) -> String {
    format!("pc/{account}/{name}/")
}

pub(crate) fn provisioned_key(account: &AccountId, name: &str, qualifier: &str) -> String {
    format!("pc/{account}/{name}/{qualifier}")
}

/// What one configuration asks of the engine: instances of which versions, how many of each.
#[derive(Debug, Clone)]
pub struct ProvisionedTarget {
    pub qualifier: String,
    pub requested: u32,
    pub last_modified: String,
    /// The versions the qualifier routes to, each with its share of the requested instances.
    pub allocations: Vec<(Arc<StoredVersion>, u32)>,
}

/// How many of `requested` instances go to an alias's main version and how many to its additional
/// version, which receives `additional_weight` of the traffic. Like Lambda, the instances are spread
/// in proportion to the weights; the additional version's share is rounded to the nearest instance,
/// so the two always add up to `requested`.
pub fn split_between_versions(requested: u32, additional_weight: f64) -> (u32, u32) {
    let weight = additional_weight.clamp(0.0, 1.0);
    let additional = ((requested as f64) * weight).round() as u32;
    let additional = additional.min(requested);
    (requested - additional, additional)
}

/// The concurrency a new provisioned count must fit into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvisionedBudget {
    /// The function's reserved concurrency, if set.
    pub reserved: Option<u32>,
    /// Concurrent executions of the account.
    pub account_limit: u32,
    /// Reserved concurrency of every function of the account (this one included).
    pub reserved_in_account: u32,
    /// Provisioned concurrency of the account's other functions that have no reserved concurrency
    /// (they draw on the unreserved pool, as this function does when it has none).
    pub unreserved_provisioned_elsewhere: u32,
}

/// Checks that the function's provisioned concurrency — `other_in_function` from its other
/// configurations plus `requested` — fits its reserved concurrency, or else the account's unreserved
/// concurrency.
pub fn check_provisioned_count(
    function: &str,
    requested: u32,
    other_in_function: u32,
    budget: ProvisionedBudget,
) -> Result<(), ApiError> {
    if requested == 0 {
        return Err(ApiError::invalid(
            "ProvisionedConcurrentExecutions must be at least 1; delete the configuration to remove it",
        ));
    }
    let total = other_in_function.saturating_add(requested);
    match budget.reserved {
        Some(reserved) if total > reserved => Err(ApiError::invalid(format!(
            "provisioned concurrency {total} of function {function} exceeds its reserved concurrency of {reserved}"
        ))),
        Some(_) => Ok(()),
        None => {
            let unreserved = budget
                .account_limit
                .saturating_sub(budget.reserved_in_account);
            let needed = total.saturating_add(budget.unreserved_provisioned_elsewhere);
            if needed > unreserved {
                Err(ApiError::invalid(format!(
                    "provisioned concurrency {total} of function {function} does not fit the account's unreserved concurrency of {unreserved} ({} already provisioned by other functions)",
                    budget.unreserved_provisioned_elsewhere
                )))
            } else {
                Ok(())
            }
        }
    }
}

impl ControlPlane {
    /// The versions a qualifier routes to, with the weight of each, after checking that it may
    /// have provisioned concurrency (a published version, or an alias of published versions).
    async fn provisioned_subject(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: &Qualifier,
    ) -> Result<Vec<(u64, f64)>, ApiError> {
        self.load_function(account, name).await?;
        match qualifier {
            Qualifier::Latest => Err(ApiError::invalid(format!(
                "provisioned concurrency cannot be configured on {name}:$LATEST; publish a version and use it or an alias"
            ))),
            Qualifier::Version(number) => {
                self.load_version(account, name, *number).await?;
                Ok(vec![(*number, 1.0)])
            }
            Qualifier::Alias(alias) => {
                let alias = self.get_alias(account, name, alias).await?;
                alias_versions(name, &alias)
            }
        }
    }

    /// Stores a provisioned concurrency configuration after checking Lambda's rules.
    pub async fn put_provisioned_concurrency(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: &Qualifier,
        requested: u32,
    ) -> Result<StoredProvisionedConcurrency, ApiError> {
        // Check and write as one step: two concurrent Puts for overlapping versions cannot both pass.
        let _one_at_a_time = self.provisioned_changes.lock().await;
        let versions = self.provisioned_subject(account, name, qualifier).await?;
        let qualifier_text = qualifier.to_string();
        let configs = self.list_provisioned_concurrency(account, name).await?;
        let mut other_in_function = 0u32;
        let ours: BTreeSet<u64> = versions.iter().map(|(version, _)| *version).collect();
        for config in configs
            .iter()
            .filter(|config| config.qualifier != qualifier_text)
        {
            other_in_function = other_in_function.saturating_add(config.requested);
            let theirs = match self
                .provisioned_subject(account, name, &Qualifier::parse(&config.qualifier)?)
                .await
            {
                Ok(theirs) => theirs,
                // A configuration whose alias or version is gone no longer provisions anything.
                Err(_) => continue,
            };
            if let Some((shared, _)) = theirs.iter().find(|(version, _)| ours.contains(version)) {
                return Err(ApiError::conflict(format!(
                    "version {shared} of {name} already has provisioned concurrency through {}; a version and an alias routing to it cannot both have a configuration",
                    config.qualifier
                )));
            }
        }
        let budget = self.provisioned_budget(account, name).await?;
        check_provisioned_count(name, requested, other_in_function, budget)?;
        let stored = StoredProvisionedConcurrency {
            qualifier: qualifier_text.clone(),
            requested,
            last_modified: lambda_timestamp(chrono::Utc::now()),
        };
        let key = provisioned_key(account, name, &qualifier_text);
        let before = self.kv.get(&key).await.map_err(store_error)?;
        self.kv
            .put(&key, encode(&stored), None)
            .await
            .map_err(store_error)?;
        self.forget(account, name);
        self.announce(
            account,
            crate::lifecycle::EventType::ProvisionedConcurrencyChanged,
            qualified_arn(&self.options.region, account, name, &qualifier_text),
            before.and_then(|entry| serde_json::from_slice(&entry.value).ok()),
            crate::lifecycle::snapshot(&stored),
        )
        .await?;
        Ok(stored)
    }

    /// The reserved and provisioned concurrency around a function, for [`check_provisioned_count`].
    async fn provisioned_budget(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<ProvisionedBudget, ApiError> {
        let mut budget = ProvisionedBudget {
            reserved: None,
            account_limit: self.options.account_concurrency,
            reserved_in_account: 0,
            unreserved_provisioned_elsewhere: 0,
        };
        let mut unreserved_functions = BTreeSet::new();
        for (key, entry) in self.scan_all(&format!("fn/{account}/")).await? {
            let function: StoredFunction = decode(&key, &entry.value)?;
            let function_name = function.latest.config.function_name;
            match function.reserved_concurrency {
                Some(reserved) => {
                    budget.reserved_in_account =
                        budget.reserved_in_account.saturating_add(reserved);
                    if function_name == name {
                        budget.reserved = Some(reserved);
                    }
                }
                None => {
                    unreserved_functions.insert(function_name);
                }
            }
        }
        for (key, entry) in self.scan_all(&format!("pc/{account}/")).await? {
            let function_name = key.split('/').nth(2).unwrap_or_default();
            if function_name != name && unreserved_functions.contains(function_name) {
                let config: StoredProvisionedConcurrency = decode(&key, &entry.value)?;
                budget.unreserved_provisioned_elsewhere = budget
                    .unreserved_provisioned_elsewhere
                    .saturating_add(config.requested);
            }
        }
        Ok(budget)
    }

    pub async fn get_provisioned_concurrency(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: &Qualifier,
    ) -> Result<StoredProvisionedConcurrency, ApiError> {
        self.provisioned_subject(account, name, qualifier).await?;
        let key = provisioned_key(account, name, &qualifier.to_string());
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => decode(&key, &entry.value),
            None => Err(ApiError::new(
                ErrorCode::ProvisionedConcurrencyConfigNotFound,
                format!(
                    "no provisioned concurrency configuration exists for {}",
                    qualified_arn(&self.options.region, account, name, &qualifier.to_string())
                ),
            )),
        }
    }

    /// Removes a configuration; like Lambda, answers success when there was none.
    pub async fn delete_provisioned_concurrency(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: &Qualifier,
    ) -> Result<(), ApiError> {
        self.provisioned_subject(account, name, qualifier).await?;
        let key = provisioned_key(account, name, &qualifier.to_string());
        let before = self.kv.get(&key).await.map_err(store_error)?;
        self.kv.delete(&key).await.map_err(store_error)?;
        self.forget(account, name);
        if let Some(before) = before {
            self.announce(
                account,
                crate::lifecycle::EventType::ProvisionedConcurrencyChanged,
                qualified_arn(&self.options.region, account, name, &qualifier.to_string()),
                serde_json::from_slice(&before.value).ok(),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// A function's configurations in qualifier order.
    pub async fn list_provisioned_concurrency(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Vec<StoredProvisionedConcurrency>, ApiError> {
        self.load_function(account, name).await?;
        self.scan_all(&provisioned_prefix(account, name))
            .await?
            .into_iter()
            .map(|(key, entry)| decode(&key, &entry.value))
            .collect()
    }

    /// What the engine should keep warm for a function: its configurations with the versions each
    /// routes to. A function that no longer exists has none.
    pub async fn provisioned_targets(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Vec<ProvisionedTarget>, ApiError> {
        let configs = match self.list_provisioned_concurrency(account, name).await {
            Ok(configs) => configs,
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut targets = Vec::new();
        for config in configs {
            let qualifier = Qualifier::parse(&config.qualifier)?;
            let versions = match self.provisioned_subject(account, name, &qualifier).await {
                Ok(versions) => versions,
                Err(error) => {
                    tracing::warn!(function = name, qualifier = %config.qualifier, %error, "provisioned concurrency configuration points nowhere");
                    continue;
                }
            };
            let mut allocations = Vec::new();
            match versions.as_slice() {
                [(version, _)] => allocations.push((*version, config.requested)),
                [(primary, _), (additional, weight)] => {
                    let (main, extra) = split_between_versions(config.requested, *weight);
                    allocations.push((*primary, main));
                    allocations.push((*additional, extra));
                }
                _ => {}
            }
            let mut loaded = Vec::new();
            for (version, count) in allocations.into_iter().filter(|(_, count)| *count > 0) {
                let stored = self.load_version(account, name, version).await?;
                loaded.push((Arc::new(stored), count));
            }
            targets.push(ProvisionedTarget {
                qualifier: config.qualifier,
                requested: config.requested,
                last_modified: config.last_modified,
                allocations: loaded,
            });
        }
        Ok(targets)
    }

    /// Every (account, function) that has at least one configuration: what to provision at start.
    pub async fn provisioned_functions(&self) -> Result<Vec<(AccountId, String)>, ApiError> {
        let mut functions = BTreeSet::new();
        for (key, _) in self.scan_all("pc/").await? {
            let mut parts = key.split('/').skip(1);
            if let (Some(account), Some(name)) = (parts.next(), parts.next()) {
                functions.insert((account.to_string(), name.to_string()));
            }
        }
        Ok(functions
            .into_iter()
            .map(|(account, name)| (AccountId(account), name))
            .collect())
    }

    /// Total provisioned concurrency of a function, over all its configurations.
    pub(crate) async fn provisioned_total(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<u32, ApiError> {
        Ok(self
            .list_provisioned_concurrency(account, name)
            .await?
            .iter()
            .fold(0u32, |total, config| total.saturating_add(config.requested)))
    }

    /// Refuses to move an alias that has provisioned concurrency onto `$LATEST` or onto a version
    /// another configuration already provisions.
    pub(crate) async fn check_alias_move(
        &self,
        account: &AccountId,
        name: &str,
        moved: &AliasConfiguration,
    ) -> Result<(), ApiError> {
        let configs = self.list_provisioned_concurrency(account, name).await?;
        if !configs.iter().any(|config| config.qualifier == moved.name) {
            return Ok(());
        }
        let ours: BTreeSet<u64> = alias_versions(name, moved)?
            .into_iter()
            .map(|(version, _)| version)
            .collect();
        for config in configs
            .iter()
            .filter(|config| config.qualifier != moved.name)
        {
            let Ok(theirs) = self
                .provisioned_subject(account, name, &Qualifier::parse(&config.qualifier)?)
                .await
            else {
                continue;
            };
            if let Some((shared, _)) = theirs.iter().find(|(version, _)| ours.contains(version)) {
                return Err(ApiError::conflict(format!(
                    "alias {} has provisioned concurrency and version {shared} of {name} already has its own through {}",
                    moved.name, config.qualifier
                )));
            }
        }
        Ok(())
    }
}

/// The published versions an alias routes to, main version first, with their weights.
fn alias_versions(name: &str, alias: &AliasConfiguration) -> Result<Vec<(u64, f64)>, ApiError> {
    let Qualifier::Version(primary) = Qualifier::parse(&alias.function_version)? else {
        return Err(ApiError::invalid(format!(
            "alias {} of {name} points to $LATEST, which cannot have provisioned concurrency; point it at a published version",
            alias.name
        )));
    };
    let mut versions = Vec::new();
    let mut additional_weight = 0.0;
    if let Some(routing) = &alias.routing_config
        && let Some((version, weight)) = routing.additional_version_weights.iter().next()
        && let Qualifier::Version(number) = Qualifier::parse(version)?
    {
        additional_weight = *weight;
        versions.push((number, *weight));
    }
    versions.insert(0, (primary, 1.0 - additional_weight));
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_aliases_spread_instances_in_proportion_and_keep_the_total() {
        for (requested, weight, expected) in [
            (10, 0.0, (10, 0)),
            (10, 0.1, (9, 1)),
            (10, 0.5, (5, 5)),
            (1, 0.1, (1, 0)),
            (1, 0.6, (0, 1)),
            (3, 1.0, (0, 3)),
            (4, 0.25, (3, 1)),
        ] {
            assert_eq!(
                split_between_versions(requested, weight),
                expected,
                "{requested} instances, additional weight {weight}"
            );
        }
    }

    fn budget(reserved: Option<u32>) -> ProvisionedBudget {
        ProvisionedBudget {
            reserved,
            account_limit: 100,
            reserved_in_account: reserved.unwrap_or(0) + 20,
            unreserved_provisioned_elsewhere: 30,
        }
    }

    #[test]
    fn provisioned_counts_fit_reserved_concurrency_or_the_unreserved_pool() {
        // (requested, other configurations of the function, reserved, accepted)
        for (requested, other, reserved, accepted) in [
            (0, 0, None, false),
            (5, 0, Some(5), true),
            (6, 0, Some(5), false),
            (3, 2, Some(5), true),
            (4, 2, Some(5), false),
            // 100 - 20 reserved elsewhere - 30 provisioned elsewhere = 50 left.
            (50, 0, None, true),
            (51, 0, None, false),
            (40, 10, None, true),
            (41, 10, None, false),
        ] {
            let outcome = check_provisioned_count("f", requested, other, budget(reserved));
            assert_eq!(
                outcome.is_ok(),
                accepted,
                "{requested} requested, {other} other, reserved {reserved:?}: {outcome:?}"
            );
            if let Err(error) = outcome {
                assert_eq!(error.code, ErrorCode::InvalidParameterValue);
            }
        }
    }

    #[test]
    fn aliases_of_latest_cannot_be_provisioned() {
        let alias = |version: &str, weights: &[(&str, f64)]| AliasConfiguration {
            alias_arn: String::new(),
            name: "live".into(),
            function_version: version.into(),
            description: String::new(),
            routing_config: (!weights.is_empty()).then(|| AliasRoutingConfiguration {
                additional_version_weights: weights
                    .iter()
                    .map(|(version, weight)| (version.to_string(), *weight))
                    .collect(),
            }),
            revision_id: String::new(),
        };
        assert!(alias_versions("f", &alias("$LATEST", &[])).is_err());
        assert_eq!(
            alias_versions("f", &alias("2", &[])).unwrap(),
            vec![(2, 1.0)]
        );
        assert_eq!(
            alias_versions("f", &alias("2", &[("3", 0.25)])).unwrap(),
            vec![(2, 0.75), (3, 0.25)]
        );
    }
}
