//! Section 8: extensions. The same no-op `provided` function with one registered no-op agent
//! (`noop-extension`, in a layer's `extensions/` folder, registered for INVOKE and SHUTDOWN) against
//! the function without it, in the same run: sequential latency, then throughput at concurrency 8.
//! Each invoke with the agent also sends it an INVOKE event and waits, before the instance is
//! reused, until it asks for its next event.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::Method;
use serde_json::json;

use crate::{api, connect, invoke, invoke_path, percentile, print_ratios, throughput, us, zip_of};

const WITH_AGENT: &str = "bench-with-agent";

async fn timed(addr: SocketAddr, path: &str, requests: usize) -> anyhow::Result<Vec<Duration>> {
    let mut sender = connect(addr).await?;
    for _ in 0..200 {
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

pub(crate) async fn section(
    cli: &crate::Cli,
    wisp_addr: SocketAddr,
    noop_zip: &[u8],
) -> anyhow::Result<()> {
    let agent_path = cli.bootstrap.with_file_name("noop-extension");
    let agent = std::fs::read(&agent_path).map_err(|error| {
        anyhow::anyhow!(
            "cannot read {} (build it with `cargo build --release -p wisp-bench`): {error}",
            Path::new(&agent_path).display()
        )
    })?;
    let layer_zip = zip_of(&[("extensions/noop-extension", &agent, 0o755)])?;
    let layer = api(
        wisp_addr,
        Method::POST,
        "/2018-10-31/layers/bench-agent/versions",
        json!({ "Content": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(&layer_zip) } }),
    )
    .await?;
    let layer_arn = layer["LayerVersionArn"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("PublishLayerVersion gave no LayerVersionArn: {layer}"))?
        .to_string();
    api(
        wisp_addr,
        Method::POST,
        "/2015-03-31/functions",
        json!({
            "FunctionName": WITH_AGENT,
            "Runtime": "provided.al2023",
            "Handler": "handler.handler",
            "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(noop_zip)},
            "MemorySize": 128,
            "Timeout": 30,
            "Layers": [layer_arn],
        }),
    )
    .await?;
    let requests = cli.requests.min(5000);
    println!();
    println!(
        "== 8. Extensions: the no-op function with one registered no-op agent against none, {requests} sequential requests after 200 warm-up, then {:.1} s at concurrency 8 ==",
        cli.seconds
    );
    let plain_path = invoke_path(crate::NOOP);
    let agent_path = invoke_path(WITH_AGENT);
    let plain = timed(wisp_addr, &plain_path, requests).await?;
    let with_agent = timed(wisp_addr, &agent_path, requests).await?;
    let plain_again = timed(wisp_addr, &plain_path, requests).await?;
    let base50 = us(percentile(&plain, 50.0)).min(us(percentile(&plain_again, 50.0)));
    print_ratios(
        40,
        base50,
        &[
            ("no agent (before)", &plain),
            ("one no-op agent", &with_agent),
            ("no agent (after)", &plain_again),
        ],
    );
    let plain_rate = throughput(wisp_addr, &plain_path, 8, cli.seconds).await?;
    let agent_rate = throughput(wisp_addr, &agent_path, 8, cli.seconds).await?;
    println!(
        "{:<40} {:>9.0} {:>9.0} {:>8.2}x",
        "invokes/s at concurrency 8 (none, agent)",
        plain_rate.per_second,
        agent_rate.per_second,
        agent_rate.per_second / plain_rate.per_second
    );
    println!(
        "one agent adds {:.0} µs at p50 (an INVOKE event and the agent's next request per invocation)",
        us(percentile(&with_agent, 50.0)) - base50
    );
    Ok(())
}
