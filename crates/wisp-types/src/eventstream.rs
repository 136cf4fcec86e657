//! AWS's event-stream framing (`application/vnd.amazon.eventstream`), as InvokeWithResponseStream
//! answers: a sequence of self-delimiting messages, each with string headers and a binary payload.
//!
//! A message is: total length (u32, big-endian), headers length (u32), a CRC32 of those eight bytes,
//! the headers, the payload, and a CRC32 of everything before it. A header is its name's length (u8),
//! the name, a value type (7 for a string), the value's length (u16) and the value. Only string
//! headers are written or read here, which is all Lambda's response stream uses.
//!
//! Pure code: the server encodes with it and the CLI decodes with it; it never does I/O.

use thiserror::Error;

/// Bytes before the headers: two lengths and the prelude's CRC.
const PRELUDE_BYTES: usize = 12;
/// Bytes of the message CRC at the end.
const TRAILER_BYTES: usize = 4;
/// Value type of a string header.
const STRING_TYPE: u8 = 7;
/// Largest message the format allows (16 MB); longer payloads must be split by the caller.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of a string header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why bytes are not a valid event-stream message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("the prelude's CRC32 {found:#010x} does not match its bytes ({expected:#010x})")]
    PreludeCrc { found: u32, expected: u32 },
    #[error("the message CRC32 {found:#010x} does not match its bytes ({expected:#010x})")]
    MessageCrc { found: u32, expected: u32 },
    #[error("message length {0} is outside 16 bytes to 16 MB")]
    Length(usize),
    #[error("header section is malformed: {0}")]
    Header(&'static str),
}

/// Appends one message with string headers to `out`.
///
/// # Panics
/// If a header name is longer than 255 bytes, a value longer than 65535 bytes, or the message longer
/// than [`MAX_MESSAGE_BYTES`]: callers pass constant header names and split payloads.
pub fn encode(headers: &[(&str, &str)], payload: &[u8], out: &mut Vec<u8>) {
    let headers_len: usize = headers
        .iter()
        .map(|(name, value)| 1 + name.len() + 1 + 2 + value.len())
        .sum();
    let total = PRELUDE_BYTES + headers_len + payload.len() + TRAILER_BYTES;
    assert!(total <= MAX_MESSAGE_BYTES, "event-stream message too long");
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32(&out[start..start + 8]);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    for (name, value) in headers {
        let name_len = u8::try_from(name.len()).expect("header name up to 255 bytes");
        let value_len = u16::try_from(value.len()).expect("header value up to 65535 bytes");
        out.push(name_len);
        out.extend_from_slice(name.as_bytes());
        out.push(STRING_TYPE);
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(payload);
    let message_crc = crc32(&out[start..]);
    out.extend_from_slice(&message_crc.to_be_bytes());
}

/// Decodes the first message in `buffer`: `Ok(None)` when the buffer does not hold a whole message
/// yet, else the message and how many bytes it took.
pub fn decode(buffer: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    if buffer.len() < PRELUDE_BYTES {
        return Ok(None);
    }
    let word = |at: usize| {
        u32::from_be_bytes([buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]])
    };
    let total = word(0) as usize;
    let headers_len = word(4) as usize;
    let expected = crc32(&buffer[..8]);
    if word(8) != expected {
        return Err(FrameError::PreludeCrc {
            found: word(8),
            expected,
        });
    }
    if !(PRELUDE_BYTES + TRAILER_BYTES..=MAX_MESSAGE_BYTES).contains(&total)
        || headers_len > total - PRELUDE_BYTES - TRAILER_BYTES
    {
        return Err(FrameError::Length(total));
    }
    if buffer.len() < total {
        return Ok(None);
    }
    let expected = crc32(&buffer[..total - TRAILER_BYTES]);
    if word(total - TRAILER_BYTES) != expected {
        return Err(FrameError::MessageCrc {
            found: word(total - TRAILER_BYTES),
            expected,
        });
    }
    let mut headers = Vec::new();
    let mut rest = &buffer[PRELUDE_BYTES..PRELUDE_BYTES + headers_len];
    while !rest.is_empty() {
        let name_len = rest[0] as usize;
        if rest.len() < 1 + name_len + 3 {
            return Err(FrameError::Header("a header is cut short"));
        }
        let name = std::str::from_utf8(&rest[1..1 + name_len])
            .map_err(|_| FrameError::Header("a header name is not UTF-8"))?;
        rest = &rest[1 + name_len..];
        if rest[0] != STRING_TYPE {
            return Err(FrameError::Header("only string headers are supported"));
        }
        let value_len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        if rest.len() < 3 + value_len {
            return Err(FrameError::Header("a header value is cut short"));
        }
        let value = std::str::from_utf8(&rest[3..3 + value_len])
            .map_err(|_| FrameError::Header("a header value is not UTF-8"))?;
        headers.push((name.to_string(), value.to_string()));
        rest = &rest[3 + value_len..];
    }
    let payload = buffer[PRELUDE_BYTES + headers_len..total - TRAILER_BYTES].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as the format uses.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut value = index as u32;
            let mut bit = 0;
            while bit < 8 {
                value = if value & 1 == 1 {
                    (value >> 1) ^ 0xEDB8_8320
                } else {
                    value >> 1
                };
                bit += 1;
            }
            table[index] = value;
            index += 1;
        }
        table
    };
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc = TABLE[((crc ^ *byte as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_values() {
        for (input, expected) in [
            (&b""[..], 0x0000_0000),
            (b"a", 0xE8B7_BE43),
            (b"123456789", 0xCBF4_3926),
            (b"The quick brown fox jumps over the lazy dog", 0x414F_A339),
        ] {
            assert_eq!(
                crc32(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// The smallest message (no headers, no payload) from the format's published test vectors:
    /// 16 bytes, prelude CRC 0x05c248eb, message CRC 0x7d98c8ff.
    #[test]
    fn an_empty_message_matches_the_published_bytes() {
        let mut out = Vec::new();
        encode(&[], b"", &mut out);
        assert_eq!(
            out,
            [
                0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
                0xc8, 0xff
            ]
        );
    }

    #[test]
    fn messages_round_trip_and_report_their_length() {
        let mut out = Vec::new();
        encode(
            &[(":event-type", "PayloadChunk"), (":message-type", "event")],
            b"hello",
            &mut out,
        );
        let first_len = out.len();
        encode(&[(":event-type", "InvokeComplete")], b"{}", &mut out);
        let (first, used) = decode(&out).unwrap().unwrap();
        assert_eq!(used, first_len);
        assert_eq!(first.header(":event-type"), Some("PayloadChunk"));
        assert_eq!(first.header(":message-type"), Some("event"));
        assert_eq!(first.payload, b"hello");
        let (second, _) = decode(&out[used..]).unwrap().unwrap();
        assert_eq!(second.header(":event-type"), Some("InvokeComplete"));
        assert_eq!(second.payload, b"{}");
    }

    #[test]
    fn partial_messages_wait_for_more_bytes() {
        let mut out = Vec::new();
        encode(&[("a", "b")], b"payload", &mut out);
        for cut in [0, 5, 12, out.len() - 1] {
            assert_eq!(decode(&out[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn corrupted_messages_are_refused() {
        let mut out = Vec::new();
        encode(&[("a", "b")], b"payload", &mut out);
        let mut bad_prelude = out.clone();
        bad_prelude[2] ^= 1;
        assert!(matches!(
            decode(&bad_prelude),
            Err(FrameError::PreludeCrc { .. })
        ));
        let mut bad_payload = out.clone();
        let last_payload_byte = out.len() - 5;
        bad_payload[last_payload_byte] ^= 1;
        assert!(matches!(
            decode(&bad_payload),
            Err(FrameError::MessageCrc { .. })
        ));
    }
}
