//! The gRPC service and the HTTP/2 (h2c) server it runs on.
//!
//! The service is tonic's generated `RateLimitServiceServer`, served by hyper's HTTP/2
//! connection builder directly (tonic's own transport is not needed for one unary method, and
//! serving it by hand lets the fault modes answer at the HTTP layer). Every task the server
//! spawns is kept in one set so dropping the handle aborts them all.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::codegen::Service as _;

use crate::check;
use crate::fault::{self, FaultBody, FaultMode};
use crate::limits::Limits;
use crate::proto::rls::rate_limit_response::Code;
use crate::proto::rls::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use crate::proto::rls::{RateLimitRequest, RateLimitResponse};
use crate::stats::{Event, StatsCell};
use crate::storage::Backend;

/// The gRPC path of `ShouldRateLimit`.
pub const SHOULD_RATE_LIMIT_PATH: &str =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// State shared by the handle, the accept loop and every call.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    pub(crate) backend: Backend,
    pub(crate) stats: StatsCell,
    pub(crate) fault: Mutex<FaultMode>,
}

impl Shared {
    pub(crate) fn fault(&self) -> FaultMode {
        self.fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_fault(&self, mode: FaultMode) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }
}

/// The generated trait's implementation: rate-limit logic and stats.
#[derive(Debug)]
struct Rls(Arc<Shared>);

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let shared = &self.0;
        match check::should_rate_limit(&shared.limits, &shared.backend, request.get_ref()).await {
            Ok(response) => {
                shared.stats.count(match response.overall_code() {
                    Code::Ok => Event::Ok,
                    Code::OverLimit => Event::OverLimit,
                    Code::Unknown => Event::Unknown,
                });
                Ok(tonic::Response::new(response))
            }
            Err(e) => {
                // As Limitador: UNAVAILABLE, so the client applies its failure mode (an
                // UNKNOWN code would be taken as "allowed" by Envoy).
                shared.stats.count(Event::StorageError);
                Err(tonic::Status::unavailable(e.to_string()))
            }
        }
    }
}

/// Every task the server spawns (connections and hyper's per-stream tasks); also hyper's
/// executor.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tasks(Arc<Mutex<JoinSet<()>>>);

impl Tasks {
    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap finished tasks so the set does not grow with the number of calls.
        while set.try_join_next().is_some() {}
        set.spawn(future);
    }

    pub(crate) fn abort_all(&self) {
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

/// Accepts connections until aborted; each is served as h2c.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tasks: Tasks) {
    let grpc = RateLimitServiceServer::from_arc(Arc::new(Rls(Arc::clone(&shared))));
    let mut builder = hyper::server::conn::http2::Builder::new(tasks.clone());
    builder
        .timer(TokioTimer::new())
        // Envoy multiplexes every call of a worker on one connection; do not cap it.
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
        let grpc = grpc.clone();
        let builder = builder.clone();
        tasks.spawn(async move {
            let service =
                service_fn(move |request| handle(Arc::clone(&shared), grpc.clone(), request));
            // A connection error (client gone, protocol error) ends just this connection.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An error that makes hyper reset the stream ([`FaultMode::Reset`]).
#[derive(Debug, thiserror::Error)]
#[error("stream reset injected by meshguard-rls fault mode")]
struct InjectedReset;

async fn handle(
    shared: Arc<Shared>,
    mut grpc: RateLimitServiceServer<Rls>,
    request: Request<Incoming>,
) -> Result<Response<FaultBody>, InjectedReset> {
    if request.uri().path() == SHOULD_RATE_LIMIT_PATH {
        shared.stats.count(Event::Request);
        let fault = shared.fault();
        if fault != FaultMode::None {
            shared.stats.count(Event::Faulted);
        }
        match fault {
            FaultMode::None => {}
            FaultMode::Delay(delay) => tokio::time::sleep(delay).await,
            FaultMode::Hang => std::future::pending::<()>().await,
            FaultMode::Status(code) => return Ok(fault::grpc_status(code)),
            FaultMode::Garbage => return Ok(fault::garbage()),
            FaultMode::Http(status) => return Ok(fault::http(status)),
            FaultMode::Reset => return Err(InjectedReset),
        }
    }
    // Other paths get tonic's UNIMPLEMENTED.
    let response: Result<Response<tonic::body::Body>, Infallible> = grpc.call(request).await;
    match response {
        Ok(response) => Ok(response),
        Err(never) => match never {},
    }
}
