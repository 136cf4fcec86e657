//! Provisioned concurrency: instances of a published version started and initialised before anyone
//! invokes them (`AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency`), kept out of the idle
//! reaper's reach, and replaced when they die.
//!
//! The control plane stores what each configuration asks for; this module turns it into one
//! [`Target`] per version (a version has at most one configuration, directly or through an alias),
//! each with a supervisor task that starts missing instances, stops extra ones and notices deaths.
//! Invocations of the version take a ready provisioned instance first ([`Provisioned::take`]) and
//! fall back to on-demand instances when all are busy, as Lambda spills over; the instance comes back
//! through [`Provisioned::give_back`]. Neither touches the store.
//!
//! The status of a configuration is computed, never stored: `READY` once every requested instance
//! is initialised, `FAILED` (with the init error as reason) when an init failed, else `IN_PROGRESS`.
//! A failed configuration stays failed until it is put again. After a server restart every stored
//! configuration is provisioned again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use wisp_types::*;

use crate::instance::Instance;
use crate::{Engine, PoolKey};

/// `AWS_LAMBDA_INITIALIZATION_TYPE` of provisioned instances.
pub const INITIALIZATION_TYPE: &str = "provisioned-concurrency";

/// Instances of one target initialising at the same time, at most.
const PARALLEL_STARTS: u32 = 4;

/// Provisioned instances of every configured version.
#[derive(Default)]
pub struct Provisioned {
    targets: Mutex<HashMap<PoolKey, Arc<Target>>>,
    /// Number of targets, read without the lock on the invoke path.
    active: AtomicUsize,
    /// The versions and counts of each configuration, per (account, function), for status answers.
    configs: Mutex<HashMap<(AccountId, String), Vec<ConfigAllocation>>>,
    /// Refreshes of a function's targets run one at a time, so an older read never wins.
    refreshing: tokio::sync::Mutex<()>,
    /// Set at server shutdown: nothing is started any more.
    stopped: AtomicBool,
}

struct ConfigAllocation {
    qualifier: String,
    allocations: Vec<(PoolKey, u32)>,
}

/// The provisioned instances of one version.
struct Target {
    key: PoolKey,
    version: Arc<StoredVersion>,
    state: Mutex<TargetState>,
    /// Wakes the supervisor: the desired count changed, an instance died or finished initialising.
    wake: Notify,
}

#[derive(Default)]
struct TargetState {
    desired: u32,
    /// Instances started and still initialising.
    starting: u32,
    /// Initialised instances, busy or idle.
    ready: Vec<Arc<Instance>>,
    /// The idle subset of `ready`.
    idle: Vec<Arc<Instance>>,
    /// Why the last init failed; no more instances are started until the configuration is put again.
    failure: Option<String>,
    /// `LastModified` of the configuration this target serves: a new put clears a failure.
    generation: String,
    /// No configuration wants this version any more: stop everything, then forget the target.
    retired: bool,
}

/// Lambda's status of a configuration from its counts.
pub fn provisioned_status(
    requested: u32,
    available: u32,
    failure: Option<&str>,
) -> ProvisionedConcurrencyStatus {
    if failure.is_some() {
        ProvisionedConcurrencyStatus::Failed
    } else if available >= requested {
        ProvisionedConcurrencyStatus::Ready
    } else {
        ProvisionedConcurrencyStatus::InProgress
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn alive(instance: &Arc<Instance>) -> bool {
    !instance.has_exited() && !instance.is_stopping()
}

impl Provisioned {
    /// An idle, initialised provisioned instance of the pool's version, if there is one.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<Arc<Instance>> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let target = lock(&self.targets).get(key)?.clone();
        let mut state = lock(&target.state);
        while let Some(instance) = state.idle.pop() {
            if alive(&instance) {
                return Some(instance);
            }
        }
        None
    }

    /// Takes back an instance after an invocation. Returns it when it is not a provisioned one
    /// (the caller then keeps it as an on-demand instance).
    pub(crate) fn give_back(
        &self,
        key: &PoolKey,
        instance: Arc<Instance>,
        grace: Duration,
    ) -> Option<Arc<Instance>> {
        if self.active.load(Ordering::Acquire) == 0 {
            return Some(instance);
        }
        let Some(target) = lock(&self.targets).get(key).cloned() else {
            return Some(instance);
        };
        let mut state = lock(&target.state);
        let Some(position) = state
            .ready
            .iter()
            .position(|member| Arc::ptr_eq(member, &instance))
        else {
            return Some(instance);
        };
        if state.retired || state.ready.len() > state.desired as usize {
            // The configuration shrank while this instance was busy.
            state.ready.swap_remove(position);
            drop(state);
            tokio::spawn(async move {
                instance
                    .stop(grace, "provisioned concurrency reduced")
                    .await
            });
            target.wake.notify_one();
        } else {
            state.idle.push(instance);
        }
        None
    }

    /// The status of one stored configuration (`function_arn` is set in list answers).
    fn view(
        &self,
        account: &AccountId,
        function: &str,
        stored: &StoredProvisionedConcurrency,
        function_arn: Option<String>,
    ) -> ProvisionedConcurrencyConfig {
        let allocations: Vec<(PoolKey, u32)> = lock(&self.configs)
            .get(&(account.clone(), function.to_string()))
            .and_then(|configs| {
                configs
                    .iter()
                    .find(|config| config.qualifier == stored.qualifier)
            })
            .map(|config| config.allocations.clone())
            .unwrap_or_default();
        let (mut allocated, mut available, mut failure) = (0u32, 0u32, None);
        let known = !allocations.is_empty();
        for (key, count) in allocations {
            let Some(target) = lock(&self.targets).get(&key).cloned() else {
                continue;
            };
            let state = lock(&target.state);
            let ready = state.ready.iter().filter(|member| alive(member)).count() as u32;
            available += ready.min(count);
            allocated += (ready + state.starting).min(count);
            if failure.is_none() {
                failure = state.failure.clone();
            }
        }
        let status = if known {
            provisioned_status(stored.requested, available, failure.as_deref())
        } else {
            ProvisionedConcurrencyStatus::InProgress
        };
        ProvisionedConcurrencyConfig {
            function_arn,
            requested_provisioned_concurrent_executions: stored.requested,
            available_provisioned_concurrent_executions: available,
            allocated_provisioned_concurrent_executions: allocated,
            status,
            status_reason: failure
                .filter(|_| status == ProvisionedConcurrencyStatus::Failed)
                .map(|reason| format!("FUNCTION_ERROR_INIT_FAILURE: {reason}")),
            last_modified: stored.last_modified.clone(),
        }
    }

    /// Every provisioned instance, for shutdown; nothing is started afterwards.
    fn drain_all(&self) -> Vec<Arc<Instance>> {
        self.stopped.store(true, Ordering::Release);
        let targets: Vec<Arc<Target>> = lock(&self.targets).values().cloned().collect();
        let mut instances = Vec::new();
        for target in targets {
            let mut state = lock(&target.state);
            state.retired = true;
            state.idle.clear();
            instances.append(&mut state.ready);
            drop(state);
            target.wake.notify_one();
        }
        instances
    }
}

impl Engine {
    /// PutProvisionedConcurrencyConfig: stores the configuration and starts provisioning it.
    pub async fn put_provisioned_concurrency(
        self: &Arc<Self>,
        account: &AccountId,
        function: &str,
        qualifier: &Qualifier,
        requested: u32,
    ) -> Result<ProvisionedConcurrencyConfig, ApiError> {
        let stored = self
            .control
            .put_provisioned_concurrency(account, function, qualifier, requested)
            .await?;
        self.refresh_provisioned(account, function).await?;
        Ok(self.provisioned.view(account, function, &stored, None))
    }

    /// GetProvisionedConcurrencyConfig, with the live counts and status.
    pub async fn get_provisioned_concurrency(
        &self,
        account: &AccountId,
        function: &str,
        qualifier: &Qualifier,
    ) -> Result<ProvisionedConcurrencyConfig, ApiError> {
        let stored = self
            .control
            .get_provisioned_concurrency(account, function, qualifier)
            .await?;
        Ok(self.provisioned.view(account, function, &stored, None))
    }

    /// ListProvisionedConcurrencyConfigs: the function's configurations after `marker` (a
    /// qualifier), at most `max_items`, and the marker of the next page.
    pub async fn list_provisioned_concurrency(
        &self,
        account: &AccountId,
        function: &str,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<(Vec<ProvisionedConcurrencyConfig>, Option<String>), ApiError> {
        let stored = self
            .control
            .list_provisioned_concurrency(account, function)
            .await?;
        let region = &self.control.options().region;
        let mut page: Vec<&StoredProvisionedConcurrency> = stored
            .iter()
            .filter(|config| marker.is_none_or(|marker| config.qualifier.as_str() > marker))
            .collect();
        let next_marker = (page.len() > max_items).then(|| page[max_items - 1].qualifier.clone());
        page.truncate(max_items);
        let configs = page
            .into_iter()
            .map(|config| {
                let arn = qualified_arn(region, account, function, &config.qualifier);
                self.provisioned.view(account, function, config, Some(arn))
            })
            .collect();
        Ok((configs, next_marker))
    }

    /// DeleteProvisionedConcurrencyConfig: removes the configuration and stops its instances.
    pub async fn delete_provisioned_concurrency(
        self: &Arc<Self>,
        account: &AccountId,
        function: &str,
        qualifier: &Qualifier,
    ) -> Result<(), ApiError> {
        self.control
            .delete_provisioned_concurrency(account, function, qualifier)
            .await?;
        self.refresh_provisioned(account, function).await
    }

    /// Reads a function's configurations and brings its targets in line: new versions get a
    /// supervisor, changed counts wake theirs, versions no longer configured are retired.
    pub(crate) async fn refresh_provisioned(
        self: &Arc<Self>,
        account: &AccountId,
        function: &str,
    ) -> Result<(), ApiError> {
        let _one_at_a_time = self.provisioned.refreshing.lock().await;
        let wanted = self.control.provisioned_targets(account, function).await?;
        let mut configs = Vec::new();
        let mut desired: HashMap<PoolKey, (u32, Arc<StoredVersion>, String)> = HashMap::new();
        for target in wanted {
            let mut allocations = Vec::new();
            for (version, count) in target.allocations {
                let key = pool_key(account, function, &version);
                allocations.push((key.clone(), count));
                desired.insert(key, (count, version, target.last_modified.clone()));
            }
            configs.push(ConfigAllocation {
                qualifier: target.qualifier,
                allocations,
            });
        }
        let provisioned = &self.provisioned;
        {
            let mut targets = lock(&provisioned.targets);
            for (key, target) in targets.iter() {
                if key.0 == account.0 && key.1 == function && !desired.contains_key(key) {
                    lock(&target.state).retired = true;
                    target.wake.notify_one();
                }
            }
            for (key, (count, version, generation)) in desired {
                match targets.get(&key) {
                    Some(target) => {
                        let mut state = lock(&target.state);
                        state.retired = false;
                        state.desired = count;
                        if state.generation != generation {
                            state.failure = None;
                            state.generation = generation;
                        }
                        drop(state);
                        target.wake.notify_one();
                    }
                    None => {
                        let target = Arc::new(Target {
                            key: key.clone(),
                            version,
                            state: Mutex::new(TargetState {
                                desired: count,
                                generation,
                                ..TargetState::default()
                            }),
                            wake: Notify::new(),
                        });
                        targets.insert(key, target.clone());
                        tokio::spawn(supervise(Arc::downgrade(self), target));
                    }
                }
            }
            provisioned.active.store(targets.len(), Ordering::Release);
        }
        let mut by_function = lock(&provisioned.configs);
        let function_key = (account.clone(), function.to_string());
        if configs.is_empty() {
            by_function.remove(&function_key);
        } else {
            by_function.insert(function_key, configs);
        }
        Ok(())
    }

    /// Stops every provisioned instance (server shutdown).
    pub(crate) async fn shutdown_provisioned(&self) {
        let grace = self.options.shutdown_grace;
        let stopping: Vec<_> = self
            .provisioned
            .drain_all()
            .into_iter()
            .map(|instance| {
                tokio::spawn(async move { instance.stop(grace, "server stopping").await })
            })
            .collect();
        for task in stopping {
            let _ = task.await;
        }
    }
}

fn pool_key(account: &AccountId, function: &str, version: &StoredVersion) -> PoolKey {
    (
        account.0.clone(),
        function.to_string(),
        version.config.version.clone(),
        version.config.revision_id.clone(),
    )
}

/// Provisions every stored configuration (at start), then follows changes to functions: a put or
/// deleted configuration, a moved or deleted alias, a deleted version or function.
pub(crate) async fn follow_changes(
    engine: Weak<Engine>,
    mut changes: tokio::sync::broadcast::Receiver<(AccountId, String)>,
) {
    let mut refresh_all = true;
    loop {
        let Some(strong) = engine.upgrade() else {
            return;
        };
        if refresh_all {
            refresh_all = false;
            match strong.control.provisioned_functions().await {
                Ok(functions) => {
                    let mut functions = functions;
                    functions.extend(
                        lock(&strong.provisioned.configs)
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                    functions.sort();
                    functions.dedup();
                    for (account, function) in functions {
                        if let Err(error) = strong.refresh_provisioned(&account, &function).await {
                            tracing::warn!(%account, function, %error, "could not provision concurrency");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read provisioned concurrency configurations")
                }
            }
        }
        drop(strong);
        let (account, function) = match changes.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                refresh_all = true;
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(strong) = engine.upgrade() else {
            return;
        };
        if let Err(error) = strong.refresh_provisioned(&account, &function).await {
            tracing::warn!(%account, function, %error, "could not provision concurrency");
        }
    }
}

/// Keeps one target's instance count at its desired value until the target is retired.
async fn supervise(engine: Weak<Engine>, target: Arc<Target>) {
    loop {
        let Some(strong) = engine.upgrade() else {
            return;
        };
        let stopped = strong.provisioned.stopped.load(Ordering::Acquire);
        let (extra, missing, finished) = {
            let mut state = lock(&target.state);
            state.ready.retain(alive);
            state.idle.retain(alive);
            let desired = if state.retired || stopped {
                0
            } else {
                state.desired as usize
            };
            let mut extra = Vec::new();
            while state.ready.len() > desired {
                // Only idle instances are stopped here; busy ones are when they come back.
                let Some(instance) = state.idle.pop() else {
                    break;
                };
                state.ready.retain(|member| !Arc::ptr_eq(member, &instance));
                extra.push(instance);
            }
            let present = state.ready.len() as u32 + state.starting;
            let missing = if state.failure.is_some() {
                0
            } else {
                (desired as u32)
                    .saturating_sub(present)
                    .min(PARALLEL_STARTS.saturating_sub(state.starting))
            };
            state.starting += missing;
            let finished =
                (state.retired || stopped) && state.ready.is_empty() && state.starting == 0;
            (extra, missing, finished)
        };
        let grace = strong.options.shutdown_grace;
        for instance in extra {
            tokio::spawn(async move {
                instance
                    .stop(grace, "provisioned concurrency reduced")
                    .await
            });
        }
        for _ in 0..missing {
            tokio::spawn(start_one(strong.clone(), target.clone()));
        }
        if finished {
            let mut targets = lock(&strong.provisioned.targets);
            let still_retired = {
                let state = lock(&target.state);
                (state.retired || stopped) && state.ready.is_empty() && state.starting == 0
            };
            if still_retired {
                if targets
                    .get(&target.key)
                    .is_some_and(|current| Arc::ptr_eq(current, &target))
                {
                    targets.remove(&target.key);
                }
                strong
                    .provisioned
                    .active
                    .store(targets.len(), Ordering::Release);
                return;
            }
        }
        drop(strong);
        // Deaths and finished inits wake the supervisor; the timer is a safety net.
        let _ = tokio::time::timeout(Duration::from_secs(1), target.wake.notified()).await;
    }
}

/// Starts and initialises one provisioned instance, then hands it to its target.
async fn start_one(engine: Arc<Engine>, target: Arc<Target>) {
    let (account, function) = (AccountId(target.key.0.clone()), target.key.1.clone());
    let pool = engine.pool(&account, &function, &target.version);
    let started = match engine.start_instance_as(&pool, INITIALIZATION_TYPE).await {
        Ok(instance) => match instance.wait_initialised().await {
            Ok(_) => Ok(instance),
            Err(reason) => {
                engine.sinks.log(
                    &account.0,
                    &function,
                    format!(
                        "provisioned instance {} of {function}:{} failed to initialise: {reason}\n",
                        instance.id, target.version.config.version
                    ),
                );
                instance
                    .stop(engine.options.shutdown_grace, "init failed")
                    .await;
                Err(reason)
            }
        },
        Err(error) => Err(error.message),
    };
    let grace = engine.options.shutdown_grace;
    let stopped = engine.provisioned.stopped.load(Ordering::Acquire);
    drop(engine);
    let mut state = lock(&target.state);
    state.starting = state.starting.saturating_sub(1);
    match started {
        Ok(instance) => {
            if stopped || state.retired || state.ready.len() >= state.desired as usize {
                drop(state);
                tokio::spawn(async move {
                    instance
                        .stop(grace, "provisioned concurrency reduced")
                        .await
                });
            } else {
                state.ready.push(instance.clone());
                state.idle.push(instance.clone());
                drop(state);
                // Wake the supervisor when this instance dies (crash, OOM, timeout kill, stop).
                let watched = target.clone();
                tokio::spawn(async move {
                    instance.wait_exited().await;
                    watched.wake.notify_one();
                });
            }
        }
        Err(reason) => {
            state.failure = Some(reason);
            drop(state);
        }
    }
    target.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_when_every_instance_is_initialised_and_failed_on_an_init_error() {
        use ProvisionedConcurrencyStatus::*;
        for (requested, available, failure, expected) in [
            (3, 0, None, InProgress),
            (3, 2, None, InProgress),
            (3, 3, None, Ready),
            (1, 1, None, Ready),
            (3, 2, Some("Runtime.InitError: boom"), Failed),
            (3, 3, Some("Runtime.InitError: boom"), Failed),
        ] {
            assert_eq!(
                provisioned_status(requested, available, failure),
                expected,
                "{requested} requested, {available} available, failure {failure:?}"
            );
        }
    }
}
