//! The echo document: what the upstream saw, so a test can diff the request with and without a
//! filter in front. Header and trailer values are encoded losslessly (see [`encode_lossless`]).

use std::fmt::Write as _;

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Body of the default response (`content-type: application/json`).
///
/// `headers` keeps hyper's order: names in first-received order, the values of a repeated name
/// as separate entries in received order (hyper groups them under the first occurrence, so
/// `a, b, a` reads back as `a, a, b`). Names are lower-case as hyper parses them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoDocument {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request URI as received: origin-form (`/path?q`) over HTTP/1.1, absolute over h2.
    pub uri: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// `[name, value]` pairs; values encoded with [`encode_lossless`].
    pub headers: Vec<(String, String)>,
    /// Request trailers, same form as `headers`.
    pub trailers: Vec<(String, String)>,
    /// Request body length in bytes.
    pub body_len: u64,
    /// Lower-case hex SHA-256 of the request body.
    pub body_sha256: String,
}

impl EchoDocument {
    pub(crate) fn new(
        parts: &http::request::Parts,
        body: &[u8],
        trailers: Option<&HeaderMap>,
    ) -> Self {
        Self {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            version: format!("{:?}", parts.version),
            headers: header_pairs(&parts.headers),
            trailers: trailers.map(header_pairs).unwrap_or_default(),
            body_len: u64::try_from(body.len()).unwrap_or(u64::MAX),
            body_sha256: sha256_hex(body),
        }
    }

    /// Values of header `name` (lower-case), decoded back to bytes, in received order.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| decode_lossless(v))
            .collect()
    }
}

/// `[name, value]` pairs of a header map, values encoded with [`encode_lossless`].
pub fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), encode_lossless(value.as_bytes())))
        .collect()
}

/// Encodes bytes as a string without loss: printable ASCII (0x20..=0x7e) as-is except the
/// backslash, which becomes `\\`; every other byte becomes `\xNN` (lower-case hex).
pub fn encode_lossless(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Inverse of [`encode_lossless`]; `None` if `text` is not in that form.
pub fn decode_lossless(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The deterministic body sent for `x-upstream-body-size: len`: the 64-byte cycle
/// `0-9a-zA-Z-_` (`b"0123...XYZ-_"`) repeated and cut at `len`.
pub fn pattern_body(len: usize) -> Bytes {
    const CYCLE: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
    CYCLE.iter().copied().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_round_trip() {
        let raw: Vec<u8> = (0..=255).collect();
        let text = encode_lossless(&raw);
        assert!(text.is_ascii());
        assert_eq!(decode_lossless(&text).unwrap(), raw);
        assert_eq!(encode_lossless(b"a\\b\t\xff~"), "a\\\\b\\x09\\xff~");
        assert_eq!(decode_lossless("bad\\q"), None);
        assert_eq!(decode_lossless("short\\x4"), None);
    }

    #[test]
    fn sha256_and_pattern() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let body = pattern_body(70);
        assert_eq!(body.len(), 70);
        assert_eq!(&body[..3], b"012");
        assert_eq!(&body[62..66], b"-_01");
    }
}
