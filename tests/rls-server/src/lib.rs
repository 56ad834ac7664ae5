//! `meshguard-rls`: a small Envoy Rate Limit Service (RLS v3) for meshguard's tests,
//! benchmarks and demo, and for users who do not run one.
//!
//! It serves `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over h2c, the
//! protocol of Envoy's `envoy.filters.http.ratelimit` filter and of meshguard's `rate_limit`
//! filter in global mode. Production deployments point those filters at
//! [envoyproxy/ratelimit](https://github.com/envoyproxy/ratelimit) or
//! [Limitador](https://github.com/Kuadrant/limitador) unchanged: this server speaks the same
//! protocol and reads Limitador's limits file ([`limits`] has the format).
//!
//! # Counting
//!
//! Fixed windows that start at a counter's first hit, all or nothing per request (a request is
//! admitted only if every counter it touches has room, and then all are incremented; a
//! rejected request counts nothing):
//! - [`Storage::Memory`]: the `limitador` crate's in-memory storage; limits hold for this
//!   process.
//! - [`Storage::Redis`]: one atomic Lua script per request (`INCRBY` + `EXPIRE` on first hit)
//!   in a shared Redis; every server using that Redis enforces the same limits together.
//!
//! # Matching and answers
//!
//! As Limitador's RLS server: the request's `domain` picks the namespace, its descriptors are
//! bound as the CEL list `descriptors` (each descriptor a map from entry key to value), and a
//! limit applies when all its conditions hold and all its variables resolve. A condition or
//! variable that cannot be evaluated (a missing key, `descriptors[1]` of a one-descriptor
//! request, a type error) makes the limit not apply; limitador's own `Limit::applies` panics
//! on the latter kinds, so conditions are evaluated here with limitador's CEL types.
//!
//! - `overall_code`: `OVER_LIMIT` when any applying counter lacked room for `hits_addend`
//!   (0 counts as 1), else `OK` — also for an unknown domain, which has no limits. An empty
//!   `domain` is answered `UNKNOWN` with no statuses, as Limitador does.
//! - `statuses`: one per request descriptor, in order. A descriptor's status reports the most
//!   constrained counter (over first, then least remaining) among the limits that read that
//!   descriptor — by the `descriptors[N]` in their conditions and variables; a limit that
//!   reads no descriptor counts for every one: `OVER_LIMIT` if that counter lacked room,
//!   `current_limit` (`max_value` per `SECOND`/`MINUTE`/`HOUR`/`DAY` when `seconds` is exactly
//!   1/60/3600/86400, else unit `UNKNOWN`; the limit's `name`), `limit_remaining` after this
//!   request, `duration_until_reset` (time left in the counter's window). A descriptor that no
//!   applying limit reads gets a bare `OK`, as envoyproxy/ratelimit answers.
//! - A storage failure (Redis down) is answered gRPC `UNAVAILABLE`, so the client applies its
//!   failure mode (as Limitador).
//!
//! Not implemented: per-descriptor `limit` overrides and per-descriptor `hits_addend` (ignored,
//! as Limitador does), `response_headers_to_add` (Envoy builds the `x-ratelimit-*` headers
//! itself from the statuses), `quota`, and reloading the limits file.
//!
//! # Fault injection
//!
//! [`RlsServer::set_fault`] makes later calls slow, hang, fail with a gRPC status, return a
//! body that does not decode, return plain HTTP, or reset the stream ([`FaultMode`]), for
//! testing RLS clients.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use meshguard_rls::{FaultMode, Limits, RlsServer, Storage};
//!
//! let limits = Limits::from_yaml(
//!     "- {namespace: demo, max_value: 2, seconds: 60, conditions: [], variables: []}",
//! )?;
//! let server = RlsServer::start(limits, Storage::memory()).await?; // 127.0.0.1:0
//! let mut client = meshguard_rls::client(server.addr()).await?;
//! let response = client
//!     .should_rate_limit(meshguard_rls::request("demo", &[&[("k", "v")]], 1))
//!     .await?
//!     .into_inner();
//! assert_eq!(response.overall_code(), meshguard_rls::Code::Ok);
//! server.set_fault(FaultMode::Hang); // later calls never get an answer
//! assert_eq!(server.stats().requests, 1);
//! drop(server); // stops serving, aborts every task
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod check;
mod fault;
pub mod limits;
pub mod proto;
mod redis_server;
mod server;
mod stats;
mod storage;

pub use fault::{FaultMode, GARBAGE_MESSAGE};
pub use limits::{LimitDef, Limits, LimitsError};
pub use proto::rls::rate_limit_response::Code;
pub use redis_server::{REDIS_STARTUP_TIMEOUT, RedisServer};
pub use server::SHOULD_RATE_LIMIT_PATH;
pub use stats::Stats;
pub use storage::Storage;

use proto::descriptor::RateLimitDescriptor;
use proto::descriptor::rate_limit_descriptor::Entry;
use proto::rls::RateLimitRequest;
use proto::rls::rate_limit_service_client::RateLimitServiceClient;
use server::{Shared, Tasks};
use stats::StatsCell;
use storage::Backend;

/// A running RLS server. Dropping it stops the server: the accept loop, every connection and
/// every call in progress are aborted.
#[derive(Debug)]
pub struct RlsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Tasks,
    accept: JoinHandle<()>,
}

impl RlsServer {
    /// Starts a server on `127.0.0.1:0` (an ephemeral port; see [`RlsServer::addr`]).
    ///
    /// # Errors
    ///
    /// Binding fails, or Redis cannot be reached ([`Storage::Redis`]).
    pub async fn start(limits: Limits, storage: Storage) -> anyhow::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), limits, storage).await
    }

    /// Starts a server listening on `addr`.
    ///
    /// # Errors
    ///
    /// Binding fails, or Redis cannot be reached ([`Storage::Redis`]).
    pub async fn bind(addr: SocketAddr, limits: Limits, storage: Storage) -> anyhow::Result<Self> {
        let backend = Backend::open(&storage, &limits).await?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            limits,
            backend,
            stats: StatsCell::default(),
            fault: Mutex::new(FaultMode::None),
        });
        let tasks = Tasks::default();
        let accept = tokio::spawn(server::accept_loop(
            listener,
            Arc::clone(&shared),
            tasks.clone(),
        ));
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

    /// The limits served.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// The fault mode in force.
    pub fn fault(&self) -> FaultMode {
        self.shared.fault()
    }

    /// Sets how calls arriving from now on are answered (see [`FaultMode`]); calls already
    /// waiting (delayed or hung) keep the mode they arrived under.
    pub fn set_fault(&self, mode: FaultMode) {
        self.shared.set_fault(mode);
    }

    /// Polls [`RlsServer::stats`] every few milliseconds until `condition` holds, for at most
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

impl Drop for RlsServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.tasks.abort_all();
    }
}

/// A tonic client for the server at `addr` (h2c).
///
/// # Errors
///
/// The connection cannot be made.
pub async fn client(
    addr: SocketAddr,
) -> anyhow::Result<RateLimitServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(RateLimitServiceClient::new(channel))
}

/// A `RateLimitRequest` for `domain` with one descriptor per slice of `(key, value)` entries.
pub fn request(
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    hits_addend: u32,
) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: descriptors
            .iter()
            .map(|entries| RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(key, value)| Entry {
                        key: (*key).to_owned(),
                        value: (*value).to_owned(),
                    })
                    .collect(),
                limit: None,
            })
            .collect(),
        hits_addend,
    }
}
