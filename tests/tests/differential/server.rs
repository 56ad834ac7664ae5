//! The endpoint behind each cluster of the Envoy runner: an h2c server (hyper) on a free
//! loopback port that records every request and answers with the scenario's fixed
//! [`Reply`]. (hyper's `server` feature reaches this crate through `meshguard-upstream`.)

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client::Frames;
use crate::scenario::Server as Spec;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

/// A running server; stops on drop.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(spec: Spec) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (spec, log) = (spec.clone(), Arc::clone(&log));
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, spec.clone(), Arc::clone(&log)));
                    // No `date`: Envoy forwards the upstream's headers, and a clock value would
                    // differ between the runners.
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .auto_date_header(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.seen.lock().expect("lock").clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Boxed = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>,
>;
type Body = http_body_util::Either<Frames, StreamBody<Boxed>>;

async fn handle(
    req: http::Request<Incoming>,
    spec: Spec,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<http::Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.ok();
    let trailers = collected
        .as_ref()
        .and_then(|c| c.trailers())
        .map(pairs)
        .unwrap_or_default();
    let body = collected.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
    log.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".into(), ToString::to_string),
        authority: parts
            .uri
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default(),
        headers: pairs(&parts.headers),
        body,
        trailers,
    });
    let (reply, reset) = match spec {
        Spec::Reply(r) => (r, false),
        Spec::ResetAfterHeaders(r) => (r, true),
        Spec::ResetBeforeHeaders | Spec::Down => {
            return Err(std::io::Error::other("reset before headers"));
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = http::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k.as_str(), v.as_str());
    }
    let mut frames = VecDeque::new();
    if !reply.body.is_empty() {
        frames.push_back(Frame::data(Bytes::from(reply.body.clone())));
    }
    if reset {
        // The h2 crate drops a stream's queued frames when it is reset: let the headers and
        // data leave first.
        let first = futures_util::stream::iter(frames.into_iter().map(Ok));
        let late = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Err(std::io::Error::other("reset after headers"))
        });
        let stream = Box::pin(futures_util::StreamExt::chain(first, late)) as Boxed;
        return Ok(resp
            .body(http_body_util::Either::Right(StreamBody::new(stream)))
            .expect("response"));
    }
    if !reply.trailers.is_empty() {
        let mut map = http::HeaderMap::new();
        for (k, v) in &reply.trailers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("trailer name"),
                http::HeaderValue::from_str(v).expect("trailer value"),
            );
        }
        frames.push_back(Frame::trailers(map));
    }
    let body = http_body_util::Either::Left(Frames(frames));
    Ok(resp.body(body).expect("response"))
}

fn pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
