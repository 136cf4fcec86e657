//! Section 5: idempotency and memoization, against plain warm invokes of the same no-op function in the
//! same run.
//!
//! - plain: sequential warm invokes of a function without idempotency;
//! - first execution: each invoke carries a new idempotency key (claim, run, store the outcome);
//! - replay: every invoke carries the same key (one store read, no instance);
//! - memoized: a function declared pure, invoked with the same input (one store read, no instance).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::{api, connect, invoke_path, percentile, print_ratios, send, us};

const IDEMPOTENT: &str = "bench-idempotent";
const PURE: &str = "bench-pure";

pub(crate) async fn timed(
    addr: SocketAddr,
    path: &str,
    requests: usize,
    payload: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Duration>> {
    let mut sender = connect(addr).await?;
    let mut samples = Vec::with_capacity(requests);
    for index in 0..requests + 200 {
        let body = Bytes::from(payload(index));
        let started = Instant::now();
        let reply = send(&mut sender, addr, Method::POST, path, &[], body).await?;
        if reply.status != StatusCode::OK {
            anyhow::bail!(
                "{path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        // The first 200 warm the instance and the connection.
        if index >= 200 {
            samples.push(started.elapsed());
        }
    }
    samples.sort_unstable();
    Ok(samples)
}

pub(crate) async fn section(
    cli: &crate::Cli,
    wisp_addr: SocketAddr,
    noop_zip: &[u8],
) -> anyhow::Result<()> {
    let requests = cli.requests.min(5000);
    println!();
    println!(
        "== 5. Idempotency and memoization, no-op function, concurrency 1: {requests} sequential requests each after 200 warm-up =="
    );
    for name in [IDEMPOTENT, PURE] {
        crate::create_function(wisp_addr, name, "provided.al2023", noop_zip).await?;
    }
    api(
        wisp_addr,
        Method::PUT,
        &format!("/wisp/v1/functions/{IDEMPOTENT}/idempotency"),
        json!({ "KeyJsonPath": "$.k", "WindowSeconds": 3600 }),
    )
    .await?;
    api(
        wisp_addr,
        Method::PUT,
        &format!("/wisp/v1/functions/{PURE}/memoization"),
        json!({ "TtlSeconds": 3600 }),
    )
    .await?;
    let plain = timed(wisp_addr, &invoke_path(crate::NOOP), requests, |index| {
        format!("{{\"k\":\"plain-{index}\"}}")
    })
    .await?;
    let first = timed(wisp_addr, &invoke_path(IDEMPOTENT), requests, |index| {
        format!("{{\"k\":\"first-{index}\"}}")
    })
    .await?;
    let replay = timed(wisp_addr, &invoke_path(IDEMPOTENT), requests, |_| {
        "{\"k\":\"same\"}".to_string()
    })
    .await?;
    let memoized = timed(wisp_addr, &invoke_path(PURE), requests, |_| {
        "{\"k\":\"same\"}".to_string()
    })
    .await?;
    let base = us(percentile(&plain, 50.0));
    print_ratios(
        52,
        base,
        &[
            ("plain warm invoke (baseline)", &plain),
            ("idempotent, first execution (new key each time)", &first),
            ("idempotent, replay (same key)", &replay),
            ("pure function, cache hit (same input)", &memoized),
        ],
    );
    let replay50 = us(percentile(&replay, 50.0));
    println!(
        "idempotent first execution adds {:.0} µs at p50 (claim + stored outcome, two store writes); replay {:.0} µs = {:.2}x a warm invoke; target: replay faster than a warm invoke ({})",
        us(percentile(&first, 50.0)) - base,
        replay50,
        replay50 / base,
        crate::verdict(replay50 < base)
    );
    Ok(())
}
