//! AWS Signature Version 4: the pure computation shared by the server (to verify) and the
//! `wisp` CLI (to sign). No clock and no I/O: callers pass the time and the request's parts.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The parts of a request a signature covers.
pub struct CanonicalParts<'a> {
    pub method: &'a str,
    /// The path exactly as sent on the wire (still percent-encoded).
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    /// The signed headers, lowercase names, in the order of `SignedHeaders`, each with its values.
    pub headers: Vec<(&'a str, Vec<&'a [u8]>)>,
    /// Hex sha256 of the body (or the `x-amz-content-sha256` value).
    pub payload_hash: &'a str,
}

/// The credential scope: `DATE/REGION/SERVICE/aws4_request`.
pub struct Scope<'a> {
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// Percent-encodes as SigV4 wants: unreserved characters stay, everything else is `%XX` (uppercase).
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        let unreserved = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/');
        if unreserved {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && index + 2 < bytes.len()
            && let Ok(value) = u8::from_str_radix(&text[index + 1..index + 3], 16)
        {
            decoded.push(value);
            index += 3;
            continue;
        }
        decoded.push(if byte == b'+' { b' ' } else { byte });
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The canonical query string: pairs decoded, re-encoded strictly, sorted.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(raw_query) = raw_query.filter(|query| !query.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(key), false),
                uri_encode(&percent_decode(value), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Hex sha256, as payload hashes are written.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hex signature of a request. `amz_date` is the `X-Amz-Date` value (`YYYYMMDDTHHMMSSZ`).
pub fn signature(
    parts: &CanonicalParts<'_>,
    scope: &Scope<'_>,
    amz_date: &str,
    secret: &str,
) -> String {
    let mut canonical_headers = String::new();
    let mut names = Vec::with_capacity(parts.headers.len());
    for (name, values) in &parts.headers {
        let values: Vec<String> = values
            .iter()
            .map(|value| {
                String::from_utf8_lossy(value)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        names.push(*name);
    }
    let path = if parts.raw_path.is_empty() {
        "/"
    } else {
        parts.raw_path
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method,
        uri_encode(path, true),
        canonical_query(parts.raw_query),
        canonical_headers,
        names.join(";"),
        parts.payload_hash
    );
    let scope_text = format!(
        "{}/{}/{}/aws4_request",
        scope.date, scope.region, scope.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope_text}\n{}",
        hex_sha256(canonical_request.as_bytes())
    );
    let key = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    let key = hmac(&key, scope.region.as_bytes());
    let key = hmac(&key, scope.service.as_bytes());
    let key = hmac(&key, b"aws4_request");
    hex::encode(hmac(&key, string_to_sign.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's SigV4 documentation (GET with a query, iam service).
    #[test]
    fn signature_matches_the_published_example() {
        let parts = CanonicalParts {
            method: "GET",
            raw_path: "/",
            raw_query: Some("Action=ListUsers&Version=2010-05-08"),
            headers: vec![
                (
                    "content-type",
                    vec![b"application/x-www-form-urlencoded; charset=utf-8".as_slice()],
                ),
                ("host", vec![b"iam.amazonaws.com".as_slice()]),
                ("x-amz-date", vec![b"20150830T123600Z".as_slice()]),
            ],
            payload_hash: &hex_sha256(b""),
        };
        let scope = Scope {
            date: "20150830",
            region: "us-east-1",
            service: "iam",
        };
        let computed = signature(
            &parts,
            &scope,
            "20150830T123600Z",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(
            computed,
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query(Some("b=2&a=1&c=x%20y")), "a=1&b=2&c=x%20y");
        assert_eq!(
            canonical_query(Some("Qualifier=%24LATEST")),
            "Qualifier=%24LATEST"
        );
        assert_eq!(canonical_query(None), "");
    }
}
