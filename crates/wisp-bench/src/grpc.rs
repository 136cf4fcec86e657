//! Section 9: a gRPC unary call against a REST invoke of the same function, in the same run.
//!
//! One no-op function with protobuf messages and a `GrpcMethod`; sequential warm calls, in
//! alternating blocks: REST (`Invoke` over one HTTP/1.1 keep-alive connection, a JSON event) and
//! gRPC (`/bench.v1.Bench/Ping` over one HTTP/2 cleartext connection, framed here by hand: the
//! 5-byte prefix, then the status read from the trailers). The gRPC path adds decoding the binary
//! request, writing its JSON, and encoding the result.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::idempotency::timed;
use crate::{api, invoke_path, percentile, print_ratios, us};

const FUNCTION: &str = "bench-grpc";
const METHOD: &str = "bench.v1.Bench/Ping";

const PROTO: &str = r#"
syntax = "proto3";
package bench.v1;
message Ping { string id = 1; int64 sequence = 2; bool urgent = 3; }
message Pong { string id = 1; }
service Bench { rpc Ping(Ping) returns (Pong); }
"#;

/// The binary `Ping` for `sequence`: id "ping" (field 1), sequence (field 2, varint), urgent (field 3).
fn ping(sequence: u64) -> Vec<u8> {
    let mut message = vec![0x0a, 4, b'p', b'i', b'n', b'g', 0x10];
    let mut value = sequence;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            message.push(byte);
            break;
        }
        message.push(byte | 0x80);
    }
    message.extend_from_slice(&[0x18, 1]);
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

async fn grpc_calls(addr: SocketAddr, requests: usize) -> anyhow::Result<Vec<Duration>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let uri = format!("http://{addr}/{METHOD}");
    let mut samples = Vec::with_capacity(requests);
    for index in 0..requests + 200 {
        let request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(ping(index as u64))))?;
        let started = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await?;
        let status = collected
            .trailers()
            .and_then(|trailers| trailers.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|value| value.to_str().ok())
            .unwrap_or("missing")
            .to_string();
        if status != "0" {
            anyhow::bail!(
                "{METHOD}: grpc-status {status}: {:?}",
                parts.headers.get("grpc-message")
            );
        }
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
    println!();
    println!("== 9. gRPC unary call against REST Invoke of the same no-op function ==");
    crate::create_function(wisp_addr, FUNCTION, "provided.al2023", noop_zip).await?;
    let files = json!({ "bench.proto": PROTO });
    api(
        wisp_addr,
        Method::PUT,
        &format!("/wisp/v1/functions/{FUNCTION}/signature"),
        json!({
            "Input": { "Protobuf": { "Files": files, "Message": "bench.v1.Ping" } },
            "Output": { "Protobuf": { "Files": files, "Message": "bench.v1.Pong" } },
            "GrpcMethod": METHOD,
        }),
    )
    .await?;
    let block = (cli.requests / 8).clamp(500, 2500);
    let (mut rest, mut grpc): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        rest.extend(
            timed(wisp_addr, &invoke_path(FUNCTION), block, |index| {
                json!({ "id": "ping", "sequence": index.to_string(), "urgent": true }).to_string()
            })
            .await?,
        );
        grpc.extend(grpc_calls(wisp_addr, block).await?);
    }
    rest.sort_unstable();
    grpc.sort_unstable();
    println!(
        "{} sequential warm calls each, alternating blocks of {block}:",
        rest.len()
    );
    print_ratios(
        40,
        us(percentile(&rest, 50.0)),
        &[
            ("REST Invoke, HTTP/1.1 (baseline)", &rest),
            ("gRPC unary, HTTP/2 cleartext", &grpc),
        ],
    );
    Ok(())
}
