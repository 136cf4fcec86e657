//! InvokeWithResponseStream through aws-sdk-rust's event-stream reader, with rust-echo's stream
//! mode (the `lambda_runtime` crate's streaming support).

use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    InvokeWithResponseStreamCompleteEvent, InvokeWithResponseStreamResponseEvent,
};
use serde_json::json;

use crate::support::{TestServer, create_rust_echo};

/// What `lambda_runtime` writes before the first chunk: its metadata prelude and eight NUL bytes.
const PRELUDE: &[u8] =
    b"{\"statusCode\":200,\"headers\":{\"content-type\":\"application/octet-stream\"},\"cookies\":[]}\0\0\0\0\0\0\0\0";

/// Reads the whole event stream: each chunk with the time it arrived, then the completion.
async fn read_events(
    client: &aws_sdk_lambda::Client,
    function: &str,
    event: serde_json::Value,
) -> (
    Vec<(Duration, Vec<u8>)>,
    InvokeWithResponseStreamCompleteEvent,
) {
    let started = Instant::now();
    let mut output = client
        .invoke_with_response_stream()
        .function_name(function)
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .expect("invoke_with_response_stream");
    assert_eq!(output.status_code(), 200);
    assert_eq!(output.executed_version(), Some("$LATEST"));
    let mut chunks = Vec::new();
    loop {
        match output
            .event_stream
            .recv()
            .await
            .expect("a well-formed event stream")
        {
            Some(InvokeWithResponseStreamResponseEvent::PayloadChunk(chunk)) => {
                let bytes = chunk
                    .payload()
                    .map(|blob| blob.as_ref().to_vec())
                    .unwrap_or_default();
                chunks.push((started.elapsed(), bytes));
            }
            Some(InvokeWithResponseStreamResponseEvent::InvokeComplete(complete)) => {
                assert!(
                    output
                        .event_stream
                        .recv()
                        .await
                        .expect("stream end")
                        .is_none(),
                    "nothing follows InvokeComplete"
                );
                return (chunks, complete);
            }
            Some(other) => panic!("unexpected event {other:?}"),
            None => panic!("the stream ended without InvokeComplete"),
        }
    }
}

fn joined(chunks: &[(Duration, Vec<u8>)]) -> Vec<u8> {
    chunks.iter().flat_map(|(_, bytes)| bytes.clone()).collect()
}

#[tokio::test]
async fn the_sdk_reads_chunks_as_they_are_streamed() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "streamer").await;

    let (chunks, complete) = read_events(
        &client,
        "streamer",
        json!({"stream": {"chunks": 5, "interval_ms": 400}}),
    )
    .await;

    let mut expected = PRELUDE.to_vec();
    for index in 0..5 {
        expected.extend_from_slice(format!("chunk {index}\n").as_bytes());
    }
    assert_eq!(
        String::from_utf8_lossy(&joined(&chunks)),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(complete.error_code(), None, "{complete:?}");
    let first = chunks
        .iter()
        .find(|(_, bytes)| bytes.starts_with(b"chunk 0"))
        .expect("chunk 0")
        .0;
    let last = chunks
        .iter()
        .find(|(_, bytes)| bytes.starts_with(b"chunk 4"))
        .expect("chunk 4")
        .0;
    assert!(
        last - first >= Duration::from_millis(1200),
        "chunks came together, not as streamed: {chunks:?}"
    );
}

#[tokio::test]
async fn a_stream_that_fails_ends_with_the_error_in_invoke_complete() {
    let wisp = TestServer::start();
    let client = wisp.client().await;
    create_rust_echo(&client, "breaker").await;

    let (chunks, complete) = read_events(
        &client,
        "breaker",
        json!({"stream": {"chunks": 4, "fail_after": 2}}),
    )
    .await;

    let mut expected = PRELUDE.to_vec();
    expected.extend_from_slice(b"chunk 0\nchunk 1\n");
    assert_eq!(
        String::from_utf8_lossy(&joined(&chunks)),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(complete.error_code(), Some("Runtime.StreamError"));
    assert_eq!(
        complete.error_details(),
        Some("stream failed after 2 chunks")
    );
}
