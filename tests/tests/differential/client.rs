//! The client of the Envoy runner: h2c with prior knowledge (hyper), one connection per
//! request, frame by frame so a reset after the response headers is seen (with what arrived
//! before it) rather than lost in an error.
//!
//! HTTP/2 is used because it shows the connection manager's own output: the HTTP/1.1 codec
//! adds framing headers (`content-length: 0`, `transfer-encoding`) that are not filter
//! behaviour.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::observe::Outcome;
use crate::scenario::Request;

/// The `:authority` of every request.
pub const AUTHORITY: &str = "differential.test";

/// Bound on every wait for the server.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Sends `r` over HTTP/1.1 (`content-length` framing) with the harness's byte-exact client.
pub async fn send_h1(addr: SocketAddr, r: &Request) -> Outcome {
    assert!(r.trailers.is_empty(), "the HTTP/1.1 path sends no trailers");
    let body: Vec<u8> = r.body.concat();
    let len = body.len().to_string();
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", AUTHORITY.as_bytes())];
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())));
    if !body.is_empty() {
        headers.push((b"content-length", len.as_bytes()));
    }
    let mut bytes = meshguard_tests::h1::head(&r.method, &r.path, &headers);
    bytes.extend_from_slice(&body);
    match meshguard_tests::h1::exchange(addr, &bytes).await {
        Ok(resp) => Outcome::new(
            Some(resp.status),
            resp.headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())),
            &resp.body,
            resp.trailers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())),
            false,
        ),
        Err(_) => Outcome::new(None, [], b"", [], true),
    }
}

/// Sends `r` on a fresh h2c connection to `addr`; returns what the client saw.
pub async fn send(addr: SocketAddr, r: &Request) -> Outcome {
    let stream = TcpStream::connect(addr).await.expect("connect to Envoy");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let driver = tokio::spawn(conn);

    let mut req = http::Request::builder()
        .method(r.method.as_str())
        .uri(format!("http://{AUTHORITY}{}", r.path))
        .version(http::Version::HTTP_2);
    for (k, v) in &r.headers {
        req = req.header(
            k.as_str(),
            http::HeaderValue::from_bytes(v).expect("header value"),
        );
    }
    let mut frames: VecDeque<Frame<Bytes>> = r
        .body
        .iter()
        .map(|c| Frame::data(Bytes::from(c.clone())))
        .collect();
    if !r.trailers.is_empty() {
        let mut map = http::HeaderMap::new();
        for (k, v) in &r.trailers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("trailer name"),
                http::HeaderValue::from_str(v).expect("trailer value"),
            );
        }
        frames.push_back(Frame::trailers(map));
    }
    let body = Frames(frames);
    let req = req.body(body).expect("request");

    let outcome = match tokio::time::timeout(TIMEOUT, sender.send_request(req)).await {
        Err(_) => panic!("no response from Envoy within {TIMEOUT:?}"),
        Ok(Err(_)) => Outcome::new(None, [], b"", [], true),
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let headers = pairs(resp.headers());
            let mut body = resp.into_body();
            let (mut data, mut trailers, mut reset) = (Vec::new(), Vec::new(), false);
            loop {
                match tokio::time::timeout(TIMEOUT, body.frame()).await {
                    Err(_) => panic!("response body from Envoy stalled for {TIMEOUT:?}"),
                    Ok(None) => break,
                    Ok(Some(Err(_))) => {
                        reset = true;
                        break;
                    }
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(d) => data.extend_from_slice(&d),
                        Err(frame) => {
                            if let Ok(t) = frame.into_trailers() {
                                trailers = pairs(&t);
                            }
                        }
                    },
                }
            }
            Outcome::new(Some(status), headers, &data, trailers, reset)
        }
    };
    driver.abort();
    outcome
}

/// Body frames that report the end of the stream as soon as the last one is taken, so the
/// last DATA frame (or the HEADERS frame, without a body) carries END_STREAM — as a real
/// client's request does — instead of an extra empty DATA frame.
#[derive(Debug)]
pub struct Frames(pub VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
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
