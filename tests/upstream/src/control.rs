//! Control endpoints on the serving port, for a test or benchmark driving a separate
//! `meshguard-upstream` process. Every path under `/_upstream/` is reserved (never echoed,
//! never counted in [`crate::Stats`]):
//!
//! | request                  | effect                                              |
//! |--------------------------|-----------------------------------------------------|
//! | `GET /_upstream/stats`   | `200`, JSON [`crate::Stats`]                        |
//! | `DELETE /_upstream/stats`| `204`, zero the counters ([`crate::Upstream::reset_stats`]) |
//! | `GET /_upstream/config`  | `200`, JSON [`crate::UpstreamConfig`] in force      |
//! | `PUT /_upstream/config`  | body = JSON config; `204`, or `400` with the reason |

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::ScriptBody;
use crate::{Shared, UpstreamConfig};

/// Reserved path prefix.
pub const PREFIX: &str = "/_upstream/";
/// Stats endpoint.
pub const STATS_PATH: &str = "/_upstream/stats";
/// Config endpoint.
pub const CONFIG_PATH: &str = "/_upstream/config";

pub(crate) async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<ScriptBody> {
    let method = request.method().clone();
    match (request.uri().path(), method) {
        (STATS_PATH, Method::GET) => json(&shared.stats.snapshot()),
        (STATS_PATH, Method::DELETE) => {
            shared.stats.reset();
            empty(StatusCode::NO_CONTENT)
        }
        (CONFIG_PATH, Method::GET) => json(&shared.runtime().config),
        (CONFIG_PATH, Method::PUT) => {
            let body = match request.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading body: {e}\n")),
            };
            let parsed = std::str::from_utf8(&body)
                .map_err(anyhow::Error::from)
                .and_then(UpstreamConfig::from_json)
                .and_then(|config| shared.set_config(config));
            match parsed {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e:#}\n")),
            }
        }
        (STATS_PATH | CONFIG_PATH, _) => empty(StatusCode::METHOD_NOT_ALLOWED),
        _ => text(StatusCode::NOT_FOUND, "unknown control endpoint\n".into()),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response<ScriptBody> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(StatusCode::OK, "application/json", body.into()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn text(status: StatusCode, message: String) -> Response<ScriptBody> {
    with_type(status, "text/plain", message.into())
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ScriptBody> {
    let mut response = Response::new(ScriptBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn empty(status: StatusCode) -> Response<ScriptBody> {
    let mut response = Response::new(ScriptBody::default());
    *response.status_mut() = status;
    response
}
