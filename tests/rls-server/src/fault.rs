//! Failure injection, for testing RLS clients (timeouts, failure modes, malformed answers).
//!
//! A [`FaultMode`] is set at runtime on the handle ([`RlsServer::set_fault`]) and applies to
//! every `ShouldRateLimit` call that arrives while it is in force; it acts at the HTTP/2 layer,
//! before the call reaches the rate-limit logic, so a faulted call counts no hits (except
//! [`FaultMode::Delay`], which answers normally after the delay).
//!
//! [`RlsServer::set_fault`]: crate::RlsServer::set_fault

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

/// How the server misbehaves; [`FaultMode::None`] (the default) is correct service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FaultMode {
    /// Answer correctly.
    #[default]
    None,
    /// Wait this long, then answer correctly (hits are counted when the answer is computed).
    Delay(Duration),
    /// Accept the call and never answer (until the client gives up or the server stops).
    Hang,
    /// Answer with this gRPC status (trailers-only, HTTP 200), e.g. `Code::Unavailable`.
    Status(tonic::Code),
    /// Answer gRPC status OK with a body that is not a `RateLimitResponse` (a length-prefixed
    /// message of bytes that do not decode).
    Garbage,
    /// Answer a plain (non-gRPC) HTTP response with this status, e.g. 503.
    Http(u16),
    /// Reset the HTTP/2 stream without answering.
    Reset,
}

/// The bytes of a message that does not decode as protobuf: field 15, wire type 7 (which does
/// not exist), then an unterminated varint.
pub const GARBAGE_MESSAGE: &[u8] = &[0x7f, 0xff, 0xff, 0xff];

pub(crate) type FaultBody = tonic::body::Body;

/// A trailers-only gRPC response with `code`.
pub(crate) fn grpc_status(code: tonic::Code) -> Response<FaultBody> {
    let mut response = Response::new(FaultBody::empty());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("injected%20by%20meshguard-rls%20fault%20mode"),
    );
    response
}

/// gRPC OK with a message that does not decode.
pub(crate) fn garbage() -> Response<FaultBody> {
    let mut frame = Vec::with_capacity(5 + GARBAGE_MESSAGE.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(
        &u32::try_from(GARBAGE_MESSAGE.len())
            .unwrap_or(0)
            .to_be_bytes(),
    );
    frame.extend_from_slice(GARBAGE_MESSAGE);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(frame)).with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut response = Response::new(FaultBody::new(body));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

/// A plain-text HTTP response.
pub(crate) fn http(status: u16) -> Response<FaultBody> {
    let mut response = Response::new(FaultBody::new(Full::new(Bytes::from_static(
        b"injected by meshguard-rls fault mode\n",
    ))));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    response
}
