//! Starts the real `wisp` binary on a random port with a temp data directory, builds SDK clients
//! for it, and packages the test functions.
//!
//! The binary is `$WISP_BIN`, else `<target>/debug/wisp` (built once with `cargo build -p wisp-cli`
//! when missing). The Rust function is `fixtures/rust-echo`'s `bootstrap` (built with
//! `cargo build -p rust-echo` when missing).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_lambda::Client;
use aws_sdk_lambda::config::{Credentials, Region, SharedHttpClient};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime, State};
use tempfile::TempDir;

/// Lambda requires a role on CreateFunction; Wisp accepts any well-formed role ARN.
pub const ROLE: &str = "arn:aws:iam::123456789012:role/wisp-e2e";

// Clients never retry, so that a test sees the server's first answer (a 429 would otherwise be
// retried away).
const START_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for any one SDK call, so that a hung server fails the test instead of stalling it.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Serialises the `cargo build` calls of tests that run in the same process.
static BUILD: Mutex<()> = Mutex::new(());

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Returns `<target>/debug/<binary>`, running `cargo build -p <package>` first when it is missing.
fn built_binary(package: &str, binary: &str) -> PathBuf {
    let path = target_dir().join("debug").join(binary);
    let _guard = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package])
            .current_dir(workspace_root())
            .status()
            .unwrap_or_else(|error| panic!("cannot run cargo build -p {package}: {error}"));
        assert!(
            status.success(),
            "cargo build -p {package} failed: {status}"
        );
        assert!(
            path.exists(),
            "cargo build -p {package} did not produce {}",
            path.display()
        );
    }
    path
}

fn wisp_binary() -> PathBuf {
    match std::env::var_os("WISP_BIN") {
        Some(path) => PathBuf::from(path),
        None => built_binary("wisp-cli", "wisp"),
    }
}

/// One `wisp serve` process. Dropping it kills the server (SIGKILL) and prints its log if the test failed.
pub struct Server {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Server {
    /// Starts `wisp serve --listen 127.0.0.1:0 --data <data_dir>` and waits until it listens.
    ///
    /// stderr goes to `<data_dir>/../server-<n>.log`, which a failing test prints.
    pub fn start(data_dir: &Path) -> Server {
        let parent = data_dir.parent().expect("data dir has a parent");
        let log = (0..)
            .map(|n| parent.join(format!("server-{n}.log")))
            .find(|path| !path.exists())
            .expect("a free log name");
        let stderr = std::fs::File::create(&log).expect("create server log");
        let mut child = Command::new(wisp_binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn wisp serve");

        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { return };
                if let Some(endpoint) = line.strip_prefix("wisp listening on ") {
                    let _ = sender.send(endpoint.trim().to_owned());
                    break;
                }
            }
            // Keep draining, so that the server never blocks on a full pipe.
            for _ in lines {}
        });

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(endpoint) => {
                    return Server {
                        child,
                        endpoint,
                        log,
                    };
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        panic!(
                            "wisp serve exited with {status} before listening:\n{}",
                            read_tail(&log)
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "wisp serve did not print 'wisp listening on' within {START_TIMEOUT:?}:\n{}",
                        read_tail(&log)
                    );
                }
            }
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of the server's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log)
    }

    /// A client that reads `<data>/credentials` through aws-config's shared-credentials loader,
    /// as any SDK user would.
    pub async fn client(&self, data_dir: &Path) -> Client {
        let profiles = EnvConfigFiles::builder()
            .with_file(EnvConfigFileKind::Credentials, data_dir.join("credentials"))
            .build();
        // Only this file: keys in the environment or in ~/.aws must not leak into the test.
        // The provider builds its optional sources (IMDS and others) eagerly, and those need a client.
        let provider_config = ProviderConfig::without_region().with_http_client(http_client());
        let credentials = ProfileFileCredentialsProvider::builder()
            .configure(&provider_config)
            .profile_files(profiles.clone())
            .profile_name("default")
            .build();
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .profile_files(profiles)
            .profile_name("default")
            .credentials_provider(credentials)
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts())
            .load()
            .await;
        Client::new(&shared)
    }

    /// A client with the given static keys (for example a wrong secret).
    pub fn client_with_keys(&self, access_key_id: &str, secret_access_key: &str) -> Client {
        let config = aws_sdk_lambda::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client())
            .credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "wisp-e2e",
            ))
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts())
            .build();
        Client::from_conf(config)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Function instances die with the server (the launcher sets PR_SET_PDEATHSIG).
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- wisp serve log ({}) ---\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// A temp directory with a server on `<temp>/data`; both go away on drop (server first).
pub struct TestServer {
    pub server: Server,
    pub data_dir: PathBuf,
    _temp: TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        let temp = tempfile::Builder::new()
            .prefix("wisp-e2e-")
            .tempdir()
            .expect("temp dir");
        let data_dir = temp.path().join("data");
        let server = Server::start(&data_dir);
        TestServer {
            server,
            data_dir,
            _temp: temp,
        }
    }

    pub async fn client(&self) -> Client {
        self.server.client(&self.data_dir).await
    }

    /// Stops the server with SIGKILL and starts a new one on the same data directory.
    /// Returns the killed server, whose log a failing test still prints.
    pub fn crash_and_restart(&mut self) -> Server {
        self.server.kill_9();
        std::mem::replace(&mut self.server, Server::start(&self.data_dir))
    }
}

/// Plain HTTP: the server listens on 127.0.0.1 without TLS, so no TLS backend is compiled in.
/// (`build_http` is the builder's TLS-free constructor.)
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_http()
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

fn read_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A zip of in-memory files: (archive name, Unix mode, contents).
pub fn zip_files(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, mode, contents) in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        archive.start_file(*name, options).expect("zip entry");
        archive.write_all(contents).expect("zip write");
    }
    archive.finish().expect("zip finish").into_inner()
}

/// `fixtures/rust-echo`'s `bootstrap`, zipped with mode 0755.
pub fn rust_echo_zip() -> Vec<u8> {
    let bootstrap = built_binary("rust-echo", "bootstrap");
    let bytes = std::fs::read(&bootstrap)
        .unwrap_or_else(|error| panic!("read {}: {error}", bootstrap.display()));
    zip_files(&[("bootstrap", 0o755, &bytes)])
}

/// Creates a `provided.al2023` function from rust-echo and waits until it is Active.
pub async fn create_rust_echo(client: &Client, name: &str) {
    create_function(
        client,
        name,
        Runtime::Providedal2023,
        "bootstrap",
        rust_echo_zip(),
    )
    .await;
}

/// Creates a function (10 s timeout, 128 MB) and waits until it is Active.
pub async fn create_function(
    client: &Client,
    name: &str,
    runtime: Runtime,
    handler: &str,
    zip: Vec<u8>,
) {
    client
        .create_function()
        .function_name(name)
        .runtime(runtime)
        .role(ROLE)
        .handler(handler)
        .timeout(10)
        .memory_size(128)
        .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
        .send()
        .await
        .unwrap_or_else(|error| panic!("create_function {name}: {error:?}"));
    wait_until_active(client, name).await;
}

/// Waits until the function is Active (Wisp may answer Active at once; Lambda goes through Pending).
pub async fn wait_until_active(client: &Client, name: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let configuration = client
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .unwrap_or_else(|error| panic!("get_function_configuration {name}: {error:?}"));
        match configuration.state() {
            None | Some(State::Active) => return,
            Some(State::Failed) => panic!("function {name} failed: {configuration:?}"),
            Some(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(state) => panic!("function {name} still {state:?} after {READY_TIMEOUT:?}"),
        }
    }
}

/// Parses an invoke response payload as JSON.
pub fn json_payload(output: &aws_sdk_lambda::operation::invoke::InvokeOutput) -> serde_json::Value {
    let bytes = output.payload().map(Blob::as_ref).unwrap_or_default();
    serde_json::from_slice(bytes).unwrap_or_else(|error| {
        panic!(
            "payload is not JSON ({error}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}
