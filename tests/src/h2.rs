//! An HTTP/2 client (h2c with prior knowledge, hyper) that returns trailers too.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::response::Response;

/// The `:authority` of every request this client sends.
pub const AUTHORITY: &str = "meshguard.test";

/// A request body: data frames, then optional trailers.
#[derive(Clone, Debug, Default)]
pub struct RequestBody {
    /// Data frames in order (each becomes at least one DATA frame).
    pub chunks: Vec<Vec<u8>>,
    /// Request trailers.
    pub trailers: Vec<(String, Vec<u8>)>,
}

/// One request on a fresh h2c connection.
///
/// `headers` are sent as given (HTTP/2 requires lower-case names; values may be any bytes
/// HTTP allows, including obs-text). The `:authority` is [`AUTHORITY`], whatever the address,
/// so requests to different listeners are byte-identical.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: RequestBody,
) -> Result<Response> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);

    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = body
        .chunks
        .into_iter()
        .map(|c| Ok(Frame::data(Bytes::from(c))))
        .collect();
    if !body.trailers.is_empty() {
        let mut map = http::HeaderMap::new();
        for (k, v) in &body.trailers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes())?,
                http::HeaderValue::from_bytes(v)?,
            );
        }
        frames.push(Ok(Frame::trailers(map)));
    }
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{AUTHORITY}{path}"))
        .version(http::Version::HTTP_2);
    for (k, v) in headers {
        req = req.header(*k, http::HeaderValue::from_bytes(v)?);
    }
    let req = req.body(StreamBody::new(futures_util::stream::iter(frames)))?;
    let resp = tokio::time::timeout(crate::h1::READ_TIMEOUT, sender.send_request(req))
        .await
        .context("response timed out")??;
    let status = resp.status().as_u16();
    let headers = pairs(resp.headers());
    let collected = tokio::time::timeout(crate::h1::READ_TIMEOUT, resp.into_body().collect())
        .await
        .context("body timed out")??;
    let trailers = collected.trailers().map(pairs).unwrap_or_default();
    let body = collected.to_bytes().to_vec();
    driver.abort();
    Ok(Response {
        interim: Vec::new(),
        status,
        headers,
        body,
        trailers,
    })
}

fn pairs(map: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}
