//! Section 6: the cost of a signature — a 20-field JSON Schema checked on every invoke — against the same
//! no-op function without one, in the same run.
//!
//! - in process: `CompiledSignature::violations` on the 20-field event (parse + validate), the work the
//!   invoke path adds, timed alone;
//! - end to end: sequential warm invokes of two no-op functions that differ only in the signature,
//!   measured in alternating blocks so drift in the machine affects both alike.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use wisp_control::{CompiledSignature, Side};
use wisp_types::{Signature, TypeSpec};

use crate::idempotency::timed;
use crate::{api, invoke_path, percentile, print_ratios, us};

const UNTYPED: &str = "bench-untyped";
const TYPED: &str = "bench-typed";

/// An object schema with 20 required fields of mixed types and constraints, closed to others.
fn schema() -> Value {
    let mut properties = serde_json::Map::new();
    for index in 0..20 {
        let rule = match index % 5 {
            0 => json!({ "type": "string", "minLength": 1, "maxLength": 64 }),
            1 => json!({ "type": "integer", "minimum": 0 }),
            2 => json!({ "type": "number", "maximum": 1e9 }),
            3 => json!({ "type": "boolean" }),
            _ => json!({ "enum": ["red", "green", "blue"] }),
        };
        properties.insert(format!("field{index}"), rule);
    }
    let required: Vec<String> = (0..20).map(|index| format!("field{index}")).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// An event that satisfies [`schema`].
fn event(seed: usize) -> String {
    let mut fields = serde_json::Map::new();
    for index in 0..20 {
        let value = match index % 5 {
            0 => json!(format!("value-{seed}-{index}")),
            1 => json!(seed + index),
            2 => json!((seed as f64) * 0.5 + index as f64),
            3 => json!(index % 2 == 0),
            _ => json!("green"),
        };
        fields.insert(format!("field{index}"), value);
    }
    Value::Object(fields).to_string()
}

pub(crate) async fn section(
    cli: &crate::Cli,
    wisp_addr: SocketAddr,
    noop_zip: &[u8],
) -> anyhow::Result<()> {
    println!();
    println!("== 6. Signatures: a 20-field JSON Schema checked on every invoke ==");
    let signature = Signature {
        input: Some(TypeSpec::JsonSchema(schema())),
        output: None,
        grpc_method: None,
    };
    let compiled = CompiledSignature::compile(&signature)
        .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    let sample = event(7);
    anyhow::ensure!(
        compiled
            .violations(Side::Input, sample.as_bytes())
            .is_empty(),
        "the benchmark's event does not match its schema"
    );
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(
            compiled.violations(Side::Input, std::hint::black_box(sample.as_bytes())),
        );
    }
    let per_check = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(
            std::hint::black_box(sample.as_bytes()),
        )?);
    }
    let per_parse = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!(
        "in process: parse + validate {per_check:.2} µs per event ({} bytes); the JSON well-formedness check every invoke already makes: {per_parse:.2} µs ({:.1}x)",
        sample.len(),
        per_check / per_parse
    );

    for name in [UNTYPED, TYPED] {
        crate::create_function(wisp_addr, name, "provided.al2023", noop_zip).await?;
    }
    api(
        wisp_addr,
        Method::PUT,
        &format!("/wisp/v1/functions/{TYPED}/signature"),
        serde_json::to_value(&signature)?,
    )
    .await?;
    let block = (cli.requests / 8).clamp(500, 2500);
    let (mut untyped, mut typed): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for round in 0..4 {
        untyped.extend(
            timed(wisp_addr, &invoke_path(UNTYPED), block, |index| {
                event(round * block + index)
            })
            .await?,
        );
        typed.extend(
            timed(wisp_addr, &invoke_path(TYPED), block, |index| {
                event(round * block + index)
            })
            .await?,
        );
    }
    untyped.sort_unstable();
    typed.sort_unstable();
    println!(
        "end to end, {} sequential warm invokes each, alternating blocks of {block}:",
        untyped.len()
    );
    let base = us(percentile(&untyped, 50.0));
    print_ratios(
        40,
        base,
        &[
            ("no signature (baseline)", &untyped),
            ("20-field input schema", &typed),
        ],
    );
    let added = us(percentile(&typed, 50.0)) - base;
    println!(
        "validation adds {added:.1} µs at p50 end to end ({per_check:.2} µs in process); target: under 10 µs ({})",
        crate::verdict(per_check < 10.0 && added < 10.0)
    );
    Ok(())
}
