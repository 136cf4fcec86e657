//! Durable appends per second on the embedded store: 64 concurrent appenders (group commit shares one
//! fsync among many appends) against one appender at a time (about one fsync per append), measured in
//! the same run on the same disk, printed with their ratio.
//!
//! Run: `cargo bench -p wisp-store --bench append` (set `WISP_BENCH_DIR` to measure another disk than
//! the temporary directory's). This benchmark must never be turned into a timed test: the numbers depend on
//! the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_store::{EmbeddedOptions, EmbeddedStore, Log};

const PAYLOAD_BYTES: usize = 256;
const CONCURRENT_APPENDERS: usize = 64;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a tokio runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("benchmark failed: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("WISP_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base)?;
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path())).await?;
    let payload = vec![0x5a; PAYLOAD_BYTES];

    // Warm up: file growth and page cache, so neither run pays for them alone.
    for _ in 0..200 {
        store.append("warmup", payload.clone()).await?;
    }

    let budget = Duration::from_secs(3);

    // Baseline: one append at a time, each waiting for its own commit.
    let started = Instant::now();
    let mut sequential = 0u64;
    while started.elapsed() < budget {
        store.append("sequential", payload.clone()).await?;
        sequential += 1;
    }
    let sequential_rate = sequential as f64 / started.elapsed().as_secs_f64();

    // Group commit: 64 tasks appending as fast as their own appends return.
    let stats_before = store.stats();
    let started = Instant::now();
    let mut appenders = Vec::new();
    for _ in 0..CONCURRENT_APPENDERS {
        let store: Arc<EmbeddedStore> = store.clone();
        let payload = payload.clone();
        appenders.push(tokio::spawn(async move {
            let mut appended = 0u64;
            while started.elapsed() < budget {
                store.append("concurrent", payload.clone()).await?;
                appended += 1;
            }
            Ok::<u64, wisp_store::StoreError>(appended)
        }));
    }
    let mut concurrent = 0u64;
    for appender in appenders {
        concurrent += appender.await??;
    }
    let concurrent_rate = concurrent as f64 / started.elapsed().as_secs_f64();
    let stats_after = store.stats();
    let commits = stats_after.commits - stats_before.commits;
    let jobs = stats_after.jobs - stats_before.jobs;

    println!(
        "durable appends, {PAYLOAD_BYTES}-byte payloads, {} s each, dir {}",
        budget.as_secs(),
        dir.path().display()
    );
    println!(
        "  sequential (1 appender, ~1 fsync per append): {sequential_rate:>10.0} appends/s  ({sequential} appends)"
    );
    println!(
        "  group commit ({CONCURRENT_APPENDERS} appenders):              {concurrent_rate:>10.0} appends/s  ({concurrent} appends, {commits} commits, {:.1} appends per commit)",
        jobs as f64 / commits.max(1) as f64
    );
    println!(
        "  ratio group commit / sequential: {:.1}x",
        concurrent_rate / sequential_rate
    );
    Ok(())
}
