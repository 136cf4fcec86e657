//! Section 4: async invocations.
//!
//! - durable enqueue rate: `concurrency` workers send `Event` invokes for a fixed time to a function whose
//!   reserved concurrency is 0 (so nothing runs and only acceptance is measured), once against the normal
//!   server (group commit) and once against a second server started with `--store-max-batch 1`
//!   (one fsync per write), the baseline;
//! - end-to-end async throughput: `events` events of the no-op function sent as fast as the workers can,
//!   timed until the server has recorded every one of them as finished;
//! - enqueue-to-start latency at low load: one event at a time, each waited for, its `queue_delay_us`
//!   taken from its record; beside it the sync warm invoke's round trip from the same run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{api, connect, invoke_path, ms, percentile, send, sequential, us};

const QUEUE_ONLY: &str = "bench-queue-only";

/// Sends one event; its request id.
async fn send_event(
    sender: &mut crate::Sender,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<String> {
    let reply = send(
        sender,
        addr,
        Method::POST,
        path,
        &[("x-amz-invocation-type", "Event")],
        Bytes::from_static(crate::PAYLOAD),
    )
    .await?;
    if reply.status != StatusCode::ACCEPTED {
        anyhow::bail!(
            "event {path}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(reply
        .headers
        .get("x-amzn-requestid")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string())
}

/// Events accepted per second by `concurrency` workers in `seconds`.
async fn enqueue_rate(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    let path: Arc<str> = Arc::from(path);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let path = path.clone();
        workers.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let mut count = 0u64;
            while Instant::now() < until {
                send_event(&mut sender, addr, &path).await?;
                count += 1;
            }
            Ok::<_, anyhow::Error>(count)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// How many invocation records the server holds for a function.
async fn recorded(addr: SocketAddr, function: &str) -> anyhow::Result<u64> {
    let page = api(
        addr,
        Method::GET,
        &format!("/wisp/v1/functions/{function}/invocations?limit=1"),
        Value::Null,
    )
    .await?;
    Ok(page["Recorded"].as_u64().unwrap_or(0))
}

async fn record(sender: &mut crate::Sender, addr: SocketAddr, id: &str) -> anyhow::Result<Value> {
    let reply = send(
        sender,
        addr,
        Method::GET,
        &format!("/wisp/v1/invocations/{id}"),
        &[],
        Bytes::new(),
    )
    .await?;
    Ok(serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
}

pub(crate) async fn section(
    cli: &crate::Cli,
    wisp_addr: SocketAddr,
    baseline_addr: SocketAddr,
    noop_zip: &[u8],
) -> anyhow::Result<()> {
    let concurrency = 64;
    println!();
    println!(
        "== 4. Async invocations: durable enqueue at concurrency {concurrency} for {:.1} s; {} events end to end; {} events one at a time ==",
        cli.seconds, cli.events, cli.latency_events
    );
    for addr in [wisp_addr, baseline_addr] {
        crate::create_function(addr, QUEUE_ONLY, "provided.al2023", noop_zip).await?;
        api(
            addr,
            Method::PUT,
            &format!("/2017-10-31/functions/{QUEUE_ONLY}/concurrency"),
            json!({ "ReservedConcurrentExecutions": 0 }),
        )
        .await?;
    }
    let queue_path = invoke_path(QUEUE_ONLY);
    let grouped = enqueue_rate(wisp_addr, &queue_path, concurrency, cli.seconds).await?;
    let one_by_one = enqueue_rate(baseline_addr, &queue_path, concurrency, cli.seconds).await?;
    println!("{:<58} {:>12}", "", "events/s");
    println!(
        "{:<58} {:>12.0}",
        "accepted, one fsync per write (--store-max-batch 1)", one_by_one
    );
    println!(
        "{:<58} {:>12.0}",
        "accepted, group commit (default)", grouped
    );
    println!(
        "group commit / one fsync per write: {:.1}x; target ≥ 10,000 events/s accepted ({})",
        grouped / one_by_one,
        crate::verdict(grouped >= 10_000.0)
    );

    // End to end: every event sent, then wait until every one has a finished record.
    let path = invoke_path(crate::NOOP);
    let before = recorded(wisp_addr, crate::NOOP).await?;
    let started = Instant::now();
    let per_worker = cli.events.div_ceil(concurrency);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let path = path.clone();
        workers.push(tokio::spawn(async move {
            let mut sender = connect(wisp_addr).await?;
            for _ in 0..per_worker {
                send_event(&mut sender, wisp_addr, &path).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let sent = (per_worker * concurrency) as u64;
    let accepted_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while recorded(wisp_addr, crate::NOOP).await? < before + sent {
        if Instant::now() > deadline {
            anyhow::bail!("not every event finished within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finished_in = started.elapsed();
    let sync = crate::throughput(wisp_addr, &path, concurrency, cli.seconds / 2.0).await?;
    println!(
        "{sent} events: all accepted in {:.2} s, all run and recorded in {:.2} s: {:.0} events/s end to end; sync invokes at concurrency {concurrency} in the same run: {:.0}/s ({:.2}x)",
        accepted_in.as_secs_f64(),
        finished_in.as_secs_f64(),
        sent as f64 / finished_in.as_secs_f64(),
        sync.per_second,
        (sent as f64 / finished_in.as_secs_f64()) / sync.per_second
    );

    // Low load: one event at a time.
    let mut sender = connect(wisp_addr).await?;
    let mut reader = connect(wisp_addr).await?;
    let mut delays = Vec::new();
    for _ in 0..cli.latency_events {
        let id = send_event(&mut sender, wisp_addr, &path).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = record(&mut reader, wisp_addr, &id).await?;
            if body["status"] == "succeeded" {
                let delay = body["queue_delay_us"].as_u64().unwrap_or(0);
                delays.push(Duration::from_micros(delay));
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("event {id} did not finish: {body}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    delays.sort_unstable();
    let warm = sequential(wisp_addr, &path, 200, cli.latency_events).await?;
    println!("{:<58} {:>8} {:>8}", "", "p50 ms", "p99 ms");
    println!(
        "{:<58} {:>8.3} {:>8.3}",
        "sync warm invoke round trip (same function, same run)",
        ms(percentile(&warm, 50.0)),
        ms(percentile(&warm, 99.0))
    );
    println!(
        "{:<58} {:>8.3} {:>8.3}",
        "event: accepted → run starts (server-measured)",
        ms(percentile(&delays, 50.0)),
        ms(percentile(&delays, 99.0))
    );
    println!(
        "enqueue → start p50 {:.0} µs = {:.2}x a sync warm round trip; target p50 < 1 ms ({})",
        us(percentile(&delays, 50.0)),
        us(percentile(&delays, 50.0)) / us(percentile(&warm, 50.0)),
        crate::verdict(percentile(&delays, 50.0) < Duration::from_millis(1))
    );
    Ok(())
}
