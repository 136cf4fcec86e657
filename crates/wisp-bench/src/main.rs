//! `wisp-bench`: measures a release `wisp serve --dev` on this machine, each figure beside a baseline
//! measured in the same run:
//!
//! 1. warm invoke latency (p50 / p99, concurrency 1) of a no-op `provided` function against a bare
//!    hyper echo server answering the same request;
//! 2. cold start of a `provided` and a `python3.12` function against spawning the bare process;
//! 3. sustained warm invokes per second at several concurrencies against the bare hyper server;
//! 4. async invocations: durable enqueue rate against one fsync per event, end-to-end async throughput,
//!    and enqueue-to-start latency ([`asynchronous`]);
//! 5. idempotent invokes (first execution and replay) and memoized ones against plain warm invokes
//!    ([`idempotency`]);
//! 6. invokes checked against a 20-field input schema against the same function without one ([`signatures`]);
//! 7. the event bus: publish → function run latency and throughput against `Event` invokes of the
//!    same function ([`bus`]);
//! 8. the no-op function with one registered no-op agent (extension) against none ([`extensions`]);
//! 9. gRPC unary calls against REST invokes of the same protobuf-typed function ([`grpc`]).
//!
//! Everything runs on loopback; every loop is bounded by a count or a deadline. The server is
//! started on a free port with a fresh data directory and stopped at the end.

mod asynchronous;
mod bus;
mod extensions;
mod grpc;
mod idempotency;
mod signatures;

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "wisp-bench",
    about = "Benchmarks wisp against bare baselines measured in the same run"
)]
struct Cli {
    /// The wisp executable to start (`wisp serve --dev`).
    #[arg(long, default_value = "target/release/wisp")]
    wisp: PathBuf,
    /// The no-op `provided` function's executable (the rust-echo fixture's release build).
    #[arg(long, default_value = "target/release/bootstrap")]
    bootstrap: PathBuf,
    /// The python3 to time as the interpreter baseline (resolved to its real executable, as the server does).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Invokes before the latency measurement (not measured).
    #[arg(long, default_value_t = 2000)]
    warmup: usize,
    /// Sequential invokes measured for latency.
    #[arg(long, default_value_t = 20000)]
    requests: usize,
    /// Cold starts measured per runtime (and spawns per process baseline).
    #[arg(long, default_value_t = 30)]
    cold: usize,
    /// Concurrencies of the throughput measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Seconds measured at each concurrency (after a warm-up of a quarter of that).
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Threads of the benchmark client's own runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Events sent end to end in the async section.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Events sent one at a time to measure enqueue-to-start latency.
    #[arg(long, default_value_t = 500)]
    latency_events: usize,
    /// Skip sections: any of latency, cold, throughput, async, idempotency, signatures, bus, extensions, grpc.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Subcommand)]
enum Internal {
    /// The bare hyper baseline server (started by the benchmark itself).
    #[command(hide = true)]
    EchoServer,
}

const NOOP: &str = "bench-noop";
const COLD_PROVIDED: &str = "bench-cold-provided";
const COLD_PYTHON: &str = "bench-cold-python";
const PAYLOAD: &[u8] = b"{}";
/// A hard ceiling on requests per worker in one timed phase, in case the clock misbehaves.
const MAX_REQUESTS_PER_WORKER: usize = 50_000_000;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Internal::EchoServer) = cli.command {
        return echo_server();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

// ---------------------------------------------------------------------------------------------
// The baseline: a bare hyper server in a child process (a multi-threaded tokio runtime, like wisp's).

fn echo_server() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            CONTENT_TYPE,
                            "application/json".parse().expect("header value"),
                        );
                        Ok::<_, hyper::Error>(response)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Child processes: started with a deadline on their first line, stopped when dropped.

struct Process {
    child: Child,
    name: &'static str,
    scratch: Option<PathBuf>,
}

impl Process {
    /// Starts `command` and waits (at most 60 s) for a stdout line starting with `prefix`; returns
    /// the rest of that line. Later output is drained and discarded.
    fn start(
        name: &'static str,
        mut command: Command,
        prefix: &'static str,
        scratch: Option<PathBuf>,
    ) -> anyhow::Result<(Process, String)> {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Process {
            child,
            name,
            scratch,
        };
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.strip_prefix(prefix) {
                    let _ = sender.send(rest.trim().to_string());
                    sent = true;
                }
            }
        });
        match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(rest) => Ok((process, rest)),
            Err(_) => bail!("{name} did not print {prefix:?} within 60 s"),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM first so the server stops its sandboxes; SIGKILL if it takes longer than 10 s.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: sending a signal to our own child, whose pid is not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut exited = false;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            eprintln!(
                "{} did not stop within 10 s of SIGTERM: killing it",
                self.name
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn start_wisp(wisp: &Path, extra: &[&str]) -> anyhow::Result<(Process, SocketAddr, PathBuf)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let scratch = std::env::temp_dir().join(format!("wisp-bench-{}-{nanos}", std::process::id()));
    let data = scratch.join("data");
    std::fs::create_dir_all(&data)?;
    let log_path = scratch.join("wisp.log");
    let log = std::fs::File::create(&log_path)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut command = Command::new(wisp);
    command
        .args(["serve", "--listen", &listen, "--dev", "--data"])
        .arg(&data)
        .args(extra)
        .stderr(log);
    let (process, url) = Process::start("wisp", command, "wisp listening on ", Some(scratch))?;
    let addr = url
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("wisp printed an unexpected address {url:?}"))?;
    Ok((process, addr, log_path))
}

fn start_echo() -> anyhow::Result<(Process, SocketAddr)> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("echo-server").stderr(Stdio::inherit());
    let (process, addr) = Process::start("echo server", command, "listening on ", None)?;
    Ok((process, addr.parse()?))
}

// ---------------------------------------------------------------------------------------------
// HTTP client: one keep-alive HTTP/1.1 connection per worker.

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(
    sender: &mut Sender,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// One control-plane call on its own connection; fails unless the status is 2xx.
async fn api(addr: SocketAddr, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
    let mut sender = connect(addr).await?;
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(&body)?)
    };
    let reply = send(&mut sender, addr, method.clone(), path, &[], body).await?;
    if !reply.status.is_success() {
        bail!(
            "{method} {path}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    if reply.body.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
}

fn invoke_path(function: &str) -> String {
    format!("/2015-03-31/functions/{function}/invocations")
}

/// One invoke; an error unless it answered 200 without a function error.
async fn invoke(
    sender: &mut Sender,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let reply = send(
        sender,
        addr,
        Method::POST,
        path,
        headers,
        Bytes::from_static(PAYLOAD),
    )
    .await?;
    if reply.status != StatusCode::OK || reply.headers.contains_key("x-amz-function-error") {
        bail!(
            "invoke {path}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(reply)
}

// ---------------------------------------------------------------------------------------------
// Functions under test.

fn zip_of(entries: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        writer.start_file(*name, options)?;
        writer.write_all(data)?;
    }
    Ok(writer.finish()?.into_inner())
}

async fn create_function(
    addr: SocketAddr,
    name: &str,
    runtime: &str,
    zip: &[u8],
) -> anyhow::Result<()> {
    let body = json!({
        "FunctionName": name,
        "Runtime": runtime,
        "Handler": "handler.handler",
        "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
        "MemorySize": 128,
        "Timeout": 30,
    });
    api(addr, Method::POST, "/2015-03-31/functions", body).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statistics.

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.iter().sum::<Duration>() / samples.len() as u32
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Prints a table of sorted latency samples: p50 and p99 of each row, and its p50 as a ratio of
/// `base` (µs, the same run's baseline); `width` is the name column's.
fn print_ratios(width: usize, base: f64, rows: &[(&str, &[Duration])]) {
    println!(
        "{:<width$} {:>9} {:>9} {:>9}",
        "", "p50 µs", "p99 µs", "ratio"
    );
    for (name, samples) in rows {
        println!(
            "{name:<width$} {:>9.1} {:>9.1} {:>8.2}x",
            us(percentile(samples, 50.0)),
            us(percentile(samples, 99.0)),
            us(percentile(samples, 50.0)) / base
        );
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

// ---------------------------------------------------------------------------------------------
// 1. Warm latency at concurrency 1.

async fn sequential(
    addr: SocketAddr,
    path: &str,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut sender = connect(addr).await?;
    for _ in 0..warmup {
        invoke(&mut sender, addr, path, &[]).await?;
    }
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        invoke(&mut sender, addr, path, &[]).await?;
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// 3. Throughput: `concurrency` workers, one connection each, for a fixed time.

struct Throughput {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn throughput(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<Throughput> {
    let path: Arc<str> = Arc::from(path);
    let warmup = Duration::from_secs_f64(seconds / 4.0);
    let measured = Duration::from_secs_f64(seconds);
    let barrier = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let path = path.clone();
        let barrier = barrier.clone();
        workers.push(tokio::spawn(async move {
            let connected = connect(addr).await;
            // Every worker reaches the barrier, even one that failed to connect.
            barrier.wait().await;
            let mut sender = connected?;
            let warm_until = Instant::now() + warmup;
            let mut count = 0;
            while Instant::now() < warm_until && count < MAX_REQUESTS_PER_WORKER {
                invoke(&mut sender, addr, &path, &[]).await?;
                count += 1;
            }
            barrier.wait().await;
            let until = Instant::now() + measured;
            let mut samples = Vec::new();
            while samples.len() < MAX_REQUESTS_PER_WORKER {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                invoke(&mut sender, addr, &path, &[]).await?;
                samples.push(started.elapsed());
            }
            Ok::<_, anyhow::Error>((samples, Instant::now()))
        }));
    }
    barrier.wait().await;
    barrier.wait().await;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut finished = started;
    for worker in workers {
        let (mut worker_samples, worker_finished) = worker.await??;
        samples.append(&mut worker_samples);
        finished = finished.max(worker_finished);
    }
    samples.sort_unstable();
    let elapsed = finished - started;
    Ok(Throughput {
        per_second: samples.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&samples, 50.0),
        p99: percentile(&samples, 99.0),
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Cold starts.

/// Times spawn → exit of a process, `rounds` times after two unmeasured runs.
fn time_process(
    program: &Path,
    args: &[&str],
    clear_env: bool,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds + 2 {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if clear_env {
            command.env_clear();
        }
        let started = Instant::now();
        command
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if round >= 2 {
            samples.push(started.elapsed());
        }
    }
    samples.sort_unstable();
    Ok(samples)
}

struct Cold {
    client: Vec<Duration>,
    init: Vec<Duration>,
    warm_after: Vec<Duration>,
}

/// Forces a cold start per round by changing the function's environment (a new `$LATEST`
/// revision, so a new instance), then times the first invoke and, for reference, a second one.
async fn cold_starts(addr: SocketAddr, function: &str, rounds: usize) -> anyhow::Result<Cold> {
    let path = invoke_path(function);
    let configuration = format!("/2015-03-31/functions/{function}/configuration");
    let mut cold = Cold {
        client: Vec::new(),
        init: Vec::new(),
        warm_after: Vec::new(),
    };
    for round in 0..rounds + 1 {
        let body = json!({"Environment": {"Variables": {"BENCH_ROUND": round.to_string()}}});
        api(addr, Method::PUT, &configuration, body).await?;
        // Let the superseded instance stop before timing the next start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut sender = connect(addr).await?;
        let started = Instant::now();
        let reply = invoke(&mut sender, addr, &path, &[("x-amz-log-type", "Tail")]).await?;
        let elapsed = started.elapsed();
        let started = Instant::now();
        invoke(&mut sender, addr, &path, &[]).await?;
        let warm = started.elapsed();
        let init = init_duration(&reply).with_context(|| {
            format!("round {round} of {function} was not a cold start (no Init Duration in the log tail)")
        })?;
        // The first round also pays for unpacking the code once; it is not counted.
        if round > 0 {
            cold.client.push(elapsed);
            cold.init.push(init);
            cold.warm_after.push(warm);
        }
    }
    cold.client.sort_unstable();
    cold.init.sort_unstable();
    cold.warm_after.sort_unstable();
    Ok(cold)
}

fn init_duration(reply: &Reply) -> Option<Duration> {
    let encoded = reply.headers.get("x-amz-log-result")?.to_str().ok()?;
    let tail = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let rest = tail.split("Init Duration: ").nth(1)?;
    let millis: f64 = rest.split(' ').next()?.parse().ok()?;
    Some(Duration::from_secs_f64(millis / 1e3))
}

/// The interpreter the server will run: `python3` may be a shim (pyenv) that costs tens of ms itself.
fn real_python(python: &str) -> anyhow::Result<PathBuf> {
    let output = Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    if !output.status.success() {
        bail!("{python} failed");
    }
    let executable = String::from_utf8(output.stdout)?;
    Ok(std::fs::canonicalize(executable.trim())?)
}

// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{cpus} CPUs, {model}, Linux {kernel}")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let skip = |section: &str| cli.skip.iter().any(|s| s == section);
    let bootstrap = std::fs::read(&cli.bootstrap).with_context(|| {
        format!(
            "cannot read {} (build it with `cargo build --release -p rust-echo`)",
            cli.bootstrap.display()
        )
    })?;
    if !cli.wisp.exists() {
        bail!(
            "{} does not exist (build it with `cargo build --release -p wisp-cli`)",
            cli.wisp.display()
        );
    }
    println!("machine: {}", machine());

    let (echo, echo_addr) = start_echo()?;
    let (wisp, wisp_addr, wisp_log) = start_wisp(&cli.wisp, &[])?;
    println!(
        "wisp: {} on {wisp_addr} (log {}); bare hyper echo on {echo_addr}",
        cli.wisp.display(),
        wisp_log.display()
    );
    // The baseline of the async section: the same server with group commit turned off.
    let baseline = if skip("async") {
        None
    } else {
        Some(start_wisp(&cli.wisp, &["--store-max-batch", "1"])?)
    };
    let baseline_addr = baseline.as_ref().map(|(_, addr, _)| *addr);
    let result = sections(&cli, &skip, &bootstrap, echo_addr, wisp_addr, baseline_addr).await;
    if result.is_err() {
        let log = std::fs::read_to_string(&wisp_log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        eprintln!("--- last lines of the wisp log ---\n{}", &log[start..]);
    }
    drop(baseline);
    drop(wisp);
    drop(echo);
    result
}

async fn sections(
    cli: &Cli,
    skip: &dyn Fn(&str) -> bool,
    bootstrap: &[u8],
    echo_addr: SocketAddr,
    wisp_addr: SocketAddr,
    baseline_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let noop_zip = zip_of(&[("bootstrap", bootstrap, 0o755)])?;
    create_function(wisp_addr, NOOP, "provided.al2023", &noop_zip).await?;
    let path = invoke_path(NOOP);

    if !skip("latency") {
        println!();
        println!(
            "== 1. Warm invoke latency, no-op `provided` function, concurrency 1: {} sequential requests after {} warm-up ==",
            cli.requests, cli.warmup
        );
        let bare = sequential(echo_addr, &path, cli.warmup, cli.requests).await?;
        let wisp = sequential(wisp_addr, &path, cli.warmup, cli.requests).await?;
        let bare_again = sequential(echo_addr, &path, cli.warmup / 4, cli.requests).await?;
        println!(
            "{:<34} {:>10} {:>10} {:>10}",
            "", "p50 µs", "p99 µs", "mean µs"
        );
        for (name, samples) in [
            ("bare hyper echo (before)", &bare),
            ("wisp invoke", &wisp),
            ("bare hyper echo (after)", &bare_again),
        ] {
            println!(
                "{name:<34} {:>10.1} {:>10.1} {:>10.1}",
                us(percentile(samples, 50.0)),
                us(percentile(samples, 99.0)),
                us(mean(samples))
            );
        }
        // The baseline is the better of the two runs around wisp's (the machine is shared).
        let base50 = us(percentile(&bare, 50.0)).min(us(percentile(&bare_again, 50.0)));
        let base99 = us(percentile(&bare, 99.0)).min(us(percentile(&bare_again, 99.0)));
        let wisp50 = us(percentile(&wisp, 50.0));
        let wisp99 = us(percentile(&wisp, 99.0));
        println!(
            "{:<34} {:>10.1} {:>10.1}",
            "added by wisp",
            wisp50 - base50,
            wisp99 - base99
        );
        println!(
            "{:<34} {:>9.2}x {:>9.2}x",
            "ratio wisp / bare",
            wisp50 / base50,
            wisp99 / base99
        );
        println!(
            "target: added ≤ 100 µs at p50 ({}), ≤ 1 ms at p99 ({})",
            verdict(wisp50 - base50 <= 100.0),
            verdict(wisp99 - base99 <= 1000.0)
        );
    }

    if !skip("cold") {
        println!();
        println!(
            "== 2. Cold start: {} rounds each (client-measured invoke that starts a new instance) ==",
            cli.cold
        );
        let true_bin = Path::new("/bin/true");
        let bare_true = time_process(true_bin, &[], false, cli.cold)?;
        let bare_bootstrap = time_process(&cli.bootstrap, &[], true, cli.cold)?;
        let python = real_python(&cli.python)?;
        let bare_python = time_process(&python, &["-c", "pass"], false, cli.cold)?;

        let python_zip = zip_of(&[(
            "handler.py",
            b"def handler(event, context):\n    return {}\n",
            0o644,
        )])?;
        create_function(wisp_addr, COLD_PROVIDED, "provided.al2023", &noop_zip).await?;
        create_function(wisp_addr, COLD_PYTHON, "python3.12", &python_zip).await?;
        let provided = cold_starts(wisp_addr, COLD_PROVIDED, cli.cold).await?;
        let python_cold = cold_starts(wisp_addr, COLD_PYTHON, cli.cold).await?;

        println!("{:<52} {:>8} {:>8} {:>8}", "", "p50 ms", "p90 ms", "max ms");
        let row = |name: &str, samples: &[Duration]| {
            println!(
                "{name:<52} {:>8.2} {:>8.2} {:>8.2}",
                ms(percentile(samples, 50.0)),
                ms(percentile(samples, 90.0)),
                ms(samples.last().copied().unwrap_or_default())
            );
        };
        row("fork+exec+wait /bin/true", &bare_true);
        row(
            "fork+exec+wait rust-echo bootstrap (exits: no API)",
            &bare_bootstrap,
        );
        row("wisp provided cold invoke", &provided.client);
        row("  of which server-reported Init Duration", &provided.init);
        row("  the next (warm) invoke", &provided.warm_after);
        row(&format!("{} -c pass", python.display()), &bare_python);
        row("wisp python3.12 cold invoke", &python_cold.client);
        row(
            "  of which server-reported Init Duration",
            &python_cold.init,
        );
        row("  the next (warm) invoke", &python_cold.warm_after);

        let p50 = |samples: &[Duration]| ms(percentile(samples, 50.0));
        println!(
            "provided: cold p50 {:.2} ms = {:.1}x fork+exec of the same binary ({:.2} ms), {:.1}x /bin/true ({:.2} ms); target ≤ 10 ms ({})",
            p50(&provided.client),
            p50(&provided.client) / p50(&bare_bootstrap),
            p50(&bare_bootstrap),
            p50(&provided.client) / p50(&bare_true),
            p50(&bare_true),
            verdict(p50(&provided.client) <= 10.0)
        );
        let added = p50(&python_cold.client) - p50(&bare_python);
        println!(
            "python: cold p50 {:.2} ms = {:.2}x the bare interpreter ({:.2} ms), +{:.2} ms; target ≤ interpreter + 10 ms ({})",
            p50(&python_cold.client),
            p50(&python_cold.client) / p50(&bare_python),
            p50(&bare_python),
            added,
            verdict(added <= 10.0)
        );
    }

    if !skip("throughput") {
        println!();
        println!(
            "== 3. Sustained warm invokes, no-op, {:.1} s per concurrency after {:.1} s warm-up, one keep-alive connection per worker ==",
            cli.seconds,
            cli.seconds / 4.0
        );
        println!(
            "{:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>7} {:>10}",
            "conc",
            "bare req/s",
            "bare p50µs",
            "bare p99µs",
            "wisp req/s",
            "wisp p50µs",
            "wisp p99µs",
            "ratio",
            "≥ 20000/s"
        );
        for &concurrency in &cli.concurrency {
            let bare = throughput(echo_addr, &path, concurrency, cli.seconds).await?;
            let wisp = throughput(wisp_addr, &path, concurrency, cli.seconds).await?;
            println!(
                "{concurrency:>5} {:>11.0} {:>11.1} {:>11.1} {:>11.0} {:>11.1} {:>11.1} {:>6.2}x {:>10}",
                bare.per_second,
                us(bare.p50),
                us(bare.p99),
                wisp.per_second,
                us(wisp.p50),
                us(wisp.p99),
                wisp.per_second / bare.per_second,
                verdict(wisp.per_second >= 20_000.0)
            );
        }
    }

    if let Some(baseline_addr) = baseline_addr {
        asynchronous::section(cli, wisp_addr, baseline_addr, &noop_zip).await?;
    }
    if !skip("idempotency") {
        idempotency::section(cli, wisp_addr, &noop_zip).await?;
    }
    if !skip("signatures") {
        signatures::section(cli, wisp_addr, &noop_zip).await?;
    }
    if !skip("bus") {
        bus::section(cli, wisp_addr, &noop_zip).await?;
    }
    if !skip("extensions") {
        extensions::section(cli, wisp_addr, &noop_zip).await?;
    }
    if !skip("grpc") {
        grpc::section(cli, wisp_addr, &noop_zip).await?;
    }
    Ok(())
}
