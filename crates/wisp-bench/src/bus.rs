//! Section 7: the event bus, beside async invokes (`Event`) of the same function in the same run.
//!
//! - latency at low load: one event at a time, published to a topic whose one rule (`{}`) targets the
//!   no-op function, timed by the client from sending the publish until the function's invocation
//!   record appears (polled on a keep-alive connection); the baseline is the same measurement with an
//!   `Event` invoke sent straight to the function. Both include the run and the background record
//!   write, so their difference is what the bus hop (durable publish, dispatcher, enqueue) adds;
//! - throughput: `events` events by 64 workers, one event per request, timed until every one has been
//!   run and recorded; beside it the same with `Event` invokes (measured before and after, after an
//!   unmeasured warm-up; the better is the baseline), and with publishes of 100 events per request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{api, connect, invoke_path, ms, percentile, send};

const TARGET: &str = "bench-bus-target";
const TOPIC: &str = "bench";
const CONCURRENCY: usize = 64;

fn publish_path() -> String {
    format!("/wisp/v1/topics/{TOPIC}/events")
}

/// Sends one request of the kind measured: a publish (`batch` events) or an `Event` invoke.
async fn send_one(
    sender: &mut crate::Sender,
    addr: SocketAddr,
    bus: bool,
    batch: usize,
) -> anyhow::Result<()> {
    let reply = if bus {
        let body = if batch == 1 {
            json!({ "n": 1 })
        } else {
            Value::Array(vec![json!({ "n": 1 }); batch])
        };
        send(
            sender,
            addr,
            Method::POST,
            &publish_path(),
            &[],
            Bytes::from(serde_json::to_vec(&body)?),
        )
        .await?
    } else {
        send(
            sender,
            addr,
            Method::POST,
            &invoke_path(TARGET),
            &[("x-amz-invocation-type", "Event")],
            Bytes::from_static(crate::PAYLOAD),
        )
        .await?
    };
    if reply.status != StatusCode::OK && reply.status != StatusCode::ACCEPTED {
        anyhow::bail!(
            "{}: {} {}",
            if bus { "publish" } else { "event" },
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(())
}

/// How many runs of the target the server has recorded.
async fn recorded(sender: &mut crate::Sender, addr: SocketAddr) -> anyhow::Result<u64> {
    let reply = send(
        sender,
        addr,
        Method::GET,
        &format!("/wisp/v1/functions/{TARGET}/invocations?limit=1"),
        &[],
        Bytes::new(),
    )
    .await?;
    let page: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Ok(page["Recorded"].as_u64().unwrap_or(0))
}

async fn wait_recorded(
    sender: &mut crate::Sender,
    addr: SocketAddr,
    count: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while recorded(sender, addr).await? < count {
        if Instant::now() > deadline {
            anyhow::bail!("the target did not record {count} runs within {limit:?}");
        }
    }
    Ok(())
}

/// Client-measured send → recorded, one at a time.
async fn latencies(addr: SocketAddr, bus: bool, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut sender = connect(addr).await?;
    let mut reader = connect(addr).await?;
    let mut samples = Vec::with_capacity(count);
    let mut seen = recorded(&mut reader, addr).await?;
    for _ in 0..count {
        let started = Instant::now();
        send_one(&mut sender, addr, bus, 1).await?;
        wait_recorded(&mut reader, addr, seen + 1, Duration::from_secs(30)).await?;
        samples.push(started.elapsed());
        seen += 1;
    }
    samples.sort_unstable();
    Ok(samples)
}

/// Events per second end to end: `events` sent by [`CONCURRENCY`] workers, `batch` per request.
async fn throughput(
    addr: SocketAddr,
    bus: bool,
    events: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let mut reader = connect(addr).await?;
    let before = recorded(&mut reader, addr).await?;
    let requests = events.div_ceil(batch);
    let per_worker = requests.div_ceil(CONCURRENCY);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        workers.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            for _ in 0..per_worker {
                send_one(&mut sender, addr, bus, batch).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let sent = (per_worker * CONCURRENCY * batch) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while recorded(&mut reader, addr).await? < before + sent {
        if Instant::now() > deadline {
            anyhow::bail!("not every event finished within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn section(
    cli: &crate::Cli,
    wisp_addr: SocketAddr,
    noop_zip: &[u8],
) -> anyhow::Result<()> {
    println!();
    println!(
        "== 7. Event bus: {} events one at a time; {} events end to end at concurrency {CONCURRENCY}; beside Event invokes of the same function ==",
        cli.latency_events, cli.events
    );
    crate::create_function(wisp_addr, TARGET, "provided.al2023", noop_zip).await?;
    api(
        wisp_addr,
        Method::POST,
        "/wisp/v1/topics",
        json!({ "TopicName": TOPIC }),
    )
    .await?;
    api(
        wisp_addr,
        Method::PUT,
        &format!("/wisp/v1/topics/{TOPIC}/rules/all"),
        json!({ "EventPattern": {}, "Targets": [TARGET] }),
    )
    .await?;
    // Warm the target and the dispatcher before measuring.
    latencies(wisp_addr, true, 20).await?;
    latencies(wisp_addr, false, 20).await?;

    let direct = latencies(wisp_addr, false, cli.latency_events).await?;
    let bus = latencies(wisp_addr, true, cli.latency_events).await?;
    println!("{:<58} {:>8} {:>8}", "", "p50 ms", "p99 ms");
    for (label, samples) in [
        ("Event invoke → run recorded (baseline)", &direct),
        ("publish → rule → run recorded", &bus),
    ] {
        println!(
            "{label:<58} {:>8.3} {:>8.3}",
            ms(percentile(samples, 50.0)),
            ms(percentile(samples, 99.0))
        );
    }
    println!(
        "the bus adds {:.3} ms at p50 ({:.2}x the direct Event path), {:.3} ms at p99",
        ms(percentile(&bus, 50.0)) - ms(percentile(&direct, 50.0)),
        ms(percentile(&bus, 50.0)) / ms(percentile(&direct, 50.0)),
        ms(percentile(&bus, 99.0)) - ms(percentile(&direct, 99.0)),
    );

    let events = cli.events;
    // Not measured: grows the target's instances to what the load needs, so the first measured
    // phase does not pay for scaling up.
    throughput(wisp_addr, false, events / 4, 1).await?;
    let direct_before = throughput(wisp_addr, false, events, 1).await?;
    let bus_rate = throughput(wisp_addr, true, events, 1).await?;
    let batched_rate = throughput(wisp_addr, true, events, 100).await?;
    let direct_after = throughput(wisp_addr, false, events, 1).await?;
    let direct_rate = direct_before.max(direct_after);
    println!("{:<58} {:>12}", "", "events/s");
    println!(
        "{:<58} {:>12.0}",
        "Event invokes, run and recorded (before)", direct_before
    );
    println!(
        "{:<58} {:>12.0}",
        "Event invokes, run and recorded (after)", direct_after
    );
    println!(
        "{:<58} {:>12.0}",
        "published one per request, run and recorded", bus_rate
    );
    println!(
        "{:<58} {:>12.0}",
        "published 100 per request, run and recorded", batched_rate
    );
    println!(
        "bus / direct Event (the better of before and after): {:.2}x (one per request), {:.2}x (100 per request)",
        bus_rate / direct_rate,
        batched_rate / direct_rate
    );
    Ok(())
}
