//! Per-request knobs carried in request headers (or gRPC metadata), so one upstream serves
//! every test. A malformed knob is answered `400` with `x-upstream-knob-error: 1` and a text
//! body naming it, so a typo in a test fails loudly instead of being ignored.

use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::MAX_MS;

/// `x-upstream-status: 503`: response status (200..=599). Statuses 204 and 304 carry no body.
pub const STATUS: &str = "x-upstream-status";
/// `x-upstream-delay-ms: 50`: extra service time, added to the configured latency.
pub const DELAY_MS: &str = "x-upstream-delay-ms";
/// `x-upstream-body-size: N`: respond with N bytes of [`crate::pattern_body`] instead of the
/// echo document.
pub const BODY_SIZE: &str = "x-upstream-body-size";
/// `x-upstream-chunked: 1`: send the body as several chunks without `content-length`.
pub const CHUNKED: &str = "x-upstream-chunked";
/// `x-upstream-echo: body`: respond with the request body, byte for byte.
pub const ECHO: &str = "x-upstream-echo";
/// `x-upstream-header: name: value` (repeatable): add a response header.
pub const HEADER: &str = "x-upstream-header";
/// `x-upstream-trailer: name: value` (repeatable): add a response trailer. Over HTTP/1.1 the
/// response becomes chunked, and hyper sends trailers only if the request has `te: trailers`.
pub const TRAILER: &str = "x-upstream-trailer";
/// `x-upstream-reset: before-headers | after-headers | mid-body`: reset at that point.
pub const RESET: &str = "x-upstream-reset";
/// Response header set on a `400` caused by a malformed knob.
pub const KNOB_ERROR: &str = "x-upstream-knob-error";
/// Response header set on the `503` sent when the bounded queue is full.
pub const QUEUE_FULL: &str = "x-upstream-queue-full";
/// Response header set on responses of an injected `status` failure (value `injected`).
pub const FAILURE: &str = "x-upstream-failure";

/// Largest `x-upstream-body-size` accepted (256 MiB).
pub const MAX_BODY_SIZE: usize = 256 << 20;

/// Where `x-upstream-reset` cuts the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResetPoint {
    /// No response at all (HTTP/1.1: connection closed; h2: `RST_STREAM`).
    BeforeHeaders,
    /// Headers sent, then reset before any body byte.
    AfterHeaders,
    /// About half of the body (gRPC: half of the messages) sent, then reset.
    MidBody,
}

/// Parsed knobs of one request. `Default` = no knob set.
#[derive(Clone, Debug, Default)]
pub(crate) struct Knobs {
    pub(crate) status: Option<StatusCode>,
    pub(crate) delay: Duration,
    pub(crate) body_size: Option<usize>,
    pub(crate) chunked: bool,
    pub(crate) echo_body: bool,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) trailers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) reset: Option<ResetPoint>,
}

impl Knobs {
    /// Reads every `x-upstream-*` knob; the error names the first malformed one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        let mut knobs = Self::default();
        if let Some(v) = single(headers, STATUS)? {
            let code: u16 = parse(STATUS, v)?;
            if !(200..=599).contains(&code) {
                return Err(format!("{STATUS}: {code} is not in 200..=599"));
            }
            knobs.status = Some(StatusCode::from_u16(code).map_err(|e| format!("{STATUS}: {e}"))?);
        }
        if let Some(v) = single(headers, DELAY_MS)? {
            let ms: u64 = parse(DELAY_MS, v)?;
            if ms > MAX_MS {
                return Err(format!("{DELAY_MS}: {ms} > {MAX_MS}"));
            }
            knobs.delay = Duration::from_millis(ms);
        }
        if let Some(v) = single(headers, BODY_SIZE)? {
            let size: usize = parse(BODY_SIZE, v)?;
            if size > MAX_BODY_SIZE {
                return Err(format!("{BODY_SIZE}: {size} > {MAX_BODY_SIZE}"));
            }
            knobs.body_size = Some(size);
        }
        if let Some(v) = single(headers, CHUNKED)? {
            knobs.chunked = match v {
                "1" | "true" => true,
                "0" | "false" => false,
                other => return Err(format!("{CHUNKED}: expected 1 or 0, got {other:?}")),
            };
        }
        if let Some(v) = single(headers, ECHO)? {
            if v != "body" {
                return Err(format!("{ECHO}: expected \"body\", got {v:?}"));
            }
            knobs.echo_body = true;
        }
        knobs.headers = pairs(headers, HEADER)?;
        knobs.trailers = pairs(headers, TRAILER)?;
        if let Some(v) = single(headers, RESET)? {
            knobs.reset = Some(match v {
                "before-headers" => ResetPoint::BeforeHeaders,
                "after-headers" => ResetPoint::AfterHeaders,
                "mid-body" => ResetPoint::MidBody,
                other => {
                    return Err(format!(
                        "{RESET}: expected before-headers, after-headers or mid-body, got {other:?}"
                    ));
                }
            });
        }
        Ok(knobs)
    }
}

/// Distinct names of `pairs`, in first-seen order (for the `trailer` announcement).
pub(crate) fn unique_names(pairs: &[(HeaderName, HeaderValue)]) -> Vec<&HeaderName> {
    let mut names: Vec<&HeaderName> = Vec::new();
    for (name, _) in pairs {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name}: given more than once"));
    }
    value
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| format!("{name}: not visible ASCII"))
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: cannot parse {value:?}"))
}

/// Every `name: value` of a repeatable knob, in received order. The value keeps its raw bytes
/// (minus surrounding spaces/tabs), so a knob can produce a non-UTF-8 header.
fn pairs(headers: &HeaderMap, knob: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers
        .get_all(knob)
        .iter()
        .map(|raw| {
            let bytes = raw.as_bytes();
            let colon = bytes
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| format!("{knob}: expected \"name: value\""))?;
            let (name, rest) = bytes.split_at(colon);
            let value = rest.get(1..).unwrap_or_default().trim_ascii();
            let name = HeaderName::from_bytes(name.trim_ascii())
                .map_err(|_| format!("{knob}: invalid header name"))?;
            let value = HeaderValue::from_bytes(value)
                .map_err(|_| format!("{knob}: invalid header value"))?;
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn parses_every_knob() {
        let knobs = Knobs::from_headers(&map(&[
            (STATUS, b"503"),
            (DELAY_MS, b"50"),
            (BODY_SIZE, b"10"),
            (CHUNKED, b"1"),
            (ECHO, b"body"),
            (HEADER, b"x-a: 1"),
            (HEADER, b"X-A:  two words "),
            (TRAILER, b"x-t: \xff"),
            (RESET, b"mid-body"),
        ]))
        .unwrap();
        assert_eq!(knobs.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(knobs.delay, Duration::from_millis(50));
        assert_eq!(knobs.body_size, Some(10));
        assert!(knobs.chunked && knobs.echo_body);
        assert_eq!(knobs.headers.len(), 2);
        assert_eq!(knobs.headers[1].0, "x-a");
        assert_eq!(knobs.headers[1].1, "two words");
        assert_eq!(knobs.trailers[0].1.as_bytes(), b"\xff");
        assert_eq!(knobs.reset, Some(ResetPoint::MidBody));
    }

    #[test]
    fn rejects_malformed_knobs() {
        for bad in [
            map(&[(STATUS, b"abc")]),
            map(&[(STATUS, b"99")]),
            map(&[(STATUS, b"200"), (STATUS, b"201")]),
            map(&[(DELAY_MS, b"-1")]),
            map(&[(CHUNKED, b"yes")]),
            map(&[(ECHO, b"headers")]),
            map(&[(HEADER, b"no-colon")]),
            map(&[(HEADER, b"bad name: v")]),
            map(&[(RESET, b"later")]),
        ] {
            assert!(Knobs::from_headers(&bad).is_err(), "accepted {bad:?}");
        }
    }
}
