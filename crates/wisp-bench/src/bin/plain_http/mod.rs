//! The little HTTP/1.1 client the benchmark's no-op runtime and extension share: blocking std I/O
//! over one keep-alive connection, requests written by hand, responses read here.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;

/// Reads one HTTP response: the value of the header `wanted` (empty when absent) and the body. The
/// process exits when the server has closed the connection (the instance is being stopped).
pub fn read_response(
    reader: &mut BufReader<TcpStream>,
    line: &mut String,
    wanted: &str,
) -> (String, Vec<u8>) {
    let mut value_wanted = String::new();
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
            if name.eq_ignore_ascii_case(wanted) {
                value_wanted = value.trim().to_string();
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read body");
    (value_wanted, body)
}
