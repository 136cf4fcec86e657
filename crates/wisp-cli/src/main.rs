//! The `wisp` binary: `wisp serve` starts the platform; every other command is a client that talks to
//! a running server over its HTTP API (signed with SigV4), prints one readable line on error and exits
//! non-zero. `--output json` prints the server's JSON for scripts.

mod bus;
mod client;
mod deploy;
mod events;
mod layers;
mod receipts;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Parser, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use client::{Client, segment};

#[derive(Parser)]
#[command(
    name = "wisp",
    version,
    about = "Wisp: a Lambda-compatible serverless function platform"
)]
struct Cli {
    /// The server to talk to.
    #[arg(
        long,
        global = true,
        env = "WISP_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    endpoint: String,
    /// The server's data directory (for `serve`, and where clients find `credentials`).
    #[arg(long, global = true, env = "WISP_DATA", default_value = ".wisp")]
    data: PathBuf,
    #[arg(long, global = true, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Output format of client commands.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FunctionNetwork {
    Isolated,
    Egress,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start the platform (embedded store in --data).
    Serve {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Accept any access key without checking signatures (local experiments only).
        #[arg(long)]
        dev: bool,
        /// Seconds an idle instance is kept warm.
        #[arg(long, default_value_t = 300)]
        idle_timeout: u64,
        /// Seconds between SIGTERM and SIGKILL when an instance is stopped.
        #[arg(long, default_value_t = 2)]
        shutdown_grace: u64,
        /// Concurrent executions allowed per account.
        #[arg(long, default_value_t = 1000)]
        account_concurrency: u32,
        /// Processes and threads allowed per sandbox.
        #[arg(long, default_value_t = 1024)]
        pids_max: u32,
        /// Network of function sandboxes: isolated (loopback only) or egress (outbound through
        /// slirp4netns; the host's loopback at WISP_HOST_ADDRESS).
        #[arg(long, value_enum, default_value = "isolated")]
        function_network: FunctionNetwork,
        /// Threads serving the API and the Runtime API (default: a quarter of the CPUs, at least 1).
        /// One thread avoids cross-thread wake-ups on the invoke path; more serve more clients.
        #[arg(long)]
        threads: Option<usize>,
        /// How long invocation records, with results, can be fetched by request id (`0` keeps none).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        record_retention: Duration,
        /// Wait before the first retry of a failed event; each further retry waits twice as long
        /// (Lambda waits about a minute, then two).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        event_retry_delay: Duration,
        /// Most store writes committed with one fsync (1 turns group commit off; for benchmarks).
        #[arg(long, hide = true)]
        store_max_batch: Option<usize>,
    },
    /// Create or update a function from a directory or a zip.
    Deploy(deploy::DeployArgs),
    /// Publish and list layers (files shared by functions, read-only under /opt).
    Layer {
        #[command(subcommand)]
        command: layers::LayerCommand,
    },
    /// Invoke a function and print its response.
    Invoke {
        function: String,
        /// JSON payload.
        #[arg(long)]
        payload: Option<String>,
        /// Read the payload from a file.
        #[arg(long, conflicts_with = "payload")]
        payload_file: Option<PathBuf>,
        #[arg(long)]
        qualifier: Option<String>,
        /// Print the invocation's log tail to stderr.
        #[arg(long)]
        log: bool,
        /// Queue the invocation as an event (InvocationType Event) and print its request id; fetch its
        /// result later with `wisp invocations get ID`.
        #[arg(long = "async", conflicts_with = "log")]
        event: bool,
        /// Invoke with InvokeWithResponseStream and print the response's chunks as they arrive.
        #[arg(long, conflicts_with = "event")]
        stream: bool,
        /// Write the response's exact bytes to FILE and print the request id instead (for
        /// `wisp verify --output FILE`).
        #[arg(long, conflicts_with_all = ["event", "stream"])]
        response_file: Option<PathBuf>,
    },
    /// List functions.
    Ls,
    /// Show a function's configuration, with its signature, routes and hooks when it has them.
    Get {
        function: String,
        #[arg(long)]
        qualifier: Option<String>,
    },
    /// Publish $LATEST as a new version.
    Publish {
        function: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Manage aliases.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Event-bus topics: create, list, delete, publish to, read.
    Topic {
        #[command(subcommand)]
        command: bus::TopicCommand,
    },
    /// Event-bus rules: which events of a topic go to which functions.
    Rule {
        #[command(subcommand)]
        command: bus::RuleCommand,
    },
    /// Admission hooks: functions that must approve control-plane changes.
    Admission {
        #[command(subcommand)]
        command: bus::AdmissionCommand,
    },
    /// Lifecycle events of the account: control-plane changes and instance starts and stops.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Show a function's logs.
    Logs {
        function: String,
        /// Keep printing new log text as it arrives.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// List recent invocation records of a function, or show one by request id (`get ID`).
    #[command(args_conflicts_with_subcommands = true)]
    Invocations {
        #[command(subcommand)]
        command: Option<InvocationsCommand>,
        function: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Show or set a function's idempotency, or show the execution behind one key (`--key K`).
    Idempotency {
        function: String,
        /// JSONPath into the event whose first match is the key (e.g. `$.orderId`).
        #[arg(long, conflicts_with_all = ["key_header", "off", "key"])]
        key_path: Option<String>,
        /// Take the key from the request's Idempotency-Key header.
        #[arg(long, conflicts_with_all = ["off", "key"])]
        key_header: bool,
        /// Seconds a finished execution answers duplicates (default 300).
        #[arg(long)]
        window: Option<u32>,
        /// Replay failures too (else a duplicate of a failed call runs again).
        #[arg(long)]
        remember_failures: bool,
        /// Answer a duplicate with another payload too (else it is refused).
        #[arg(long)]
        allow_payload_mismatch: bool,
        /// Turn idempotency off.
        #[arg(long, conflicts_with = "key")]
        off: bool,
        /// Show the state and result of the execution behind this key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show or set whether a function is pure (its results cached for `--ttl` seconds).
    Pure {
        function: String,
        #[arg(long, conflicts_with = "off")]
        ttl: Option<u32>,
        /// Stop caching.
        #[arg(long)]
        off: bool,
    },
    /// Show a function's signature (its input and output types), or set or remove that of $LATEST.
    Signature {
        function: String,
        /// Show the signature of this version or alias instead of $LATEST.
        #[arg(long, conflicts_with_all = ["input_schema", "output_schema", "input_message", "output_message", "clear"])]
        qualifier: Option<String>,
        /// Sets the signature of $LATEST from these flags (a side not given is unchecked).
        #[command(flatten)]
        set: deploy::SignatureArgs,
        /// Remove the signature of $LATEST (published versions keep theirs).
        #[arg(long, conflicts_with_all = ["input_schema", "output_schema", "input_message", "output_message"])]
        clear: bool,
    },
    /// Show a function's routes, or set (from a JSON file `{"Routes": [...]}`) or remove those of $LATEST.
    Routes {
        function: String,
        #[arg(long, conflicts_with_all = ["file", "clear"])]
        qualifier: Option<String>,
        #[arg(long, value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        #[arg(long, conflicts_with = "file")]
        clear: bool,
    },
    /// Show, set or remove a function's invocation hooks (functions called before and after each call).
    Hooks {
        function: String,
        /// The pre-invocation hook: called with each event, it passes, rewrites or rejects it.
        #[arg(long, value_name = "FUNCTION")]
        pre: Option<String>,
        /// The post-invocation hook: sent the record of each synchronous call.
        #[arg(long, value_name = "FUNCTION")]
        post: Option<String>,
        /// Remove the hooks.
        #[arg(long, conflicts_with_all = ["pre", "post"])]
        off: bool,
    },
    /// Check every wiring of the account (destinations, hooks, event-bus rules) again; exits 1 if any is broken.
    Check,
    /// List a function's dead-letter log (async events that failed or expired), or send it again.
    Dlq {
        function: String,
        /// Queue every dead letter again as a new event, and empty the log.
        #[arg(long)]
        redrive: bool,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Show, set or remove provisioned concurrency: without --qualifier, list the function's
    /// configurations; with it, show one, or set it with --count N, or remove it with --delete.
    Provisioned {
        function: String,
        #[arg(long)]
        qualifier: Option<String>,
        /// Instances to keep initialised.
        #[arg(long, requires = "qualifier", conflicts_with = "delete")]
        count: Option<u32>,
        #[arg(long, requires = "qualifier")]
        delete: bool,
    },
    /// Delete a function (or one version with --qualifier).
    Rm {
        function: String,
        #[arg(long)]
        qualifier: Option<String>,
    },
    /// Turn receipts on or off (--on, --off) for a function, or with no function for the whole
    /// account; without --on or --off, show the setting.
    Receipts {
        function: Option<String>,
        #[arg(long, conflicts_with = "off")]
        on: bool,
        #[arg(long)]
        off: bool,
    },
    /// Print one invocation's signed receipt as JSON (`wisp receipt ID > receipt.json`).
    Receipt { request_id: String },
    /// Check a receipt offline: `wisp verify RECEIPT [--input FILE] [--output FILE] [--keys FILE]`
    /// (see `wisp verify --help`).
    Verify {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        arguments: Vec<String>,
    },
    /// List the server's receipt signing keys (public halves), save them (--save FILE), or make a
    /// new current key (`wisp keys rotate`, root account only).
    #[command(args_conflicts_with_subcommands = true)]
    Keys {
        #[command(subcommand)]
        command: Option<KeysCommand>,
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Report which isolation mechanisms the server's machine supports.
    Doctor {
        /// Probe this machine directly instead of asking the server.
        #[arg(long)]
        local: bool,
    },
    /// The sandbox launcher (started by the server, not by people).
    #[command(hide = true)]
    Launch,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new current signing key; the old one stays published as retired.
    Rotate,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print the most recent events.
    Tail {
        /// Keep printing new events as they happen.
        #[arg(long, short)]
        follow: bool,
        /// Only events of this type (e.g. FunctionCreated, InstanceStopped); may be repeated.
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[derive(Subcommand)]
enum InvocationsCommand {
    /// Show one invocation's record (state, attempts, timings) and its result.
    Get {
        request_id: String,
        /// Wait until the invocation has finished (for events still queued or running).
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum AliasCommand {
    /// Create or move an alias; `--weight VERSION=0.1` sends that share of traffic to another version.
    Set {
        function: String,
        alias: String,
        version: String,
        #[arg(long)]
        weight: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    Ls {
        function: String,
    },
    Rm {
        function: String,
        alias: String,
    },
}

/// A duration such as `250ms`, `60s`, `5m`, `24h` or `0`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 250ms, 60s, 5m or 24h"))?;
    let milliseconds = match unit {
        "ms" => 1,
        "" if number == 0 => 0,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "{text:?} is not a duration such as 250ms, 60s, 5m or 24h"
            ));
        }
    };
    Ok(Duration::from_millis(number.saturating_mul(milliseconds)))
}

fn main() {
    // The launcher takes its own arguments and must run before any thread exists: dispatch before clap.
    if std::env::args().nth(1).as_deref() == Some("launch") {
        wisp_sandbox::launcher::main();
    }
    // `verify` has its own `--output FILE`, which the global `--output text|json` would shadow.
    if let Some(arguments) = receipts::verify_arguments(std::env::args().collect()) {
        std::process::exit(match receipts::run_verify(arguments) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("wisp: {error:#}");
                1
            }
        });
    }
    let cli = Cli::parse();
    let runtime = build_runtime(&cli.command).expect("tokio runtime");
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("wisp: {error:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Client commands get a small multi-threaded runtime. The server gets one thread per quarter of the
/// CPUs: the functions need the cores more than the server does, and with one thread the invoke path
/// never pays for waking another thread (measured in BENCHMARKS.md).
fn build_runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match command {
        Command::Serve { threads, .. } => threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |cpus| (cpus.get() / 4).max(1))
        }),
        _ => 2,
    };
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Serve {
        listen,
        dev,
        idle_timeout,
        shutdown_grace,
        account_concurrency,
        pids_max,
        function_network,
        threads: _,
        record_retention,
        event_retry_delay,
        store_max_batch,
    } = cli.command
    {
        tracing_subscriber_init();
        let program =
            std::env::current_exe().context("cannot find the wisp executable for the launcher")?;
        let data_dir = std::path::absolute(&cli.data)?;
        wisp_server::run(wisp_server::Configuration {
            listen,
            data_dir,
            storage: wisp_server::StorageKind::Embedded,
            dev,
            region: cli.region,
            account_concurrency,
            idle_timeout: Duration::from_secs(idle_timeout),
            shutdown_grace: Duration::from_secs(shutdown_grace),
            pids_max,
            function_network: match function_network {
                FunctionNetwork::Isolated => wisp_sandbox::NetworkMode::Isolated,
                FunctionNetwork::Egress => wisp_sandbox::NetworkMode::Egress,
            },
            launcher: wisp_sandbox::LauncherCommand {
                program,
                args: vec!["launch".into()],
            },
            record_retention,
            event_retry_delay,
            store_max_batch,
        })
        .await?;
        return Ok(0);
    }
    if let Command::Doctor { local: true } = cli.command {
        println!("{}", wisp_sandbox::doctor::probe());
        return Ok(0);
    }
    if let Command::Verify { arguments } = cli.command {
        return receipts::run_verify(arguments);
    }
    let credentials = client::load_credentials(&cli.data)?;
    let client = Client::new(cli.endpoint.clone(), cli.region.clone(), credentials)?;
    let json_output = cli.output == Output::Json;
    let print = |value: &Value| {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )
    };
    match cli.command {
        Command::Serve { .. } | Command::Launch => unreachable!("handled above"),
        Command::Deploy(args) => {
            let config = deploy::deploy(&client, args).await?;
            if json_output {
                print(&config);
            } else {
                println!(
                    "deployed {} ({}, {} MB, {} s) version {} sha256 {}",
                    config["FunctionName"].as_str().unwrap_or("?"),
                    config["Runtime"].as_str().unwrap_or("?"),
                    config["MemorySize"],
                    config["Timeout"],
                    config["Version"].as_str().unwrap_or("?"),
                    config["CodeSha256"].as_str().unwrap_or("?"),
                );
            }
        }
        Command::Layer { command } => layers::run(&client, command, json_output).await?,
        Command::Invoke {
            function,
            payload,
            payload_file,
            qualifier,
            log,
            event,
            stream,
            response_file,
        } => {
            let payload = match (payload, payload_file) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(path)) => std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => b"{}".to_vec(),
            };
            if stream {
                return stream::invoke(&client, &function, qualifier.as_deref(), payload, log)
                    .await;
            }
            let mut path = format!("/2015-03-31/functions/{}/invocations", segment(&function));
            if let Some(qualifier) = qualifier {
                path.push_str(&format!("?Qualifier={}", segment(&qualifier)));
            }
            let mut headers = vec![("content-type", "application/json".to_string())];
            if log {
                headers.push(("x-amz-log-type", "Tail".to_string()));
            }
            if event {
                headers.push(("x-amz-invocation-type", "Event".to_string()));
            }
            let reply = client.send(Method::POST, &path, &headers, payload).await?;
            if !(200..300).contains(&reply.status) {
                bail!("{}", reply.error_line());
            }
            if event {
                let request_id = reply.header("x-amzn-requestid").unwrap_or("?");
                if json_output {
                    print(&json!({ "StatusCode": reply.status, "RequestId": request_id }));
                } else {
                    println!("{request_id}");
                }
                return Ok(0);
            }
            if let Some(tail) = reply.header("x-amz-log-result") {
                let text = base64::engine::general_purpose::STANDARD
                    .decode(tail)
                    .unwrap_or_default();
                eprint!("{}", String::from_utf8_lossy(&text));
            }
            let function_error = reply.header("x-amz-function-error").map(str::to_string);
            if json_output {
                let payload: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&reply.body).into_owned())
                });
                print(&json!({
                    "StatusCode": reply.status,
                    "ExecutedVersion": reply.header("x-amz-executed-version"),
                    "FunctionError": function_error,
                    "RequestId": reply.header("x-amzn-requestid"),
                    "Payload": payload,
                }));
            } else if let Some(path) = &response_file {
                std::fs::write(path, &reply.body)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", reply.header("x-amzn-requestid").unwrap_or("?"));
            } else {
                println!("{}", String::from_utf8_lossy(&reply.body));
            }
            if function_error.is_some() {
                return Ok(2);
            }
        }
        Command::Ls => {
            let mut marker: Option<String> = None;
            let mut functions = Vec::new();
            loop {
                let mut path = "/2015-03-31/functions/?MaxItems=50".to_string();
                if let Some(marker) = &marker {
                    path.push_str(&format!("&Marker={}", segment(marker)));
                }
                let page = client.call(Method::GET, &path, None).await?.json()?;
                functions.extend(page["Functions"].as_array().cloned().unwrap_or_default());
                match page["NextMarker"].as_str() {
                    Some(next) => marker = Some(next.to_string()),
                    None => break,
                }
            }
            if json_output {
                print(&Value::Array(functions));
            } else {
                println!(
                    "{:<32} {:<16} {:>7} {:>8}  LAST MODIFIED",
                    "NAME", "RUNTIME", "MEMORY", "TIMEOUT"
                );
                for function in functions {
                    println!(
                        "{:<32} {:<16} {:>7} {:>8}  {}",
                        function["FunctionName"].as_str().unwrap_or("?"),
                        function["Runtime"].as_str().unwrap_or("?"),
                        function["MemorySize"].as_u64().unwrap_or(0),
                        function["Timeout"].as_u64().unwrap_or(0),
                        function["LastModified"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        Command::Get {
            function,
            qualifier,
        } => {
            let query = qualifier
                .map(|qualifier| format!("?Qualifier={}", segment(&qualifier)))
                .unwrap_or_default();
            let name = segment(&function);
            let path = format!("/2015-03-31/functions/{name}{query}");
            let mut shown = client.call(Method::GET, &path, None).await?.json()?;
            // What Wisp adds to Lambda's description: the types, the entry points and the hooks
            // (hooks belong to the function, not to a version).
            let signature_path = format!("/wisp/v1/functions/{name}/signature{query}");
            let signature = client
                .call(Method::GET, &signature_path, None)
                .await?
                .json()?;
            if signature != json!({}) {
                shown["Signature"] = signature;
            }
            let routes_path = format!("/wisp/v1/functions/{name}/routes{query}");
            let routes: Value = client.call(Method::GET, &routes_path, None).await?.json()?;
            if routes["Routes"]
                .as_array()
                .is_some_and(|routes| !routes.is_empty())
            {
                shown["Routes"] = routes["Routes"].clone();
            }
            // A function without hooks answers 404.
            let hooks_path = format!("/wisp/v1/functions/{name}/hooks");
            let hooks = client
                .send(Method::GET, &hooks_path, &[], Vec::new())
                .await?;
            if hooks.status == 200 {
                shown["Hooks"] = hooks.json()?;
            }
            print(&shown);
        }
        Command::Publish {
            function,
            description,
        } => {
            let body = json!({ "Description": description });
            let config = client
                .call(
                    Method::POST,
                    &format!("/2015-03-31/functions/{}/versions", segment(&function)),
                    Some(&body),
                )
                .await?
                .json()?;
            if json_output {
                print(&config);
            } else {
                println!(
                    "published {} version {}",
                    function,
                    config["Version"].as_str().unwrap_or("?")
                );
            }
        }
        Command::Alias { command } => alias(&client, command, json_output).await?,
        Command::Provisioned {
            function,
            qualifier,
            count,
            delete,
        } => provisioned(&client, &function, qualifier, count, delete, json_output).await?,
        Command::Topic { command } => bus::topic(&client, command, json_output).await?,
        Command::Rule { command } => bus::rule(&client, command, json_output).await?,
        Command::Admission { command } => bus::admission(&client, command, json_output).await?,
        Command::Events {
            command:
                EventsCommand::Tail {
                    follow,
                    types,
                    limit,
                },
        } => events::tail(&client, follow, &types, limit, json_output).await?,
        Command::Logs {
            function,
            follow,
            limit,
        } => {
            let base = format!("/wisp/v1/functions/{}/logs", segment(&function));
            let mut next: Option<u64> = None;
            loop {
                let path = match next {
                    None => format!("{base}?limit={limit}"),
                    Some(from) => format!("{base}?from={from}&limit=1000&wait=20"),
                };
                let page = client.call(Method::GET, &path, None).await?.json()?;
                for record in page["Records"].as_array().cloned().unwrap_or_default() {
                    if json_output {
                        println!("{record}");
                    } else {
                        print!("{}", record["Text"].as_str().unwrap_or(""));
                    }
                }
                if !follow {
                    break;
                }
                next = page["NextOffset"].as_u64();
            }
        }
        Command::Invocations {
            command: Some(InvocationsCommand::Get { request_id, wait }),
            ..
        } => {
            let path = format!("/wisp/v1/invocations/{}", segment(&request_id));
            let started = std::time::Instant::now();
            let record = loop {
                let reply = client.send(Method::GET, &path, &[], Vec::new()).await?;
                // Just after a crash the newest records may not be stored yet; an event's record
                // reappears when it runs.
                if wait && reply.status == 404 && started.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                if !(200..300).contains(&reply.status) {
                    bail!("{}", reply.error_line());
                }
                let record = reply.json()?;
                let finished = !matches!(record["status"].as_str(), Some("queued" | "running"));
                if !wait || finished {
                    break record;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            if json_output {
                print(&record);
            } else {
                for (label, field) in [
                    ("request id", "request_id"),
                    ("function", "function_name"),
                    ("version", "version"),
                    ("type", "invocation_type"),
                    ("phase", "phase"),
                    ("reason", "shutdown_reason"),
                    ("status", "status"),
                    ("attempts", "attempts"),
                    ("error", "error_type"),
                    ("duration µs", "duration_us"),
                    ("billed ms", "billed_duration_ms"),
                ] {
                    let value = &record[field];
                    if !value.is_null() {
                        println!(
                            "{label:<12} {}",
                            value
                                .as_str()
                                .map_or_else(|| value.to_string(), str::to_string)
                        );
                    }
                }
                if !record["result"].is_null() {
                    println!("{:<12} {}", "result", record["result"]);
                }
            }
            if matches!(
                record["status"].as_str(),
                Some("failed" | "timed_out" | "expired")
            ) {
                return Ok(2);
            }
        }
        Command::Idempotency {
            function,
            key_path,
            key_header,
            window,
            remember_failures,
            allow_payload_mismatch,
            off,
            key,
        } => {
            let base = format!("/wisp/v1/functions/{}/idempotency", segment(&function));
            let shown = if let Some(key) = key {
                client
                    .call(Method::GET, &format!("{base}/{}", segment(&key)), None)
                    .await?
                    .json()?
            } else if off {
                let cleared = json!({ "FunctionName": function, "Idempotent": false });
                setting(&client, &base, Change::Clear(cleared)).await?
            } else if key_path.is_some() || key_header {
                let mut body = json!({
                    "KeyHeader": key_header,
                    "RememberFailures": remember_failures,
                    "AllowPayloadMismatch": allow_payload_mismatch,
                });
                if let Some(path) = key_path {
                    body["KeyJsonPath"] = path.into();
                }
                if let Some(window) = window {
                    body["WindowSeconds"] = window.into();
                }
                setting(&client, &base, Change::Set(body)).await?
            } else {
                setting(&client, &base, Change::Show(None)).await?
            };
            print(&shown);
        }
        Command::Pure { function, ttl, off } => {
            let base = format!("/wisp/v1/functions/{}/memoization", segment(&function));
            let change = if off {
                Change::Clear(json!({ "FunctionName": function, "Pure": false }))
            } else if let Some(ttl) = ttl {
                Change::Set(json!({ "TtlSeconds": ttl }))
            } else {
                Change::Show(None)
            };
            let shown = setting(&client, &base, change).await?;
            print(&shown);
        }
        Command::Signature {
            function,
            qualifier,
            mut set,
            clear,
        } => {
            let protos: Vec<_> = std::mem::take(&mut set.protos)
                .into_iter()
                .map(|file| (file.clone(), file))
                .collect();
            let base = format!("/wisp/v1/functions/{}/signature", segment(&function));
            let change = if clear {
                Change::Clear(json!({}))
            } else if let Some(signature) = deploy::read_signature(set, &protos)? {
                Change::Set(signature)
            } else {
                Change::Show(qualifier)
            };
            let shown = setting(&client, &base, change).await?;
            print(&shown);
        }
        Command::Routes {
            function,
            qualifier,
            file,
            clear,
        } => {
            let base = format!("/wisp/v1/functions/{}/routes", segment(&function));
            let change = if clear {
                Change::Clear(json!({ "Routes": [] }))
            } else if let Some(file) = file {
                Change::Set(deploy::read_json(&file)?)
            } else {
                Change::Show(qualifier)
            };
            let shown = setting(&client, &base, change).await?;
            print(&shown);
        }
        Command::Hooks {
            function,
            pre,
            post,
            off,
        } => {
            let base = format!("/wisp/v1/functions/{}/hooks", segment(&function));
            let change = if off {
                Change::Clear(json!({}))
            } else if pre.is_some() || post.is_some() {
                let mut body = json!({});
                if let Some(pre) = pre {
                    body["Pre"] = pre.into();
                }
                if let Some(post) = post {
                    body["Post"] = post.into();
                }
                Change::Set(body)
            } else {
                Change::Show(None)
            };
            let shown = setting(&client, &base, change).await?;
            print(&shown);
        }
        Command::Check => {
            let report = client
                .call(Method::GET, "/wisp/v1/check", None)
                .await?
                .json()?;
            if json_output {
                print(&report);
            } else {
                let wirings = report["Wirings"].as_array().cloned().unwrap_or_default();
                for wiring in &wirings {
                    let verdict = match wiring["Problem"].as_str() {
                        Some(problem) => format!("BROKEN: {problem}"),
                        None => "ok".to_string(),
                    };
                    println!(
                        "{} -> {} ({}): {verdict}",
                        wiring["Source"].as_str().unwrap_or("?"),
                        wiring["Target"].as_str().unwrap_or("?"),
                        wiring["Kind"].as_str().unwrap_or("?"),
                    );
                }
                println!(
                    "{} wiring(s) checked, {} broken",
                    wirings.len(),
                    report["Problems"]
                );
            }
            if report["Problems"].as_u64().unwrap_or(0) > 0 {
                std::process::exit(1);
            }
        }
        Command::Dlq {
            function,
            redrive,
            limit,
        } => {
            let base = format!("/wisp/v1/functions/{}/dlq", segment(&function));
            if redrive {
                let reply = client
                    .call(Method::POST, &format!("{base}/redrive"), None)
                    .await?
                    .json()?;
                if json_output {
                    print(&reply);
                } else {
                    println!(
                        "sent {} event(s) of {function} back to its queue",
                        reply["Redriven"].as_u64().unwrap_or(0)
                    );
                }
                return Ok(0);
            }
            let page = client
                .call(Method::GET, &format!("{base}?limit={limit}"), None)
                .await?
                .json()?;
            let letters = page["DeadLetters"].as_array().cloned().unwrap_or_default();
            if json_output {
                print(&Value::Array(letters));
            } else {
                println!(
                    "{:<36} {:<22} {:>8}  {:<24} PAYLOAD",
                    "REQUEST ID", "CONDITION", "ATTEMPTS", "ERROR"
                );
                for letter in letters {
                    let mut payload = letter["Payload"].as_str().unwrap_or("").to_string();
                    if payload.len() > 60 {
                        let cut = (0..=60)
                            .rev()
                            .find(|index| payload.is_char_boundary(*index))
                            .unwrap_or(0);
                        payload.truncate(cut);
                        payload.push('…');
                    }
                    println!(
                        "{:<36} {:<22} {:>8}  {:<24} {payload}",
                        letter["RequestId"].as_str().unwrap_or("?"),
                        letter["Condition"].as_str().unwrap_or("?"),
                        letter["Attempts"].as_u64().unwrap_or(0),
                        letter["ErrorType"].as_str().unwrap_or(""),
                    );
                }
            }
        }
        Command::Invocations {
            function, limit, ..
        } => {
            let Some(function) = function else {
                bail!(
                    "name a function (wisp invocations FN) or a request id (wisp invocations get ID)"
                );
            };
            let page = client
                .call(
                    Method::GET,
                    &format!(
                        "/wisp/v1/functions/{}/invocations?limit={limit}",
                        segment(&function)
                    ),
                    None,
                )
                .await?
                .json()?;
            let records = page["Invocations"].as_array().cloned().unwrap_or_default();
            if json_output {
                print(&Value::Array(records));
            } else {
                println!(
                    "{:<36} {:<8} {:<10} {:>12} {:>8} {:>6} {:>5}  ERROR",
                    "REQUEST ID", "VERSION", "STATUS", "DURATION ms", "BILLED", "MEM MB", "COLD"
                );
                for record in records {
                    println!(
                        "{:<36} {:<8} {:<10} {:>12.3} {:>8} {:>6} {:>5}  {}",
                        record["request_id"].as_str().unwrap_or("?"),
                        record["version"].as_str().unwrap_or("?"),
                        record["status"].as_str().unwrap_or("?"),
                        record["duration_us"].as_f64().unwrap_or(0.0) / 1000.0,
                        record["billed_duration_ms"].as_u64().unwrap_or(0),
                        record["max_memory_used_mb"].as_u64().unwrap_or(0),
                        if record["cold_start"].as_bool().unwrap_or(false) {
                            "yes"
                        } else {
                            "no"
                        },
                        record["error_type"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Rm {
            function,
            qualifier,
        } => {
            let mut path = format!("/2015-03-31/functions/{}", segment(&function));
            if let Some(qualifier) = &qualifier {
                path.push_str(&format!("?Qualifier={}", segment(qualifier)));
            }
            client.call(Method::DELETE, &path, None).await?;
            if !json_output {
                println!(
                    "deleted {function}{}",
                    qualifier.map(|q| format!(":{q}")).unwrap_or_default()
                );
            }
        }
        Command::Verify { .. } => unreachable!("handled above"),
        Command::Receipts { function, on, off } => {
            let path = match &function {
                Some(function) => format!("/wisp/v1/functions/{}/receipts", segment(function)),
                None => "/wisp/v1/receipts-config".to_string(),
            };
            let reply = if on || off {
                let body = json!({ "Enabled": on });
                client.call(Method::PUT, &path, Some(&body)).await?
            } else {
                client.call(Method::GET, &path, None).await?
            }
            .json()?;
            if json_output {
                print(&reply);
            } else {
                let state = if reply["Enabled"].as_bool() == Some(true) {
                    "on"
                } else {
                    "off"
                };
                match function {
                    Some(function) => println!("receipts for {function}: {state}"),
                    None => println!("receipts for every function of the account: {state}"),
                }
            }
        }
        Command::Receipt { request_id } => {
            let receipt = client
                .call(
                    Method::GET,
                    &format!("/wisp/v1/receipts/{}", segment(&request_id)),
                    None,
                )
                .await?
                .json()?;
            receipts::check_receipt_json(&receipt)?;
            print(&receipt);
        }
        Command::Keys { command, save } => {
            let reply = match command {
                Some(KeysCommand::Rotate) => client
                    .call(Method::POST, "/wisp/v1/keys/rotate", None)
                    .await?
                    .json()?,
                None => client
                    .call(Method::GET, "/wisp/v1/keys", None)
                    .await?
                    .json()?,
            };
            if let Some(path) = save {
                std::fs::write(&path, serde_json::to_vec_pretty(&reply)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if json_output {
                print(&reply);
            } else if let Some(keys) = reply["Keys"].as_array() {
                for key in keys {
                    println!(
                        "{}  {}  created {}  {}",
                        key["key_id"].as_str().unwrap_or("?"),
                        key["public_key"].as_str().unwrap_or("?"),
                        key["created"].as_str().unwrap_or("?"),
                        match key["retired"].as_str() {
                            Some(retired) => format!("retired {retired}"),
                            None => "current".to_string(),
                        }
                    );
                }
            } else {
                println!(
                    "new current key {}; the old one stays published as retired",
                    reply["key_id"].as_str().unwrap_or("?")
                );
            }
        }
        Command::Doctor { .. } => {
            let report = client
                .call(Method::GET, "/wisp/v1/doctor", None)
                .await?
                .json()?;
            if json_output {
                print(&report);
            } else {
                println!("{}", report["Report"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(0)
}

async fn provisioned(
    client: &Client,
    function: &str,
    qualifier: Option<String>,
    count: Option<u32>,
    delete: bool,
    json_output: bool,
) -> anyhow::Result<()> {
    let base = format!(
        "/2019-09-30/functions/{}/provisioned-concurrency",
        segment(function)
    );
    let line = |config: &Value, qualifier: &str| {
        let mut text = format!(
            "{:<24} {:>9} {:>9} {:>9}  {}",
            qualifier,
            config["RequestedProvisionedConcurrentExecutions"],
            config["AllocatedProvisionedConcurrentExecutions"],
            config["AvailableProvisionedConcurrentExecutions"],
            config["Status"].as_str().unwrap_or("?"),
        );
        if let Some(reason) = config["StatusReason"].as_str() {
            text.push_str(&format!("  {reason}"));
        }
        text
    };
    let header = format!(
        "{:<24} {:>9} {:>9} {:>9}  STATUS",
        "QUALIFIER", "REQUESTED", "ALLOCATED", "AVAILABLE"
    );
    let Some(qualifier) = qualifier else {
        let mut configs = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut path = format!("{base}?List=ALL&MaxItems=50");
            if let Some(marker) = &marker {
                path.push_str(&format!("&Marker={}", segment(marker)));
            }
            let page = client.call(Method::GET, &path, None).await?.json()?;
            configs.extend(
                page["ProvisionedConcurrencyConfigs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            match page["NextMarker"].as_str() {
                Some(next) => marker = Some(next.to_string()),
                None => break,
            }
        }
        if json_output {
            println!("{}", serde_json::to_string_pretty(&configs)?);
        } else {
            println!("{header}");
            for config in &configs {
                let arn = config["FunctionArn"].as_str().unwrap_or("?");
                println!("{}", line(config, arn.rsplit(':').next().unwrap_or(arn)));
            }
        }
        return Ok(());
    };
    let path = format!("{base}?Qualifier={}", segment(&qualifier));
    if delete {
        client.call(Method::DELETE, &path, None).await?;
        if !json_output {
            println!("removed provisioned concurrency of {function}:{qualifier}");
        }
        return Ok(());
    }
    let config = match count {
        Some(count) => {
            let body = json!({ "ProvisionedConcurrentExecutions": count });
            client.call(Method::PUT, &path, Some(&body)).await?.json()?
        }
        None => client.call(Method::GET, &path, None).await?.json()?,
    };
    if json_output {
        println!("{}", serde_json::to_string_pretty(&config)?);
    } else {
        println!("{header}\n{}", line(&config, &qualifier));
    }
    Ok(())
}

async fn alias(client: &Client, command: AliasCommand, json_output: bool) -> anyhow::Result<()> {
    match command {
        AliasCommand::Set {
            function,
            alias,
            version,
            weight,
            description,
        } => {
            let mut body = json!({ "FunctionVersion": version });
            if let Some(description) = description {
                body["Description"] = description.into();
            }
            let weights = match weight {
                Some(text) => {
                    let (other, share) = text
                        .split_once('=')
                        .context("--weight must be VERSION=SHARE, e.g. 3=0.1")?;
                    let share: f64 = share
                        .parse()
                        .context("--weight share must be a number between 0 and 1")?;
                    json!({ other: share })
                }
                None => json!({}),
            };
            body["RoutingConfig"] = json!({ "AdditionalVersionWeights": weights });
            let path = format!(
                "/2015-03-31/functions/{}/aliases/{}",
                segment(&function),
                segment(&alias)
            );
            let reply = client.send(Method::GET, &path, &[], Vec::new()).await?;
            let config = if reply.status == 404 {
                body["Name"] = alias.clone().into();
                client
                    .call(
                        Method::POST,
                        &format!("/2015-03-31/functions/{}/aliases", segment(&function)),
                        Some(&body),
                    )
                    .await?
                    .json()?
            } else {
                client.call(Method::PUT, &path, Some(&body)).await?.json()?
            };
            if json_output {
                println!("{}", serde_json::to_string_pretty(&config)?);
            } else {
                println!(
                    "alias {function}:{alias} → version {}",
                    config["FunctionVersion"].as_str().unwrap_or("?")
                );
            }
        }
        AliasCommand::Ls { function } => {
            let page = client
                .call(
                    Method::GET,
                    &format!("/2015-03-31/functions/{}/aliases", segment(&function)),
                    None,
                )
                .await?
                .json()?;
            let aliases = page["Aliases"].as_array().cloned().unwrap_or_default();
            if json_output {
                println!("{}", serde_json::to_string_pretty(&aliases)?);
            } else {
                for alias in aliases {
                    println!(
                        "{:<24} {:<8} {}",
                        alias["Name"].as_str().unwrap_or("?"),
                        alias["FunctionVersion"].as_str().unwrap_or("?"),
                        alias["RoutingConfig"]
                    );
                }
            }
        }
        AliasCommand::Rm { function, alias } => {
            client
                .call(
                    Method::DELETE,
                    &format!(
                        "/2015-03-31/functions/{}/aliases/{}",
                        segment(&function),
                        segment(&alias)
                    ),
                    None,
                )
                .await?;
        }
    }
    Ok(())
}

fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WISP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// What a command does to one of a function's Wisp settings.
enum Change {
    /// Show it, of `$LATEST` or of the version or alias named.
    Show(Option<String>),
    /// Replace it with this document.
    Set(Value),
    /// Remove it, then show this.
    Clear(Value),
}

/// Applies a [`Change`] to the setting at `base` (`/wisp/v1/functions/{name}/…`); returns what to show.
async fn setting(client: &Client, base: &str, change: Change) -> anyhow::Result<Value> {
    match change {
        Change::Show(qualifier) => {
            let path = match qualifier {
                Some(qualifier) => format!("{base}?Qualifier={}", segment(&qualifier)),
                None => base.to_string(),
            };
            client.call(Method::GET, &path, None).await?.json()
        }
        Change::Set(body) => client.call(Method::PUT, base, Some(&body)).await?.json(),
        Change::Clear(shown) => {
            client.call(Method::DELETE, base, None).await?;
            Ok(shown)
        }
    }
}
