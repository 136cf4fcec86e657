//! A no-op `provided` function runtime: the least a runtime can do (one keep-alive connection to the
//! Runtime API, `next` then `response` with `{}`), so the benchmark measures Wisp and not a runtime
//! library. Blocking std I/O only, one thread.

mod plain_http;

use std::io::{BufReader, Write};
use std::net::TcpStream;

use plain_http::read_response;

fn main() {
    let Ok(address) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        // Started outside a sandbox (the fork+exec baseline): nothing to serve.
        return;
    };
    let stream = TcpStream::connect(&address).expect("runtime api reachable");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let next =
        format!("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let mut line = String::new();
    loop {
        writer.write_all(next.as_bytes()).expect("send next");
        let (request_id, _) =
            read_response(&mut reader, &mut line, "lambda-runtime-aws-request-id");
        let response = format!(
            "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\nHost: {address}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        writer
            .write_all(response.as_bytes())
            .expect("send response");
        read_response(&mut reader, &mut line, "lambda-runtime-aws-request-id");
    }
}
