//! What a rejection looks like to the client, decided by policy and sent by `meshguard-proxy`.

use core::time::Duration;

use crate::grpc::GrpcStatus;

/// A local reply a filter wants to send instead of forwarding the request.
///
/// The proxy layer turns this into a gRPC trailers-only response (`grpc_status`, message =
/// `body`) for gRPC requests, or into an HTTP response with `http_status`, `body` and, when set,
/// `retry-after` for everything else. `details` becomes Envoy's response code details
/// (`%RESPONSE_CODE_DETAILS%`), so access logs say which filter rejected and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status for non-gRPC clients (e.g. 503, 429).
    pub http_status: u16,
    /// gRPC status for gRPC clients (e.g. `UNAVAILABLE`, `RESOURCE_EXHAUSTED`).
    pub grpc_status: GrpcStatus,
    /// Response code details, e.g. `meshguard_load_shed{overloaded}`; no spaces.
    pub details: String,
    /// Body for HTTP, `grpc-message` for gRPC.
    pub body: String,
    /// Sent as `retry-after` (whole seconds, rounded up) for HTTP clients when set.
    pub retry_after: Option<Duration>,
    /// Extra response headers for HTTP clients (e.g. `x-ratelimit-limit`).
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    /// `retry-after` header value: whole seconds, rounded up, at least 1.
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after.map(|d| {
            let secs = d.as_secs();
            let secs = if d.subsec_nanos() > 0 {
                secs.saturating_add(1)
            } else {
                secs
            };
            secs.max(1).to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn reject(retry_after: Option<Duration>) -> Rejection {
        Rejection {
            http_status: 503,
            grpc_status: GrpcStatus::Unavailable,
            details: "meshguard_test".into(),
            body: "overloaded".into(),
            retry_after,
            headers: Vec::new(),
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(reject(None).retry_after_header(), None);
        assert_eq!(
            reject(Some(Duration::ZERO)).retry_after_header().as_deref(),
            Some("1")
        );
        assert_eq!(
            reject(Some(Duration::from_millis(10)))
                .retry_after_header()
                .as_deref(),
            Some("1")
        );
        assert_eq!(
            reject(Some(Duration::from_secs(2)))
                .retry_after_header()
                .as_deref(),
            Some("2")
        );
        assert_eq!(
            reject(Some(Duration::from_millis(2001)))
                .retry_after_header()
                .as_deref(),
            Some("3")
        );
    }
}
