//! Real clients (hyper HTTP/1.1, hyper h2c prior knowledge, raw TCP) and small helpers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshguard_upstream::{EchoDocument, Upstream, UpstreamConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Body = BoxBody<Bytes, Infallible>;

/// Generous bound for any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

pub const BOTH: [Proto; 2] = [Proto::H1, Proto::H2];

pub async fn start(config: UpstreamConfig) -> Upstream {
    Upstream::start(config).await.unwrap()
}

pub fn empty() -> Body {
    Empty::new().boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed()
}

/// A request builder with the right target form: origin-form + `host` for HTTP/1.1,
/// absolute-form for h2 (`:scheme` and `:authority`).
pub fn request(
    proto: Proto,
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> http::request::Builder {
    match proto {
        Proto::H1 => Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string()),
        Proto::H2 => Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .version(http::Version::HTTP_2),
    }
}

/// Sends one request on a fresh connection.
pub async fn send(
    proto: Proto,
    addr: SocketAddr,
    request: Request<Body>,
) -> Result<Response<Incoming>, hyper::Error> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    match proto {
        Proto::H1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
        Proto::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
    }
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    pub data_frames: usize,
}

impl Reply {
    pub fn doc(&self) -> EchoDocument {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Reads a response body to the end, counting data frames. On error, returns the bytes read
/// so far with the error.
pub async fn read(response: Response<Incoming>) -> Result<Reply, (Bytes, hyper::Error)> {
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = None;
    let mut data_frames = 0;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return Err((data.freeze(), e)),
        };
        match frame.into_data() {
            Ok(chunk) => {
                data_frames += 1;
                data.extend_from_slice(&chunk);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: data.freeze(),
        trailers,
        data_frames,
    })
}

/// Sends and reads to the end; panics on any transport error.
pub async fn exchange(proto: Proto, addr: SocketAddr, request: Request<Body>) -> Reply {
    let response = send(proto, addr, request).await.unwrap();
    read(response).await.map_err(|(_, e)| e).unwrap()
}

/// `GET path` with extra headers, read to the end.
pub async fn get(proto: Proto, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = request(proto, addr, Method::GET, path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    exchange(proto, addr, builder.body(empty()).unwrap()).await
}

/// Writes `raw` on a new TCP connection and reads until the peer closes or `until` matches
/// the bytes read so far.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8], until: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    read_until(&mut stream, until).await
}

pub async fn read_until(stream: &mut TcpStream, until: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !until(&out) {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("raw read timed out");
    out
}

/// Waits until every request the upstream received has ended.
pub async fn drained(up: &Upstream) -> meshguard_upstream::Stats {
    up.wait_for_stats(WAIT, |s| {
        s.completed == s.received && s.in_flight == 0 && s.queued == 0
    })
    .await
    .unwrap()
}
