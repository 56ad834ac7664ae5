//! Hand-written server side of `meshguard.test.v1.Echo`: length-prefixed framing, the two
//! methods, and the exact response shape (200 + headers, messages, trailers).

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, TRAILER};
use http::{Response, StatusCode};
use prost::Message;

use super::{EchoRequest, EchoResponse, KeyValue, SERVER_STREAM_PATH, UNARY_PATH};
use crate::body::{InjectedReset, RESET_PAUSE, ScriptBody, Step};
use crate::echo::header_pairs;
use crate::knob::{Knobs, ResetPoint, unique_names};

/// gRPC status codes used here.
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;

/// Whether a request is gRPC (`content-type: application/grpc` or `application/grpc+...`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// Answers one gRPC call whose request body has been read in full.
pub(crate) async fn respond(
    parts: &http::request::Parts,
    body: &[u8],
    knobs: &Knobs,
) -> Result<Response<ScriptBody>, InjectedReset> {
    if knobs.reset == Some(ResetPoint::BeforeHeaders) {
        return Err(InjectedReset);
    }
    if let Some(status) = knobs.status {
        // A non-200 from a "gRPC server": headers only, no grpc-status anywhere.
        return Ok(with_headers(status, knobs, Vec::new()));
    }
    let unary = match parts.uri.path() {
        UNARY_PATH => true,
        SERVER_STREAM_PATH => false,
        other => {
            let message = format!("unknown method {other}");
            return Ok(finish(knobs, Vec::new(), UNIMPLEMENTED, &message));
        }
    };
    let request = match decode(body) {
        Ok(request) => request,
        Err(message) => return Ok(finish(knobs, Vec::new(), INTERNAL, &message)),
    };
    let metadata: Vec<KeyValue> = header_pairs(&parts.headers)
        .into_iter()
        .map(|(key, value)| KeyValue { key, value })
        .collect();
    let response = |seq: u32| EchoResponse {
        message: request.message.clone(),
        seq,
        metadata: metadata.clone(),
        payload: request.payload.clone(),
    };
    let delay = Duration::from_millis(u64::from(request.delay_ms));
    let status = u32::try_from(request.grpc_status).unwrap_or(u32::MAX);
    let mut messages = Vec::new();
    if unary {
        // The unary delay is service time: it comes before the response headers.
        tokio::time::sleep(delay).await;
        if status == 0 {
            messages.push(Step::Data(frame(&response(0))));
        }
    } else {
        let sent = request
            .fail_after
            .map_or(request.count, |n| n.min(request.count));
        for seq in 0..sent {
            if !delay.is_zero() {
                messages.push(Step::Pause(delay));
            }
            messages.push(Step::Data(frame(&response(seq))));
        }
    }
    Ok(finish(knobs, messages, status, &request.grpc_message))
}

/// HTTP 200, `content-type: application/grpc`, no message, trailers with `code`: the shape of
/// an injected `grpc` failure (also used for non-gRPC requests).
pub(crate) fn failure(code: u32, message: &str) -> Response<ScriptBody> {
    finish(&Knobs::default(), Vec::new(), code, message)
}

/// 200 + headers, the message steps, then trailers with the status (or the knob's reset).
fn finish(knobs: &Knobs, messages: Vec<Step>, code: u32, message: &str) -> Response<ScriptBody> {
    let mut steps = messages;
    match knobs.reset {
        None | Some(ResetPoint::BeforeHeaders) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(code));
            if !message.is_empty()
                && let Ok(value) = HeaderValue::from_str(&percent_encode(message))
            {
                trailers.insert("grpc-message", value);
            }
            for (name, value) in &knobs.trailers {
                trailers.append(name.clone(), value.clone());
            }
            steps.push(Step::Trailers(trailers));
        }
        Some(ResetPoint::AfterHeaders) => {
            steps = vec![Step::Pause(RESET_PAUSE), Step::Reset];
        }
        Some(ResetPoint::MidBody) => {
            // Keep the first half (rounded up) of the messages, then reset before the trailers.
            let total = steps.iter().filter(|s| matches!(s, Step::Data(_))).count();
            let mut keep = total.div_ceil(2);
            let cut = steps
                .iter()
                .position(|s| {
                    if matches!(s, Step::Data(_)) {
                        if keep == 0 {
                            return true;
                        }
                        keep -= 1;
                    }
                    false
                })
                .unwrap_or(steps.len());
            steps.truncate(cut);
            steps.extend([Step::Pause(RESET_PAUSE), Step::Reset]);
        }
    }
    let mut response = with_headers(StatusCode::OK, knobs, steps);
    // HTTP/1.1 only sends trailers that the `trailer` header announces.
    let mut announced = String::from("grpc-status, grpc-message");
    for name in unique_names(&knobs.trailers) {
        let _ = write!(announced, ", {name}");
    }
    if let Ok(value) = HeaderValue::from_str(&announced) {
        response.headers_mut().insert(TRAILER, value);
    }
    response
}

fn with_headers(status: StatusCode, knobs: &Knobs, steps: Vec<Step>) -> Response<ScriptBody> {
    let mut response = Response::new(ScriptBody::new(steps, None));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    for (name, value) in &knobs.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}

/// One length-prefixed message: flag 0 (uncompressed), big-endian u32 length, protobuf bytes.
fn frame(message: &EchoResponse) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(len.saturating_add(5));
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer reserved for `encoded_len` bytes cannot run out of space.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// Exactly one uncompressed message, as both methods take.
fn decode(body: &[u8]) -> Result<EchoRequest, String> {
    let (header, rest) = body
        .split_first_chunk::<5>()
        .ok_or("request body shorter than a gRPC frame header")?;
    let [flag, len @ ..] = *header;
    if flag != 0 {
        return Err("compressed requests are not supported".into());
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if rest.len() != len {
        return Err(format!(
            "expected exactly one message of {len} bytes, got {} bytes after the frame header",
            rest.len()
        ));
    }
    EchoRequest::decode(rest).map_err(|e| format!("cannot decode EchoRequest: {e}"))
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%`, become `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let request = EchoRequest {
            message: "hi".into(),
            count: 3,
            fail_after: Some(1),
            ..EchoRequest::default()
        };
        let mut body = vec![0u8];
        body.extend_from_slice(&u32::try_from(request.encoded_len()).unwrap().to_be_bytes());
        body.extend_from_slice(&request.encode_to_vec());
        assert_eq!(decode(&body).unwrap(), request);
        assert!(decode(&body[..body.len() - 1]).is_err());
        assert!(decode(&[1, 0, 0, 0, 0]).is_err());
        assert!(decode(&[0, 0]).is_err());
        assert_eq!(percent_encode("a b%\u{e9}"), "a b%25%C3%A9");
    }
}
