//! A no-op external extension (agent): registers for INVOKE and SHUTDOWN and asks for the next
//! event at once every time, over one keep-alive connection, so the benchmark measures what the
//! Extensions API adds to an invocation and not an agent's own work. Blocking std I/O only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

fn main() {
    let Ok(address) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let stream = TcpStream::connect(&address).expect("extensions api reachable");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let body = r#"{"events":["INVOKE","SHUTDOWN"]}"#;
    let register = format!(
        "POST /2020-01-01/extension/register HTTP/1.1\r\nHost: {address}\r\nLambda-Extension-Name: noop-extension\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    writer.write_all(register.as_bytes()).expect("register");
    let mut line = String::new();
    let (identifier, _) = read_response(&mut reader, &mut line);
    let next = format!(
        "GET /2020-01-01/extension/event/next HTTP/1.1\r\nHost: {address}\r\nLambda-Extension-Identifier: {identifier}\r\n\r\n"
    );
    loop {
        writer.write_all(next.as_bytes()).expect("next");
        let (_, event) = read_response(&mut reader, &mut line);
        if event.contains("\"SHUTDOWN\"") {
            return;
        }
    }
}

/// Reads one HTTP response; returns the extension identifier header (if any) and the body.
fn read_response(reader: &mut BufReader<TcpStream>, line: &mut String) -> (String, String) {
    let mut identifier = String::new();
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
            if name.eq_ignore_ascii_case("lambda-extension-identifier") {
                identifier = value.trim().to_string();
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read body");
    (identifier, String::from_utf8_lossy(&body).into_owned())
}
