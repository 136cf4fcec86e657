//! The composition root: reads the configuration, opens the chosen store backend, creates the
//! root account on first start, wires control plane, engine and API together, and serves.
//!
//! This is the only crate that names concrete backends (one `match` on [`StorageKind`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use wisp_api::{AccessKey, ApiState, Authenticator};
use wisp_control::{ControlOptions, ControlPlane, RuntimeCatalog, RuntimeFamily};
use wisp_engine::{Engine, EngineOptions};
use wisp_sandbox::LauncherCommand;
use wisp_store::{Blobs, EmbeddedOptions, EmbeddedStore, Kv, Log};
use wisp_types::AccountId;

/// Which store backend holds the platform's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKind {
    /// One local directory, no services needed.
    Embedded,
}

/// Everything `wisp serve` can be told.
#[derive(Debug, Clone)]
pub struct Configuration {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub storage: StorageKind,
    /// Accept any access key (signatures unchecked). Never for shared machines.
    pub dev: bool,
    pub region: String,
    pub account_concurrency: u32,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub pids_max: u32,
    /// Network of every function's sandbox.
    pub function_network: wisp_sandbox::NetworkMode,
    pub launcher: LauncherCommand,
    /// How long invocation records and results are kept by request id (zero keeps none).
    pub record_retention: Duration,
    /// Wait before the first retry of a failed event (doubling for each further retry).
    pub event_retry_delay: Duration,
    /// Most store writes committed with one fsync; 1 turns group commit off (for benchmarks' baselines).
    pub store_max_batch: Option<usize>,
}

const ROOT_KEY: &str = "auth/root";

/// Starts the server and serves until SIGINT or SIGTERM.
pub async fn run(configuration: Configuration) -> anyhow::Result<()> {
    let data_dir = &configuration.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let (kv, log, blobs): (Arc<dyn Kv>, Arc<dyn Log>, Arc<dyn Blobs>) = match configuration.storage
    {
        StorageKind::Embedded => {
            let mut options = EmbeddedOptions::new(data_dir.join("store"));
            if let Some(max_batch) = configuration.store_max_batch {
                options.max_batch = max_batch.max(1);
            }
            let store = EmbeddedStore::open(options)
                .await
                .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
            (store.clone(), store.clone(), store)
        }
    };

    let root = ensure_root_account(&kv, data_dir, &configuration.region).await?;
    if configuration.dev {
        eprintln!(
            "wisp: WARNING: --dev accepts ANY access key without checking signatures; never use it on a shared machine"
        );
    }
    let report = tokio::task::spawn_blocking(wisp_sandbox::doctor::probe).await?;
    for mechanism in report.degraded() {
        eprintln!(
            "wisp: isolation degraded: {} unavailable: {} (see wisp doctor)",
            mechanism.name, mechanism.detail
        );
    }
    if configuration.function_network == wisp_sandbox::NetworkMode::Egress {
        let egress = report
            .mechanisms
            .iter()
            .find(|mechanism| mechanism.name == "network egress");
        if let Some(egress) = egress.filter(|m| m.status != wisp_sandbox::doctor::Status::Available)
        {
            eprintln!(
                "wisp: --function-network egress: {}; functions will fail to start",
                egress.detail
            );
        }
    }

    let runtimes = Arc::new(RuntimeCatalog::default());
    // Find the interpreters now, off the async threads, so no request waits for the probe.
    let probing = runtimes.clone();
    tokio::task::spawn_blocking(move || {
        for family in [RuntimeFamily::Python, RuntimeFamily::Node] {
            match probing.interpreter(family) {
                Some(found) => eprintln!("wisp: {family:?} runtimes use {} ({})", found.executable.display(), found.version),
                None => eprintln!("wisp: no interpreter for {family:?} runtimes on this machine; those runtimes are refused"),
            }
        }
    })
    .await?;
    let control = Arc::new(ControlPlane::new(
        kv.clone(),
        blobs,
        runtimes,
        ControlOptions {
            region: configuration.region.clone(),
            account_concurrency: configuration.account_concurrency,
            ..Default::default()
        },
    ));
    control.record_lifecycle_to(log.clone());
    let receipt_key = control
        .open_receipt_keys(&root.account)
        .await
        .map_err(|error| anyhow::anyhow!("cannot open the receipt keys: {}", error.message))?;
    tracing::debug!(receipt_key, "receipts are signed with this key");
    let engine = Engine::start(
        control.clone(),
        log.clone(),
        EngineOptions {
            data_dir: data_dir.clone(),
            launcher: configuration.launcher.clone(),
            region: configuration.region.clone(),
            account_concurrency: configuration.account_concurrency,
            idle_timeout: configuration.idle_timeout,
            shutdown_grace: configuration.shutdown_grace,
            pids_max: configuration.pids_max,
            network: configuration.function_network,
            record_retention: configuration.record_retention,
            event_retry_delay: configuration.event_retry_delay,
        },
    )
    .context("cannot start the engine")?;
    // Admission hooks are functions: the control plane asks them through the engine.
    control.admit_with(engine.hook_invoker());
    let auth = Authenticator::new(kv.clone(), configuration.dev.then(|| root.account.clone()));
    let state = Arc::new(ApiState {
        control,
        engine: engine.clone(),
        log,
        auth,
        region: configuration.region.clone(),
        grpc: Default::default(),
    });
    let app = wisp_api::router(state);

    let listener = tokio::net::TcpListener::bind(configuration.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; hint: is another wisp running? use --listen",
                configuration.listen
            )
        })?;
    let address = listener.local_addr()?;
    println!("wisp listening on http://{address}");
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    eprintln!("wisp: stopping instances");
    engine.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Creates the root account and its access key on first start, prints them and writes
/// `<data>/credentials` (AWS shared-credentials format) so the aws CLI, boto3 and `wisp` can use them.
async fn ensure_root_account(
    kv: &Arc<dyn Kv>,
    data_dir: &Path,
    region: &str,
) -> anyhow::Result<AccessKey> {
    if let Some(entry) = kv.get(ROOT_KEY).await? {
        let key: AccessKey =
            serde_json::from_slice(&entry.value).context("stored root key is unreadable")?;
        write_credentials(data_dir, &key, region)?;
        return Ok(key);
    }
    let mut random = rand::rng();
    let account = AccountId(
        (0..12)
            .map(|_| char::from(b'0' + random.random_range(0..10u8)))
            .collect(),
    );
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let access_key_id: String = "AKIA"
        .chars()
        .chain((0..16).map(|_| UPPER[random.random_range(0..UPPER.len())] as char))
        .collect();
    let secret_access_key: String = (0..40)
        .map(|_| SECRET[random.random_range(0..SECRET.len())] as char)
        .collect();
    let key = AccessKey {
        access_key_id,
        secret_access_key,
        account,
    };
    let encoded = serde_json::to_vec(&key)?;
    kv.put(
        &wisp_api::auth::access_key_key(&key.access_key_id),
        encoded.clone(),
        None,
    )
    .await?;
    if kv.put_if_absent(ROOT_KEY, encoded, None).await?.is_none() {
        anyhow::bail!("the root account was created concurrently; start wisp again");
    }
    eprintln!("wisp: created root account {}", key.account);
    eprintln!("wisp:   aws_access_key_id     = {}", key.access_key_id);
    eprintln!("wisp:   aws_secret_access_key = {}", key.secret_access_key);
    write_credentials(data_dir, &key, region)?;
    eprintln!(
        "wisp:   written to {} (use AWS_SHARED_CREDENTIALS_FILE)",
        data_dir.join("credentials").display()
    );
    Ok(key)
}

fn write_credentials(data_dir: &Path, key: &AccessKey, region: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join("credentials");
    let text = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\nregion = {region}\n",
        key.access_key_id, key.secret_access_key
    );
    let temporary = data_dir.join(".credentials.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    Ok(())
}
