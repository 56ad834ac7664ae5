//! Plain-HTTP responses: the echo document, the knob-shaped variants of it (status, size,
//! chunking, trailers, resets), and the upstream's own answers (knob error, queue full,
//! injected failure).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, TRAILER};
use http::{Method, Response, StatusCode, Version};

use crate::body::{InjectedReset, RESET_PAUSE, ScriptBody, Step};
use crate::echo::{EchoDocument, pattern_body};
use crate::knob::{self, Knobs, ResetPoint, unique_names};

/// Number of pieces a body is cut into for `x-upstream-chunked: 1` (fewer if it is shorter).
pub const CHUNKS: usize = 4;

/// The response for a plain HTTP request whose body has been read in full.
pub(crate) fn echo(
    parts: &http::request::Parts,
    body: Bytes,
    trailers: Option<&HeaderMap>,
    knobs: &Knobs,
) -> Result<Response<ScriptBody>, InjectedReset> {
    if knobs.reset == Some(ResetPoint::BeforeHeaders) {
        return Err(InjectedReset);
    }
    let octets = "application/octet-stream";
    let (content, content_type) = if knobs.echo_body {
        (body, octets)
    } else if let Some(size) = knobs.body_size {
        (pattern_body(size), octets)
    } else {
        let document = EchoDocument::new(parts, &body, trailers);
        // Serializing strings and integers cannot fail; an empty body would show if it did.
        let json = serde_json::to_vec(&document).unwrap_or_default();
        (Bytes::from(json), "application/json")
    };
    let status = knobs.status.unwrap_or(StatusCode::OK);
    Ok(shape(parts, status, content_type, content, knobs))
}

/// `400` naming a malformed knob.
pub(crate) fn knob_error(parts: &http::request::Parts, message: &str) -> Response<ScriptBody> {
    let mut response = text(parts, StatusCode::BAD_REQUEST, format!("{message}\n"));
    response
        .headers_mut()
        .insert(knob::KNOB_ERROR, HeaderValue::from_static("1"));
    response
}

/// `503` with `x-upstream-queue-full: 1`.
pub(crate) fn queue_full(parts: &http::request::Parts) -> Response<ScriptBody> {
    let mut response = text(
        parts,
        StatusCode::SERVICE_UNAVAILABLE,
        "queue full\n".into(),
    );
    response
        .headers_mut()
        .insert(knob::QUEUE_FULL, HeaderValue::from_static("1"));
    response
}

/// An injected `status` failure: `injected failure\n`, `x-upstream-failure: injected`.
pub(crate) fn failure(parts: &http::request::Parts, status: StatusCode) -> Response<ScriptBody> {
    let mut response = text(parts, status, "injected failure\n".into());
    response
        .headers_mut()
        .insert(knob::FAILURE, HeaderValue::from_static("injected"));
    response
}

fn text(parts: &http::request::Parts, status: StatusCode, body: String) -> Response<ScriptBody> {
    let content = Bytes::from(body);
    shape(parts, status, "text/plain", content, &Knobs::default())
}

/// Applies the framing rules and the shaping knobs to `content`:
/// - 204 / 304: no body, no `content-length`, no trailers;
/// - HEAD: headers only, with the `content-length` a GET would get;
/// - `x-upstream-chunked` (or trailers over HTTP/1.x): [`CHUNKS`] data frames, no length;
/// - trailers are announced in a `trailer` header (HTTP/1.1 sends only announced ones);
/// - `after-headers` / `mid-body` resets replace the tail of the script.
fn shape(
    parts: &http::request::Parts,
    status: StatusCode,
    content_type: &'static str,
    content: Bytes,
    knobs: &Knobs,
) -> Response<ScriptBody> {
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let head = parts.method == Method::HEAD;
    let send_trailers = !knobs.trailers.is_empty() && !bodiless && !head;
    let chunked =
        !bodiless && (knobs.chunked || (send_trailers && parts.version < Version::HTTP_2));

    let mut headers = HeaderMap::new();
    if !bodiless && !knobs.headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let exact_len = (!bodiless && !chunked).then(|| u64::try_from(content.len()).unwrap_or(0));
    if let Some(len) = exact_len {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    if send_trailers {
        let names: Vec<&str> = unique_names(&knobs.trailers)
            .into_iter()
            .map(|name| name.as_str())
            .collect();
        if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
            headers.insert(TRAILER, value);
        }
    }
    for (name, value) in &knobs.headers {
        headers.append(name.clone(), value.clone());
    }

    let mut steps = Vec::new();
    match knobs.reset {
        Some(ResetPoint::AfterHeaders) => steps.extend([Step::Pause(RESET_PAUSE), Step::Reset]),
        Some(ResetPoint::MidBody) => {
            let half = content.slice(..content.len() / 2);
            if !half.is_empty() {
                steps.push(Step::Data(half));
            }
            steps.extend([Step::Pause(RESET_PAUSE), Step::Reset]);
        }
        None | Some(ResetPoint::BeforeHeaders) if bodiless || head => {}
        None | Some(ResetPoint::BeforeHeaders) => {
            if chunked {
                let piece = content.len().div_ceil(CHUNKS).max(1);
                let mut at = 0;
                while at < content.len() {
                    let end = content.len().min(at.saturating_add(piece));
                    steps.push(Step::Data(content.slice(at..end)));
                    at = end;
                }
            } else if !content.is_empty() {
                steps.push(Step::Data(content));
            }
            if send_trailers {
                let mut trailers = HeaderMap::new();
                for (name, value) in &knobs.trailers {
                    trailers.append(name.clone(), value.clone());
                }
                steps.push(Step::Trailers(trailers));
            }
        }
    }

    let mut response = Response::new(ScriptBody::new(steps, exact_len));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
