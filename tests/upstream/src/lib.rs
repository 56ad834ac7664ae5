//! `meshguard-upstream`: the controllable upstream every meshguard end-to-end test and
//! benchmark puts behind stock Envoy.
//!
//! It echoes exactly what it received (so a test can compare what the upstream saw with and
//! without a filter), and it has knobs for latency, capacity and failures. One listener serves
//! HTTP/1.1, h2c (prior knowledge, detected per connection) and gRPC (by
//! `content-type: application/grpc`).
//!
//! # Default response: the echo document
//!
//! `200`, `content-type: application/json`, body an [`EchoDocument`]:
//!
//! ```json
//! {"method":"POST","uri":"/x?y=1","version":"HTTP/1.1",
//!  "headers":[["host","127.0.0.1:8080"],["x-a","1"],["x-a","2"]],
//!  "trailers":[],"body_len":3,"body_sha256":"ba7816bf..."}
//! ```
//!
//! Values are lossless strings ([`encode_lossless`]: printable ASCII as-is, `\` as `\\`, any
//! other byte as `\xNN`). Header order is hyper's: names in first-received order, repeated
//! values as separate entries in received order, grouped under the name's first occurrence.
//!
//! # Per-request knobs (request headers, or gRPC metadata)
//!
//! | header | effect |
//! |---|---|
//! | `x-upstream-status: 503` | response status (200..=599); 204/304 carry no body |
//! | `x-upstream-delay-ms: 50` | extra service time on top of the configured latency |
//! | `x-upstream-body-size: N` | body = N bytes of [`pattern_body`] instead of the echo document |
//! | `x-upstream-chunked: 1` | body sent as [`CHUNKS`] frames without `content-length` (HTTP/1.1: chunked) |
//! | `x-upstream-echo: body` | body = the request body, byte for byte (wins over body-size) |
//! | `x-upstream-header: name: value` | add a response header (repeatable, order kept per name) |
//! | `x-upstream-trailer: name: value` | add a response trailer (repeatable); HTTP/1.1: forces chunked, and needs `te: trailers` in the request (hyper's rule) |
//! | `x-upstream-reset: before-headers` | no response: HTTP/1.1 closes the connection, h2 sends `RST_STREAM` |
//! | `x-upstream-reset: after-headers` | headers, then the reset (after [`RESET_PAUSE`]) |
//! | `x-upstream-reset: mid-body` | headers + half the body (gRPC: half the messages), then the reset |
//!
//! HEAD gets headers only, with the `content-length` a GET would get. A malformed knob is
//! answered `400` with `x-upstream-knob-error: 1`. For gRPC, `x-upstream-status` sends that
//! HTTP status with no `grpc-status`; body-shaping knobs are ignored; trailers are added to
//! the gRPC trailers. Header names are in [`knob`].
//!
//! # Upstream-wide knobs ([`UpstreamConfig`])
//!
//! | field | meaning |
//! |---|---|
//! | `seed` | seed of every random draw (default 0) |
//! | `latency` | `none` / `fixed{ms}` / `lognormal{median_ms, sigma}`: service time, from slot grant |
//! | `capacity` | `{concurrency: N, queue: unbounded \| bounded(M)}`: N slots, strict FIFO queue, `503` + `x-upstream-queue-full: 1` when full |
//! | `failure` | `{rate, kind: status(code) \| reset \| grpc(code), windows: [{from_ms, to_ms, kind}]}` |
//!
//! A request's fate is decided in this order: knob errors (`400`); queue full (`503`); wait for
//! a slot; read the body; service time (latency + `x-upstream-delay-ms`); injected failure
//! (decided at arrival: window first, else the seeded draw); otherwise the knob-shaped reply.
//!
//! # Control endpoints
//!
//! Paths under `/_upstream/` are reserved; see [`control`] (`GET /_upstream/stats`,
//! `PUT /_upstream/config`, ...).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use meshguard_upstream::{Latency, Upstream, UpstreamConfig};
//!
//! let up = Upstream::start(UpstreamConfig::default()).await?;
//! println!("echo at http://{}", up.addr());
//! up.set_config(UpstreamConfig {
//!     latency: Latency::Fixed { ms: 20 },
//!     ..UpstreamConfig::default()
//! })?;
//! assert_eq!(up.stats().received, 0);
//! drop(up); // stops the server and aborts its tasks
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

mod body;
pub mod config;
pub mod control;
mod echo;
pub mod grpc;
pub mod knob;
mod reply;
mod runtime;
mod service;
mod stats;

pub use body::{InjectedReset, RESET_PAUSE, ScriptBody};
pub use config::{Capacity, Failure, FailureKind, FailureWindow, Latency, Queue, UpstreamConfig};
pub use echo::{
    EchoDocument, decode_lossless, encode_lossless, header_pairs, pattern_body, sha256_hex,
};
pub use reply::CHUNKS;
pub use stats::Stats;

use runtime::Runtime;
use stats::StatsCell;

/// A running upstream. Dropping it stops the server: the accept loop, every connection and
/// every in-progress request are aborted.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Tasks,
    accept: JoinHandle<()>,
}

/// State shared by the handle and every request.
#[derive(Debug)]
pub(crate) struct Shared {
    stats: Arc<StatsCell>,
    runtime: Mutex<Arc<Runtime>>,
}

impl Shared {
    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(&self.runtime.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set_config(&self, config: UpstreamConfig) -> anyhow::Result<()> {
        let mut current = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        *current = Arc::new(Runtime::new(config, Some(&current))?);
        Ok(())
    }
}

impl Upstream {
    /// Starts an upstream on `127.0.0.1:0` (an ephemeral port; see [`Upstream::addr`]).
    ///
    /// # Errors
    ///
    /// An invalid config, or binding fails.
    pub async fn start(config: UpstreamConfig) -> anyhow::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts an upstream listening on `addr`.
    ///
    /// # Errors
    ///
    /// An invalid config, or binding fails.
    pub async fn bind(addr: SocketAddr, config: UpstreamConfig) -> anyhow::Result<Self> {
        let runtime = Runtime::new(config, None)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stats: Arc::new(StatsCell::default()),
            runtime: Mutex::new(Arc::new(runtime)),
        });
        let tasks = Tasks::default();
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), tasks.clone()));
        Ok(Self {
            addr,
            shared,
            tasks,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Zeroes the cumulative counters (requests alive stay counted as received).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// The config in force.
    pub fn config(&self) -> UpstreamConfig {
        self.shared.runtime().config.clone()
    }

    /// Replaces the config for requests arriving from now on; restarts the failure-window
    /// clock and reseeds the RNGs. Worker slots (and their queue) are kept when `capacity` is
    /// unchanged; otherwise new slots apply to new arrivals while already-queued requests
    /// drain through the old ones.
    ///
    /// # Errors
    ///
    /// The config is invalid ([`UpstreamConfig::validate`]); the old one stays in force.
    pub fn set_config(&self, config: UpstreamConfig) -> anyhow::Result<()> {
        self.shared.set_config(config)
    }

    /// Polls [`Upstream::stats`] every few milliseconds until `condition` holds, for at most
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// The timeout expires; the error shows the last snapshot.
    pub async fn wait_for_stats(
        &self,
        timeout: Duration,
        condition: impl Fn(&Stats) -> bool,
    ) -> anyhow::Result<Stats> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return Ok(stats);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("condition not met within {timeout:?}; last stats: {stats:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
        self.tasks.abort_all();
    }
}

/// Every task the server spawns (connections and hyper's per-h2-stream tasks), so dropping the
/// [`Upstream`] can abort them all. Also hyper's executor.
#[derive(Clone, Debug, Default)]
struct Tasks(Arc<Mutex<JoinSet<()>>>);

impl Tasks {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap finished tasks so the set does not grow with the connection count.
        while set.try_join_next().is_some() {}
        set.spawn(future);
    }

    fn abort_all(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
    }
}

impl<F> hyper::rt::Executor<F> for Tasks
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(future);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tasks: Tasks) {
    let mut builder = auto::Builder::new(tasks.clone());
    // hyper's default of 100 request headers is below what a sidecar forwards for a client that
    // sends 100 (Envoy adds x-forwarded-proto, x-request-id, ...); Envoy's own limit applies
    // first, so this upstream accepts whatever Envoy lets through.
    builder.http1().timer(TokioTimer::new()).max_headers(1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Queueing is the capacity model's job, not the h2 stream limit's.
        .max_concurrent_streams(None);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let builder = builder.clone();
        tasks.spawn(async move {
            let service = service_fn(move |request| service::handle(Arc::clone(&shared), request));
            // Connection errors (client resets, injected resets) end just this connection.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
