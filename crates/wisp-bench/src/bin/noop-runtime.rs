//! A no-op `provided` function runtime: the least a runtime can do (one keep-alive connection to the
//! Runtime API, `next` then `response` with `{}`), so the benchmark measures Wisp and not a runtime
//! library. Blocking std I/O only, one thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

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
        let (request_id, _) = read_response(&mut reader, &mut line);
        let response = format!(
            "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\nHost: {address}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        writer
            .write_all(response.as_bytes())
            .expect("send response");
        read_response(&mut reader, &mut line);
    }
}

/// Reads one HTTP response; returns the request id header (if any) and discards the body.
fn read_response(reader: &mut BufReader<TcpStream>, line: &mut String) -> (String, usize) {
    let mut request_id = String::new();
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(line).expect("read header") == 0 {
            std::process::exit(0);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                request_id = value.trim().to_string();
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read body");
    (request_id, length)
}
