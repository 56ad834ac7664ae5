//! The life of one request: count it, pick its failure fate, wait for a worker slot (FIFO),
//! read the body, spend the service time, answer (HTTP or gRPC), and hand the slot to the
//! response body so it is released when the response ends.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{InjectedReset, ScriptBody};
use crate::config::FailureKind;
use crate::knob::{Knobs, ResetPoint};
use crate::runtime::Admission;
use crate::stats::Lease;
use crate::{Shared, control, grpc, reply};

/// Service function given to hyper for every request on every connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ScriptBody>, InjectedReset> {
    if request.uri().path().starts_with(control::PREFIX) {
        return Ok(control::handle(&shared, request).await);
    }
    let stats = &shared.stats;
    let request_guard = stats.begin();
    let arrived = Instant::now();
    let runtime = shared.runtime();
    let (parts, body) = request.into_parts();

    let knobs = match Knobs::from_headers(&parts.headers) {
        Ok(knobs) => knobs,
        Err(message) => {
            let response = reply::knob_error(&parts, &message);
            stats.record_status(response.status().as_u16());
            return Ok(response);
        }
    };
    let failure = runtime.decide_failure(arrived);

    let permit = match runtime.admit(stats).await {
        Ok(Admission::Admitted(permit)) => permit,
        Ok(Admission::QueueFull) => {
            stats.record_queue_full();
            let response = reply::queue_full(&parts);
            stats.record_status(response.status().as_u16());
            return Ok(response);
        }
        // The semaphore is never closed; treat it as a reset should that change.
        Err(_) => return Err(InjectedReset),
    };
    let lease = Lease {
        _in_flight: stats.start_service(),
        _permit: permit,
        _request: request_guard,
    };
    let started = Instant::now();

    // The client going away mid-body ends the request here; the lease records it as completed.
    let Ok(collected) = body.collect().await else {
        return Err(InjectedReset);
    };
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();

    let service_time = runtime.sample_latency().saturating_add(knobs.delay);
    tokio::time::sleep_until(started + service_time).await;

    let result = match failure {
        Some(kind) => {
            stats.record_failure();
            match kind {
                FailureKind::Reset => Err(InjectedReset),
                FailureKind::Status(code) => {
                    let status =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    Ok(reply::failure(&parts, status))
                }
                FailureKind::Grpc(code) => Ok(grpc::server::failure(code, "injected failure")),
            }
        }
        None if grpc::server::is_grpc(&parts.headers) => {
            grpc::server::respond(&parts, &body, &knobs).await
        }
        None => reply::echo(&parts, body, trailers.as_ref(), &knobs),
    };
    match result {
        Ok(response) => {
            stats.record_status(response.status().as_u16());
            let resets_later = matches!(
                knobs.reset,
                Some(ResetPoint::AfterHeaders | ResetPoint::MidBody)
            );
            if failure.is_none() && resets_later {
                stats.record_reset();
            }
            Ok(response.map(|body| body.with_lease(Some(lease))))
        }
        Err(reset) => {
            stats.record_reset();
            Err(reset)
        }
    }
}
