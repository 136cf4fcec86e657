//! A no-op external extension (agent): registers for INVOKE and SHUTDOWN and asks for the next
//! event at once every time, over one keep-alive connection, so the benchmark measures what the
//! Extensions API adds to an invocation and not an agent's own work. Blocking std I/O only.

mod plain_http;

use std::io::{BufReader, Write};
use std::net::TcpStream;

use plain_http::read_response;

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
    let (identifier, _) = read_response(&mut reader, &mut line, "lambda-extension-identifier");
    let next = format!(
        "GET /2020-01-01/extension/event/next HTTP/1.1\r\nHost: {address}\r\nLambda-Extension-Identifier: {identifier}\r\n\r\n"
    );
    loop {
        writer.write_all(next.as_bytes()).expect("next");
        let (_, event) = read_response(&mut reader, &mut line, "lambda-extension-identifier");
        if String::from_utf8_lossy(&event).contains("\"SHUTDOWN\"") {
            return;
        }
    }
}
