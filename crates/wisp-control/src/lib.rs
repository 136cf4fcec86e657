//! The control plane: functions, published versions, aliases and concurrency settings, kept in the
//! store (`Kv` for records, `Blobs` for deployment packages by sha256).
//!
//! Every operation here is a Lambda control-plane action with Lambda's rules and errors. This crate
//! never runs code and never speaks HTTP; it validates, stores and resolves. Published versions are
//! immutable: they are written once with put-if-absent and never updated.
//!
//! Key layout (all under the account, so an account's data is one prefix):
//! `fn/{account}/{name}` → [`StoredFunction`], `ver/{account}/{name}/{version:020}` → [`StoredVersion`],
//! `alias/{account}/{name}/{alias}` → [`AliasConfiguration`],
//! `pc/{account}/{name}/{qualifier}` → [`StoredProvisionedConcurrency`] (see [`provisioned`]),
//! `layer/…` and `layerver/…` → layers and their versions (see [`layers`]).

pub mod admission;
pub mod bus;
pub mod compat;
pub mod event_config;
pub mod grpc;
pub mod hooks;
pub mod idempotency;
pub mod layers;
pub mod lifecycle;
pub mod memoization;
pub mod pattern;
pub mod proto_compat;
pub mod protobuf;
pub mod provisioned;
pub mod receipts;
pub mod route_compat;
pub mod runtimes;
pub mod signature;
pub mod wiring;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use sha2::Digest as _;
use wisp_store::{Blobs, Digest, Kv, StoreError};
use wisp_types::*;

pub use event_config::EventInvokeInput;
pub use provisioned::ProvisionedTarget;
pub use runtimes::{Interpreter, RuntimeCatalog, RuntimeFamily};
pub use signature::{CompiledRoute, CompiledSignature, Side, Typed};

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    pub region: String,
    /// Concurrent executions allowed per account; reserved concurrency is carved out of it.
    pub account_concurrency: u32,
    /// Uncompressed size limit of a deployment package.
    pub max_unzipped_bytes: u64,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            region: "us-east-1".into(),
            account_concurrency: 1000,
            max_unzipped_bytes: 250 * 1024 * 1024,
        }
    }
}

/// CreateFunction's input, after the wire format (base64) is decoded.
#[derive(Debug, Clone, Default)]
pub struct CreateFunction {
    pub name: String,
    pub runtime: String,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub environment: Option<Environment>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub zip: Vec<u8>,
    pub publish: bool,
    /// Layer version ARNs, extracted under `/opt` in this order.
    pub layers: Vec<String>,
}

/// UpdateFunctionConfiguration's input: every field optional.
#[derive(Debug, Clone, Default)]
pub struct UpdateConfiguration {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub environment: Option<Environment>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    /// Replaces the function's layers (an empty list removes them).
    pub layers: Option<Vec<String>>,
    pub revision_id: Option<String>,
}

/// An alias's settings in Create/UpdateAlias.
#[derive(Debug, Clone, Default)]
pub struct AliasInput {
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing: Option<AliasRoutingConfiguration>,
    pub revision_id: Option<String>,
}

/// What an invocation of a function reference resolves to.
#[derive(Debug)]
pub struct Resolved {
    pub account: AccountId,
    pub function_name: String,
    /// The ARN the caller invoked (qualified when they gave a qualifier).
    pub invoked_arn: String,
    /// The main version, and for a weighted alias the other one with its weight.
    pub primary: Arc<StoredVersion>,
    pub additional: Option<(Arc<StoredVersion>, f64)>,
    pub reserved_concurrency: Option<u32>,
    /// How events sent to this qualifier are retried and where their outcomes go.
    pub event_config: Option<Arc<EventInvokeConfig>>,
    /// Whether and how calls of this function are made idempotent.
    pub idempotency: Option<Arc<IdempotencyConfig>>,
    /// Set when the function is declared pure: its results are cached.
    pub memoization: Option<Arc<MemoizationConfig>>,
    /// Whether each completed invocation gets a signed receipt (function or account switch).
    pub receipts: bool,
    /// The compiled signatures of `primary` and `additional` (see [`Resolved::typed_of`]).
    pub signatures: signature::Signatures,
    /// Functions called around synchronous invocations.
    pub hooks: Option<Arc<HooksConfig>>,
}

impl Resolved {
    /// Picks the version for one invocation; `roll` is uniform in [0, 1).
    pub fn pick(&self, roll: f64) -> &Arc<StoredVersion> {
        match &self.additional {
            Some((version, weight)) if roll < *weight => version,
            _ => &self.primary,
        }
    }
}

type CacheKey = (AccountId, String, Option<Qualifier>);

/// The control plane. Cheap to share behind an `Arc`.
pub struct ControlPlane {
    kv: Arc<dyn Kv>,
    blobs: Arc<dyn Blobs>,
    options: ControlOptions,
    runtimes: Arc<RuntimeCatalog>,
    /// Resolutions for the invoke path, so a warm invoke never reads the store.
    /// Entries of a function are dropped on every change to it.
    resolved: RwLock<HashMap<CacheKey, Arc<Resolved>>>,
    /// Bumped on every change, so a resolution read before a change is never cached after it.
    generation: std::sync::atomic::AtomicU64,
    changes: tokio::sync::broadcast::Sender<(AccountId, String)>,
    receipt_keys: receipts::ReceiptKeys,
    /// Serialises provisioned concurrency changes in this process, so two overlapping configurations
    /// cannot both pass the conflict check.
    provisioned_changes: tokio::sync::Mutex<()>,
    lifecycle: lifecycle::Recorder,
    admission: admission::Admission,
}

fn function_key(account: &AccountId, name: &str) -> String {
    format!("fn/{account}/{name}")
}

fn version_prefix(account: &AccountId, name: &str) -> String {
    format!("ver/{account}/{name}/")
}

fn version_key(account: &AccountId, name: &str, version: u64) -> String {
    format!("ver/{account}/{name}/{version:020}")
}

fn alias_prefix(account: &AccountId, name: &str) -> String {
    format!("alias/{account}/{name}/")
}

fn alias_key(account: &AccountId, name: &str, alias: &str) -> String {
    format!("alias/{account}/{name}/{alias}")
}

fn store_error(error: StoreError) -> ApiError {
    ApiError::internal(format!("store error: {error}"))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::internal(format!("stored record {key} is unreadable: {error}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

/// Lambda's `LastModified` format: `2026-12-04T16:36:31.123+0000`.
pub fn lambda_timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Refuses to store a change approved by admission hooks against an older revision.
fn check_admitted(config: &FunctionConfiguration, admitted: Option<&str>) -> Result<(), ApiError> {
    match admitted {
        Some(revision) if revision != config.revision_id => Err(ApiError::conflict(format!(
            "{} changed while admission hooks were deciding; retry",
            config.function_name
        ))),
        _ => Ok(()),
    }
}

fn new_revision_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl ControlPlane {
    fn function_not_found(&self, account: &AccountId, name: &str) -> ApiError {
        ApiError::not_found(format!(
            "Function not found: {}; hint: wisp ls",
            function_arn(&self.options.region, account, name)
        ))
    }

    pub fn new(
        kv: Arc<dyn Kv>,
        blobs: Arc<dyn Blobs>,
        runtimes: Arc<RuntimeCatalog>,
        options: ControlOptions,
    ) -> ControlPlane {
        ControlPlane {
            kv,
            blobs,
            options,
            runtimes,
            resolved: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            changes: tokio::sync::broadcast::channel(1024).0,
            provisioned_changes: tokio::sync::Mutex::new(()),
            receipt_keys: receipts::ReceiptKeys::default(),
            lifecycle: Default::default(),
            admission: Default::default(),
        }
    }

    pub fn options(&self) -> &ControlOptions {
        &self.options
    }

    pub fn runtimes(&self) -> &Arc<RuntimeCatalog> {
        &self.runtimes
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// The deployment package behind a digest.
    pub async fn code(&self, digest: &str) -> Result<Vec<u8>, ApiError> {
        self.blobs
            .get(&Digest(digest.to_string()))
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "code package {digest} is missing from the blob store"
                ))
            })
    }

    /// Announces each change to a function (account, name) after it is stored.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(AccountId, String)> {
        self.changes.subscribe()
    }

    fn forget(&self, account: &AccountId, name: &str) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut resolved = self
            .resolved
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        resolved.retain(|(cached_account, cached_name, _), _| {
            !(cached_account == account && cached_name == name)
        });
        drop(resolved);
        let _ = self.changes.send((account.clone(), name.to_string()));
    }

    /// Drops every cached resolution of an account (a change that applies to all its functions).
    fn forget_account(&self, account: &AccountId) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.resolved
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .retain(|(cached_account, _, _), _| cached_account != account);
    }

    /// Checks a package and stores it; returns (hex digest, base64 digest, size).
    async fn store_code(
        &self,
        runtime: &str,
        zip: Vec<u8>,
    ) -> Result<(String, String, u64), ApiError> {
        if zip.is_empty() {
            return Err(ApiError::invalid(
                "Code.ZipFile is empty: upload a zip archive of the function's code",
            ));
        }
        if zip.len() > MAX_ZIP_BYTES {
            return Err(ApiError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "deployment package is {} bytes; the limit is {MAX_ZIP_BYTES}",
                    zip.len()
                ),
            ));
        }
        let limits = wisp_sandbox::archive::ArchiveLimits {
            max_total_bytes: self.options.max_unzipped_bytes,
            ..Default::default()
        };
        let summary = wisp_sandbox::archive::inspect(&zip, &limits)
            .map_err(|error| ApiError::invalid(format!("deployment package refused: {error}")))?;
        if RuntimeCatalog::family(runtime)? == RuntimeFamily::Provided {
            match summary.entry("bootstrap").map(|entry| &entry.kind) {
                Some(wisp_sandbox::archive::EntryKind::File { executable: true }) => {}
                Some(wisp_sandbox::archive::EntryKind::File { executable: false }) => {
                    return Err(ApiError::invalid(
                        "bootstrap is not executable: set its mode to 0755 before zipping (chmod +x bootstrap)",
                    ));
                }
                _ => {
                    return Err(ApiError::invalid(format!(
                        "runtime {runtime} needs an executable file named bootstrap at the root of the package"
                    )));
                }
            }
        }
        let size = zip.len() as u64;
        let base64_digest =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&zip));
        let digest = self.blobs.put(zip).await.map_err(store_error)?;
        Ok((digest.0, base64_digest, size))
    }

    async fn load_function(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<(StoredFunction, u64), ApiError> {
        validate_function_name(name)?;
        let key = function_key(account, name);
        let entry = self
            .kv
            .get(&key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| self.function_not_found(account, name))?;
        Ok((decode(&key, &entry.value)?, entry.revision))
    }

    pub async fn create_function(
        &self,
        account: &AccountId,
        input: CreateFunction,
    ) -> Result<FunctionConfiguration, ApiError> {
        validate_function_name(&input.name)?;
        self.runtimes.check(&input.runtime)?;
        let family = RuntimeCatalog::family(&input.runtime)?;
        let handler = match (input.handler, family) {
            (Some(handler), _) if !handler.is_empty() => handler,
            (_, RuntimeFamily::Provided) => String::new(),
            _ => {
                return Err(ApiError::invalid(format!(
                    "Handler is required for runtime {}",
                    input.runtime
                )));
            }
        };
        let memory_size = input.memory_size.unwrap_or(DEFAULT_MEMORY_MB);
        validate_memory(memory_size)?;
        let timeout = input.timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        validate_timeout(timeout)?;
        let environment = input.environment.unwrap_or_default();
        validate_environment(&environment)?;
        let ephemeral_storage = input.ephemeral_storage.unwrap_or(EphemeralStorage {
            size: MIN_EPHEMERAL_MB,
        });
        validate_ephemeral_storage(ephemeral_storage.size)?;
        let key = function_key(account, &input.name);
        if self.kv.get(&key).await.map_err(store_error)?.is_some() {
            return Err(ApiError::conflict(format!(
                "Function already exist: {}",
                input.name
            )));
        }
        let (layers, layer_digests) = self.resolve_function_layers(account, &input.layers).await?;
        let hooks = self
            .hooks_for(account, lifecycle::EventType::FunctionCreated, &input.name)
            .await?;
        let for_hooks = hooks.as_ref().map(|_| input.zip.clone());
        let (code_digest, code_sha256, code_size) =
            self.store_code(&input.runtime, input.zip).await?;
        self.check_unzipped_total(&code_digest, &layer_digests)
            .await?;
        let config = FunctionConfiguration {
            function_arn: function_arn(&self.options.region, account, &input.name),
            function_name: input.name.clone(),
            runtime: input.runtime,
            role: input
                .role
                .unwrap_or_else(|| format!("arn:aws:iam::{account}:role/wisp-function")),
            handler,
            code_size,
            description: input.description.unwrap_or_default(),
            timeout,
            memory_size,
            last_modified: lambda_timestamp(chrono::Utc::now()),
            code_sha256,
            version: "$LATEST".into(),
            environment,
            ephemeral_storage,
            revision_id: new_revision_id(),
            state: "Active".into(),
            last_update_status: "Successful".into(),
            package_type: "Zip".into(),
            architectures: vec!["x86_64".into()],
            layers,
        };
        if let (Some(hooks), Some(zip)) = (hooks, for_hooks) {
            let facts = tokio::task::spawn_blocking(move || admission::code_facts(&zip))
                .await
                .map_err(|error| {
                    ApiError::internal(format!("hashing the code failed: {error}"))
                })??;
            self.ask_hooks(
                account,
                hooks,
                admission::Proposal {
                    kind: lifecycle::EventType::FunctionCreated,
                    resource: config.function_arn.clone(),
                    before: None,
                    after: lifecycle::snapshot(&config),
                    code: Some(facts),
                },
            )
            .await?;
        }
        let function = StoredFunction {
            latest: StoredVersion {
                config: config.clone(),
                code_digest,
                layer_digests,
                signature: None,
                routes: Vec::new(),
            },
            last_published: 0,
            reserved_concurrency: None,
            published_from_revision: None,
        };
        match self
            .kv
            .put_if_absent(&key, encode(&function), None)
            .await
            .map_err(store_error)?
        {
            Some(_) => {}
            None => {
                return Err(ApiError::conflict(format!(
                    "Function already exist: {}",
                    input.name
                )));
            }
        }
        self.forget(account, &input.name);
        self.announce(
            account,
            lifecycle::EventType::FunctionCreated,
            config.function_arn.clone(),
            None,
            lifecycle::snapshot(&config),
        )
        .await?;
        if input.publish {
            return self.publish_version(account, &input.name, None, None).await;
        }
        Ok(config)
    }

    /// The configuration of `$LATEST`, a version, or the version an alias points to.
    pub async fn get_function(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<&Qualifier>,
    ) -> Result<(StoredVersion, Option<u32>), ApiError> {
        let (function, _) = self.load_function(account, name).await?;
        let version = match qualifier {
            None | Some(Qualifier::Latest) => function.latest,
            Some(Qualifier::Version(number)) => self.load_version(account, name, *number).await?,
            Some(Qualifier::Alias(alias)) => {
                let alias = self.get_alias(account, name, alias).await?;
                match Qualifier::parse(&alias.function_version)? {
                    Qualifier::Version(number) => self.load_version(account, name, number).await?,
                    _ => function.latest,
                }
            }
        };
        Ok((version, function.reserved_concurrency))
    }

    async fn load_version(
        &self,
        account: &AccountId,
        name: &str,
        number: u64,
    ) -> Result<StoredVersion, ApiError> {
        let key = version_key(account, name, number);
        let entry = self
            .kv
            .get(&key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "Function not found: {}:{number}",
                    function_arn(&self.options.region, account, name)
                ))
            })?;
        decode(&key, &entry.value)
    }

    /// One page of `$LATEST` configurations, in name order; the marker is the last name of the page.
    pub async fn list_functions(
        &self,
        account: &AccountId,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<(Vec<FunctionConfiguration>, Option<String>), ApiError> {
        let prefix = format!("fn/{account}/");
        let start_after = marker.map(|marker| format!("{prefix}{marker}"));
        let limit = max_items.clamp(1, 10_000);
        let entries = self
            .kv
            .scan(&prefix, start_after.as_deref(), limit + 1)
            .await
            .map_err(store_error)?;
        let more = entries.len() > limit;
        let mut functions = Vec::with_capacity(limit);
        for (key, entry) in entries.into_iter().take(limit) {
            let function: StoredFunction = decode(&key, &entry.value)?;
            functions.push(function.latest.config);
        }
        let next_marker = if more {
            functions.last().map(|config| config.function_name.clone())
        } else {
            None
        };
        Ok((functions, next_marker))
    }

    /// Applies `change` to the function head with compare-and-set, retrying on concurrent writers.
    /// Reads the record at `key`, applies `change`, and writes it back with compare-and-set, retrying
    /// when another writer got there first. `missing` is the error when the key does not exist.
    async fn modify_record<R, T>(
        &self,
        key: &str,
        (account, name): (&AccountId, &str),
        missing: impl Fn() -> ApiError,
        mut change: impl FnMut(&mut R) -> Result<T, ApiError>,
    ) -> Result<T, ApiError>
    where
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        for _ in 0..16 {
            let entry = self
                .kv
                .get(key)
                .await
                .map_err(store_error)?
                .ok_or_else(&missing)?;
            let mut record: R = decode(key, &entry.value)?;
            let outcome = change(&mut record)?;
            match self
                .kv
                .compare_and_set(key, Some(entry.revision), encode(&record), None)
                .await
            {
                Ok(_) => {
                    self.forget(account, name);
                    return Ok(outcome);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(store_error(error)),
            }
        }
        Err(ApiError::conflict(format!(
            "{key} is being changed by other requests; retry"
        )))
    }

    /// Applies `change` to the function head (see [`Self::modify_record`]).
    async fn modify_function<T>(
        &self,
        account: &AccountId,
        name: &str,
        change: impl FnMut(&mut StoredFunction) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        validate_function_name(name)?;
        let key = function_key(account, name);
        self.modify_record(
            &key,
            (account, name),
            || self.function_not_found(account, name),
            change,
        )
        .await
    }

    pub async fn update_function_code(
        &self,
        account: &AccountId,
        name: &str,
        zip: Vec<u8>,
        publish: bool,
        revision_id: Option<String>,
    ) -> Result<FunctionConfiguration, ApiError> {
        let (current, _) = self.load_function(account, name).await?;
        let hooks = self
            .hooks_for(account, lifecycle::EventType::FunctionCodeUpdated, name)
            .await?;
        let for_hooks = hooks.as_ref().map(|_| zip.clone());
        let (code_digest, code_sha256, code_size) =
            self.store_code(&current.latest.config.runtime, zip).await?;
        self.check_unzipped_total(&code_digest, &current.latest.layer_digests)
            .await?;
        // Hooks approve the change against the configuration read above; if another change lands
        // before this one is stored, the approval does not carry over.
        let admitted_revision = match (hooks, for_hooks) {
            (Some(hooks), Some(zip)) => {
                let facts = tokio::task::spawn_blocking(move || admission::code_facts(&zip))
                    .await
                    .map_err(|error| {
                        ApiError::internal(format!("hashing the code failed: {error}"))
                    })??;
                let mut after = current.latest.config.clone();
                after.code_sha256 = code_sha256.clone();
                after.code_size = code_size;
                self.ask_hooks(
                    account,
                    hooks,
                    admission::Proposal {
                        kind: lifecycle::EventType::FunctionCodeUpdated,
                        resource: current.latest.config.function_arn.clone(),
                        before: lifecycle::snapshot(&current.latest.config),
                        after: lifecycle::snapshot(&after),
                        code: Some(facts),
                    },
                )
                .await?;
                Some(current.latest.config.revision_id.clone())
            }
            _ => None,
        };
        let mut before = None;
        let config = self
            .modify_function(account, name, |function| {
                check_revision(
                    &function.latest.config.revision_id,
                    revision_id.as_deref(),
                    "function",
                )?;
                check_admitted(&function.latest.config, admitted_revision.as_deref())?;
                before = lifecycle::snapshot(&function.latest.config);
                let latest = &mut function.latest;
                latest.code_digest = code_digest.clone();
                latest.config.code_sha256 = code_sha256.clone();
                latest.config.code_size = code_size;
                touch(&mut latest.config);
                Ok(latest.config.clone())
            })
            .await?;
        self.announce(
            account,
            lifecycle::EventType::FunctionCodeUpdated,
            config.function_arn.clone(),
            before,
            lifecycle::snapshot(&config),
        )
        .await?;
        if publish {
            return self.publish_version(account, name, None, None).await;
        }
        Ok(config)
    }

    pub async fn update_function_configuration(
        &self,
        account: &AccountId,
        name: &str,
        update: UpdateConfiguration,
    ) -> Result<FunctionConfiguration, ApiError> {
        if let Some(runtime) = &update.runtime {
            self.runtimes.check(runtime)?;
        }
        if let Some(memory) = update.memory_size {
            validate_memory(memory)?;
        }
        if let Some(timeout) = update.timeout {
            validate_timeout(timeout)?;
        }
        if let Some(environment) = &update.environment {
            validate_environment(environment)?;
        }
        if let Some(storage) = &update.ephemeral_storage {
            validate_ephemeral_storage(storage.size)?;
        }
        let layers = match &update.layers {
            Some(arns) => {
                let (layers, digests) = self.resolve_function_layers(account, arns).await?;
                let (current, _) = self.load_function(account, name).await?;
                self.check_unzipped_total(&current.latest.code_digest, &digests)
                    .await?;
                Some((layers, digests, current.latest.code_digest))
            }
            None => None,
        };
        let apply = |function: &mut StoredFunction| -> Result<FunctionConfiguration, ApiError> {
            if let Some((layers, digests, checked_code)) = &layers {
                // The size check above was made against this code.
                if &function.latest.code_digest != checked_code {
                    return Err(ApiError::conflict(format!(
                        "the code of {name} changed while its layers were being checked; retry"
                    )));
                }
                function.latest.config.layers = layers.clone();
                function.latest.layer_digests = digests.clone();
            }
            let config = &mut function.latest.config;
            check_revision(
                &config.revision_id,
                update.revision_id.as_deref(),
                "function",
            )?;
            if let Some(runtime) = &update.runtime {
                let old_family = RuntimeCatalog::family(&config.runtime)?;
                if RuntimeCatalog::family(runtime)? != old_family {
                    return Err(ApiError::invalid(format!(
                        "cannot change runtime from {} to {runtime}: the package was made for the other; update the code with the runtime instead",
                        config.runtime
                    )));
                }
                config.runtime = runtime.clone();
            }
            if let Some(handler) = &update.handler {
                config.handler = handler.clone();
            }
            if let Some(role) = &update.role {
                config.role = role.clone();
            }
            if let Some(description) = &update.description {
                config.description = description.clone();
            }
            if let Some(timeout) = update.timeout {
                config.timeout = timeout;
            }
            if let Some(memory) = update.memory_size {
                config.memory_size = memory;
            }
            if let Some(environment) = &update.environment {
                config.environment = environment.clone();
            }
            if let Some(storage) = update.ephemeral_storage {
                config.ephemeral_storage = storage;
            }
            touch(config);
            Ok(config.clone())
        };
        let kind = lifecycle::EventType::FunctionConfigurationUpdated;
        let admitted_revision = match self.hooks_for(account, kind, name).await? {
            Some(hooks) => {
                let (mut proposed, _) = self.load_function(account, name).await?;
                let before = lifecycle::snapshot(&proposed.latest.config);
                let revision = proposed.latest.config.revision_id.clone();
                let resource = proposed.latest.config.function_arn.clone();
                let after = apply(&mut proposed)?;
                self.ask_hooks(
                    account,
                    hooks,
                    admission::Proposal {
                        kind,
                        resource,
                        before,
                        after: lifecycle::snapshot(&after),
                        code: None,
                    },
                )
                .await?;
                Some(revision)
            }
            None => None,
        };
        let mut before = None;
        let config = self
            .modify_function(account, name, |function| {
                check_admitted(&function.latest.config, admitted_revision.as_deref())?;
                before = lifecycle::snapshot(&function.latest.config);
                apply(function)
            })
            .await?;
        self.announce(
            account,
            lifecycle::EventType::FunctionConfigurationUpdated,
            config.function_arn.clone(),
            before,
            lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    /// Publishes `$LATEST` as a new immutable version (or returns the last one if nothing changed since).
    pub async fn publish_version(
        &self,
        account: &AccountId,
        name: &str,
        description: Option<String>,
        revision_id: Option<String>,
    ) -> Result<FunctionConfiguration, ApiError> {
        let kind = lifecycle::EventType::VersionPublished;
        let mut admitted_revision = None;
        if let Some(hooks) = self.hooks_for(account, kind, name).await? {
            let (current, _) = self.load_function(account, name).await?;
            let unchanged = current.last_published > 0
                && current.published_from_revision.as_deref()
                    == Some(current.latest.config.revision_id.as_str());
            if !unchanged {
                let number = (current.last_published + 1).to_string();
                let mut after = current.latest.config.clone();
                after.function_arn = qualified_arn(&self.options.region, account, name, &number);
                after.version = number;
                if let Some(description) = &description {
                    after.description = description.clone();
                }
                self.ask_hooks(
                    account,
                    hooks,
                    admission::Proposal {
                        kind,
                        resource: after.function_arn.clone(),
                        before: None,
                        after: lifecycle::snapshot(&after),
                        code: None,
                    },
                )
                .await?;
                admitted_revision = Some(current.latest.config.revision_id);
            }
        }
        // Reserve the number first: a crash after this leaves a gap in numbering, never a reused number.
        let reserved = self
            .modify_function(account, name, |function| {
                check_revision(
                    &function.latest.config.revision_id,
                    revision_id.as_deref(),
                    "function",
                )?;
                check_admitted(&function.latest.config, admitted_revision.as_deref())?;
                if function.last_published > 0
                    && function.published_from_revision.as_deref()
                        == Some(function.latest.config.revision_id.as_str())
                {
                    return Ok(Err(function.last_published));
                }
                function.last_published += 1;
                function.published_from_revision = Some(function.latest.config.revision_id.clone());
                Ok(Ok((function.last_published, function.latest.clone())))
            })
            .await?;
        let (number, latest) = match reserved {
            Err(existing) => return Ok(self.load_version(account, name, existing).await?.config),
            Ok(reserved) => reserved,
        };
        let mut version = latest;
        version.config.version = number.to_string();
        version.config.function_arn =
            qualified_arn(&self.options.region, account, name, &number.to_string());
        version.config.revision_id = new_revision_id();
        version.config.last_modified = lambda_timestamp(chrono::Utc::now());
        if let Some(description) = description {
            version.config.description = description;
        }
        let key = version_key(account, name, number);
        if self
            .kv
            .put_if_absent(&key, encode(&version), None)
            .await
            .map_err(store_error)?
            .is_none()
        {
            return Err(ApiError::internal(format!(
                "version {number} of {name} already exists; versions are immutable"
            )));
        }
        self.forget(account, name);
        self.announce(
            account,
            lifecycle::EventType::VersionPublished,
            version.config.function_arn.clone(),
            None,
            lifecycle::snapshot(&version.config),
        )
        .await?;
        Ok(version.config)
    }

    /// `$LATEST` then the published versions in order, paginated like Lambda (marker = last version listed).
    pub async fn list_versions(
        &self,
        account: &AccountId,
        name: &str,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<(Vec<FunctionConfiguration>, Option<String>), ApiError> {
        let (function, _) = self.load_function(account, name).await?;
        let limit = max_items.clamp(1, 10_000);
        let mut versions = Vec::new();
        let start_after = match marker {
            None => {
                versions.push(function.latest.config);
                None
            }
            Some("$LATEST") => None,
            Some(marker) => {
                let number: u64 = marker.parse().map_err(|_| {
                    ApiError::invalid(format!("Marker {marker:?} is not a version"))
                })?;
                Some(version_key(account, name, number))
            }
        };
        let prefix = version_prefix(account, name);
        let entries = self
            .kv
            .scan(&prefix, start_after.as_deref(), limit + 1)
            .await
            .map_err(store_error)?;
        for (key, entry) in entries {
            let version: StoredVersion = decode(&key, &entry.value)?;
            versions.push(version.config);
        }
        let more = versions.len() > limit;
        versions.truncate(limit);
        let next_marker = if more {
            versions.last().map(|config| config.version.clone())
        } else {
            None
        };
        Ok((versions, next_marker))
    }

    /// Deletes the whole function, or one published version when a version qualifier is given.
    pub async fn delete_function(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<&Qualifier>,
    ) -> Result<(), ApiError> {
        let (head, _) = self.load_function(account, name).await?;
        match qualifier {
            Some(Qualifier::Latest) => Err(ApiError::invalid(
                "$LATEST cannot be deleted on its own: delete the function without a qualifier",
            )),
            Some(Qualifier::Alias(_)) => Err(ApiError::invalid(
                "delete an alias with DeleteAlias, not DeleteFunction",
            )),
            Some(Qualifier::Version(number)) => {
                let version = number.to_string();
                let aliases = self.list_aliases(account, name, None).await?;
                if let Some(alias) = aliases.iter().find(|alias| {
                    alias.function_version == version
                        || alias.routing_config.as_ref().is_some_and(|routing| {
                            routing.additional_version_weights.contains_key(&version)
                        })
                }) {
                    return Err(ApiError::conflict(format!(
                        "version {version} of {name} is used by alias {}; move or delete the alias first",
                        alias.name
                    )));
                }
                let deleted = self.load_version(account, name, *number).await.ok();
                if !self
                    .kv
                    .delete(&version_key(account, name, *number))
                    .await
                    .map_err(store_error)?
                {
                    return Err(ApiError::not_found(format!(
                        "version {version} of {name} does not exist"
                    )));
                }
                self.kv
                    .delete(&provisioned::provisioned_key(account, name, &version))
                    .await
                    .map_err(store_error)?;
                self.forget(account, name);
                self.announce(
                    account,
                    lifecycle::EventType::VersionDeleted,
                    qualified_arn(&self.options.region, account, name, &version),
                    deleted.and_then(|version| lifecycle::snapshot(&version.config)),
                    None,
                )
                .await?;
                Ok(())
            }
            None => {
                let kind = lifecycle::EventType::FunctionDeleted;
                if let Some(hooks) = self.hooks_for(account, kind, name).await? {
                    self.ask_hooks(
                        account,
                        hooks,
                        admission::Proposal {
                            kind,
                            resource: head.latest.config.function_arn.clone(),
                            before: lifecycle::snapshot(&head.latest.config),
                            after: None,
                            code: None,
                        },
                    )
                    .await?;
                }
                // Provisioned concurrency, aliases and versions first, the head last: a crash in between
                // leaves a function that can be deleted again.
                for prefix in [
                    format!("pc/{account}/{name}/"),
                    alias_prefix(account, name),
                    version_prefix(account, name),
                ] {
                    loop {
                        let entries = self
                            .kv
                            .scan(&prefix, None, 500)
                            .await
                            .map_err(store_error)?;
                        if entries.is_empty() {
                            break;
                        }
                        for (key, _) in entries {
                            self.kv.delete(&key).await.map_err(store_error)?;
                        }
                    }
                }
                self.delete_event_invoke_configs(account, name).await?;
                for key in [
                    idempotency::idempotency_key(account, name),
                    memoization::memoization_key(account, name),
                    hooks::hooks_key(account, name),
                ] {
                    self.kv.delete(&key).await.map_err(store_error)?;
                }
                self.delete_function_receipts(account, name).await?;
                self.kv
                    .delete(&function_key(account, name))
                    .await
                    .map_err(store_error)?;
                self.forget(account, name);
                self.announce(
                    account,
                    lifecycle::EventType::FunctionDeleted,
                    head.latest.config.function_arn.clone(),
                    lifecycle::snapshot(&head.latest.config),
                    None,
                )
                .await?;
                Ok(())
            }
        }
    }

    pub async fn put_function_concurrency(
        &self,
        account: &AccountId,
        name: &str,
        reserved: u32,
    ) -> Result<u32, ApiError> {
        let limit = self.options.account_concurrency;
        if reserved > limit {
            return Err(ApiError::invalid(format!(
                "ReservedConcurrentExecutions {reserved} exceeds the account's concurrency limit of {limit}"
            )));
        }
        let provisioned = self.provisioned_total(account, name).await?;
        if reserved < provisioned {
            return Err(ApiError::invalid(format!(
                "ReservedConcurrentExecutions {reserved} is less than the provisioned concurrency of {name} ({provisioned}); lower the provisioned concurrency first"
            )));
        }
        let before = self
            .modify_function(account, name, |function| {
                Ok(function.reserved_concurrency.replace(reserved))
            })
            .await?;
        self.announce_concurrency(account, name, before, Some(reserved))
            .await?;
        Ok(reserved)
    }

    pub async fn delete_function_concurrency(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<(), ApiError> {
        let before = self
            .modify_function(account, name, |function| {
                Ok(function.reserved_concurrency.take())
            })
            .await?;
        self.announce_concurrency(account, name, before, None).await
    }

    async fn check_alias_target(
        &self,
        account: &AccountId,
        name: &str,
        input: &AliasInput,
    ) -> Result<(), ApiError> {
        if let Some(version) = &input.function_version {
            match Qualifier::parse(version)? {
                Qualifier::Latest => {}
                Qualifier::Version(number) => {
                    self.load_version(account, name, number).await?;
                }
                Qualifier::Alias(_) => {
                    return Err(ApiError::invalid(format!(
                        "FunctionVersion {version:?} is not a version"
                    )));
                }
            }
        }
        if let Some(routing) = &input.routing {
            if routing.additional_version_weights.len() > 1 {
                return Err(ApiError::invalid(
                    "AdditionalVersionWeights may name at most one version",
                ));
            }
            for (version, weight) in &routing.additional_version_weights {
                if !(0.0..=1.0).contains(weight) {
                    return Err(ApiError::invalid(format!(
                        "weight {weight} for version {version} must be between 0.0 and 1.0"
                    )));
                }
                match Qualifier::parse(version)? {
                    Qualifier::Version(number) => {
                        self.load_version(account, name, number).await?;
                    }
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "AdditionalVersionWeights key {version:?} must be a published version"
                        )));
                    }
                }
                if input.function_version.as_deref() == Some(version.as_str()) {
                    return Err(ApiError::invalid(format!(
                        "version {version} is both the alias's version and its additional version"
                    )));
                }
            }
        }
        Ok(())
    }

    pub async fn create_alias(
        &self,
        account: &AccountId,
        name: &str,
        alias: &str,
        input: AliasInput,
    ) -> Result<AliasConfiguration, ApiError> {
        validate_alias_name(alias)?;
        self.load_function(account, name).await?;
        let Some(function_version) = input.function_version.clone() else {
            return Err(ApiError::invalid("FunctionVersion is required"));
        };
        self.check_alias_target(account, name, &input).await?;
        let config = AliasConfiguration {
            alias_arn: qualified_arn(&self.options.region, account, name, alias),
            name: alias.to_string(),
            function_version,
            description: input.description.unwrap_or_default(),
            routing_config: input
                .routing
                .filter(|routing| !routing.additional_version_weights.is_empty()),
            revision_id: new_revision_id(),
        };
        let kind = lifecycle::EventType::AliasCreated;
        if let Some(hooks) = self.hooks_for(account, kind, name).await? {
            self.ask_hooks(
                account,
                hooks,
                admission::Proposal {
                    kind,
                    resource: config.alias_arn.clone(),
                    before: None,
                    after: lifecycle::snapshot(&config),
                    code: None,
                },
            )
            .await?;
        }
        let created = self
            .kv
            .put_if_absent(&alias_key(account, name, alias), encode(&config), None)
            .await
            .map_err(store_error)?;
        if created.is_none() {
            return Err(ApiError::conflict(format!(
                "Alias already exists: {}",
                config.alias_arn
            )));
        }
        self.forget(account, name);
        self.announce(
            account,
            lifecycle::EventType::AliasCreated,
            config.alias_arn.clone(),
            None,
            lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    pub async fn get_alias(
        &self,
        account: &AccountId,
        name: &str,
        alias: &str,
    ) -> Result<AliasConfiguration, ApiError> {
        validate_alias_name(alias)?;
        let key = alias_key(account, name, alias);
        match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => decode(&key, &entry.value),
            None => {
                self.load_function(account, name).await?;
                Err(ApiError::not_found(format!(
                    "Alias not found: {}",
                    qualified_arn(&self.options.region, account, name, alias)
                )))
            }
        }
    }

    pub async fn update_alias(
        &self,
        account: &AccountId,
        name: &str,
        alias: &str,
        input: AliasInput,
    ) -> Result<AliasConfiguration, ApiError> {
        self.check_alias_target(account, name, &input).await?;
        self.load_function(account, name).await?;
        if input.function_version.is_some() || input.routing.is_some() {
            let mut moved = self.get_alias(account, name, alias).await?;
            if let Some(version) = &input.function_version {
                moved.function_version = version.clone();
            }
            if let Some(routing) = &input.routing {
                moved.routing_config =
                    (!routing.additional_version_weights.is_empty()).then(|| routing.clone());
            }
            self.check_alias_move(account, name, &moved).await?;
            let pending = wiring::PendingAlias {
                function: name,
                alias,
                config: &moved,
            };
            self.check_alias_wiring(account, pending).await?;
        }
        let key = alias_key(account, name, alias);
        let missing = || {
            ApiError::not_found(format!(
                "Alias not found: {}",
                qualified_arn(&self.options.region, account, name, alias)
            ))
        };
        let apply = |config: &mut AliasConfiguration| -> Result<AliasConfiguration, ApiError> {
            if let Some(version) = &input.function_version {
                config.function_version = version.clone();
            }
            if let Some(description) = &input.description {
                config.description = description.clone();
            }
            if let Some(routing) = &input.routing {
                config.routing_config =
                    (!routing.additional_version_weights.is_empty()).then(|| routing.clone());
            }
            if let Some(routing) = &config.routing_config
                && routing
                    .additional_version_weights
                    .contains_key(&config.function_version)
            {
                return Err(ApiError::invalid(
                    "the alias's version cannot also be its additional version",
                ));
            }
            config.revision_id = new_revision_id();
            Ok(config.clone())
        };
        let kind = lifecycle::EventType::AliasUpdated;
        let admitted_revision = match self.hooks_for(account, kind, name).await? {
            Some(hooks) => {
                let mut proposed = self.get_alias(account, name, alias).await?;
                let before = lifecycle::snapshot(&proposed);
                let revision = proposed.revision_id.clone();
                let after = apply(&mut proposed)?;
                self.ask_hooks(
                    account,
                    hooks,
                    admission::Proposal {
                        kind,
                        resource: after.alias_arn.clone(),
                        before,
                        after: lifecycle::snapshot(&after),
                        code: None,
                    },
                )
                .await?;
                Some(revision)
            }
            None => None,
        };
        let mut before = None;
        let config = self
            .modify_record(
                &key,
                (account, name),
                missing,
                |config: &mut AliasConfiguration| {
                    check_revision(&config.revision_id, input.revision_id.as_deref(), "alias")?;
                    if let Some(revision) = &admitted_revision
                        && *revision != config.revision_id
                    {
                        return Err(ApiError::conflict(format!(
                            "alias {alias} changed while admission hooks were deciding; retry"
                        )));
                    }
                    before = lifecycle::snapshot(config);
                    apply(config)
                },
            )
            .await?;
        self.announce(
            account,
            lifecycle::EventType::AliasUpdated,
            config.alias_arn.clone(),
            before,
            lifecycle::snapshot(&config),
        )
        .await?;
        Ok(config)
    }

    pub async fn delete_alias(
        &self,
        account: &AccountId,
        name: &str,
        alias: &str,
    ) -> Result<(), ApiError> {
        validate_alias_name(alias)?;
        self.load_function(account, name).await?;
        let kind = lifecycle::EventType::AliasDeleted;
        if let Some(hooks) = self.hooks_for(account, kind, name).await?
            && let Ok(current) = self.get_alias(account, name, alias).await
        {
            self.ask_hooks(
                account,
                hooks,
                admission::Proposal {
                    kind,
                    resource: current.alias_arn.clone(),
                    before: lifecycle::snapshot(&current),
                    after: None,
                    code: None,
                },
            )
            .await?;
        }
        // Lambda answers 204 whether or not the alias existed; its provisioned concurrency goes with it.
        self.kv
            .delete(&provisioned::provisioned_key(account, name, alias))
            .await
            .map_err(store_error)?;
        let key = alias_key(account, name, alias);
        let before = match self.kv.get(&key).await.map_err(store_error)? {
            Some(entry) => Some(decode::<AliasConfiguration>(&key, &entry.value)?),
            None => None,
        };
        let existed = self.kv.delete(&key).await.map_err(store_error)?;
        self.forget(account, name);
        if existed {
            self.announce(
                account,
                lifecycle::EventType::AliasDeleted,
                qualified_arn(&self.options.region, account, name, alias),
                before.and_then(|config| lifecycle::snapshot(&config)),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Every entry under a prefix, in key order, read page by page.
    pub(crate) async fn scan_all(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, wisp_store::Entry)>, ApiError> {
        let mut all = Vec::new();
        let mut start_after: Option<String> = None;
        loop {
            let entries = self
                .kv
                .scan(prefix, start_after.as_deref(), 500)
                .await
                .map_err(store_error)?;
            let Some((last, _)) = entries.last() else {
                break;
            };
            start_after = Some(last.clone());
            all.extend(entries);
        }
        Ok(all)
    }

    /// Aliases of a function in name order, optionally only those pointing at `version`.
    pub async fn list_aliases(
        &self,
        account: &AccountId,
        name: &str,
        version: Option<&str>,
    ) -> Result<Vec<AliasConfiguration>, ApiError> {
        self.load_function(account, name).await?;
        let mut aliases = Vec::new();
        for (key, entry) in self.scan_all(&alias_prefix(account, name)).await? {
            let alias: AliasConfiguration = decode(&key, &entry.value)?;
            if version.is_none_or(|version| alias.function_version == version) {
                aliases.push(alias);
            }
        }
        Ok(aliases)
    }

    /// Resolves a function reference for an invocation; cached until the function changes.
    pub async fn resolve(
        &self,
        account: &AccountId,
        reference: &FunctionRef,
        qualifier: Option<Qualifier>,
    ) -> Result<Arc<Resolved>, ApiError> {
        if let Some(named) = &reference.account
            && named != account
        {
            return Err(ApiError::new(
                ErrorCode::AccessDenied,
                format!("account {account} may not invoke functions of account {named}"),
            ));
        }
        let qualifier = match (&reference.qualifier, qualifier) {
            (Some(from_name), Some(from_parameter)) if *from_name != from_parameter => {
                return Err(ApiError::invalid(format!(
                    "the qualifier in the function name ({from_name}) and the Qualifier parameter ({from_parameter}) differ"
                )));
            }
            (Some(from_name), _) => Some(from_name.clone()),
            (None, from_parameter) => from_parameter,
        };
        let cache_key = (account.clone(), reference.name.clone(), qualifier.clone());
        if let Some(resolved) = self
            .resolved
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&cache_key)
        {
            return Ok(resolved.clone());
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let (function, _) = self.load_function(account, &reference.name).await?;
        let name = &reference.name;
        let invoked_arn = match &qualifier {
            None => function_arn(&self.options.region, account, name),
            Some(qualifier) => {
                qualified_arn(&self.options.region, account, name, &qualifier.to_string())
            }
        };
        let (primary, additional) = match &qualifier {
            None | Some(Qualifier::Latest) => (Arc::new(function.latest.clone()), None),
            Some(Qualifier::Version(number)) => (
                Arc::new(self.load_version(account, name, *number).await?),
                None,
            ),
            Some(Qualifier::Alias(alias)) => {
                let alias = self.get_alias(account, name, alias).await?;
                let primary = match Qualifier::parse(&alias.function_version)? {
                    Qualifier::Version(number) => {
                        Arc::new(self.load_version(account, name, number).await?)
                    }
                    _ => Arc::new(function.latest.clone()),
                };
                let mut additional = None;
                if let Some(routing) = &alias.routing_config {
                    let weights: BTreeMap<_, _> = routing.additional_version_weights.clone();
                    if let Some((version, weight)) = weights.into_iter().next() {
                        let number = version.parse::<u64>().map_err(|_| {
                            ApiError::internal(format!("alias weight names {version:?}"))
                        })?;
                        additional = Some((
                            Arc::new(self.load_version(account, name, number).await?),
                            weight,
                        ));
                    }
                }
                (primary, additional)
            }
        };
        let event_config = self
            .stored_event_invoke_config(
                account,
                name,
                qualifier.as_ref().unwrap_or(&Qualifier::Latest),
            )
            .await?
            .map(Arc::new);
        let idempotency = self
            .stored_idempotency_config(account, name)
            .await?
            .map(Arc::new);
        let memoization = self
            .stored_memoization_config(account, name)
            .await?
            .map(Arc::new);
        let receipts = self.receipts_enabled(account, name).await?;
        let hooks = self.stored_hooks(account, name).await?.map(Arc::new);
        let signatures = signature::Signatures::of(
            &primary,
            additional.as_ref().map(|(version, _)| version.as_ref()),
        )?;
        let resolved = Arc::new(Resolved {
            account: account.clone(),
            function_name: name.clone(),
            invoked_arn,
            primary,
            additional,
            reserved_concurrency: function.reserved_concurrency,
            event_config,
            idempotency,
            memoization,
            receipts,
            signatures,
            hooks,
        });
        let mut cache = self
            .resolved
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            cache.insert(cache_key, resolved.clone());
        }
        Ok(resolved)
    }
}

/// Refuses a change made against an older `RevisionId` of a function or alias (`what`).
fn check_revision(current: &str, expected: Option<&str>, what: &str) -> Result<(), ApiError> {
    match expected {
        Some(expected) if expected != current => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!("RevisionId {expected} does not match the {what}'s current {current}"),
        )),
        _ => Ok(()),
    }
}

fn touch(config: &mut FunctionConfiguration) {
    config.last_modified = lambda_timestamp(chrono::Utc::now());
    config.revision_id = new_revision_id();
}
