//! Classifying what happened to a request that reached the upstream.

use crate::grpc::GrpcStatus;

/// How a call ended, as far as the breaker cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counted as healthy.
    Success,
    /// Counted as a failure.
    Failure,
    /// Not counted either way (the client went away first).
    Ignored,
}

/// What the filter observed about a finished call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// HTTP status (`None`: no response — reset, connect failure, timeout).
    pub http_status: Option<u16>,
    /// `grpc-status` from response headers or trailers, if any.
    pub grpc_status: Option<GrpcStatus>,
    /// The call was a gRPC call (request content-type).
    pub grpc: bool,
    /// The client went away before the response (not the upstream's fault).
    pub cancelled: bool,
}

/// Which observations are failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classifier {
    /// HTTP status ranges (inclusive) that are failures. Default `[500, 599]`.
    pub http_failures: Vec<(u16, u16)>,
    /// gRPC statuses that are failures. Default UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL,
    /// UNKNOWN, DATA_LOSS.
    pub grpc_failures: Vec<GrpcStatus>,
    /// A call without a response (reset, connect failure, upstream timeout) is a failure.
    /// Default true.
    pub no_response_is_failure: bool,
}

impl Default for Classifier {
    fn default() -> Self {
        Self {
            http_failures: vec![(500, 599)],
            grpc_failures: vec![
                GrpcStatus::Unavailable,
                GrpcStatus::DeadlineExceeded,
                GrpcStatus::Internal,
                GrpcStatus::Unknown,
                GrpcStatus::DataLoss,
            ],
            no_response_is_failure: true,
        }
    }
}

impl Classifier {
    /// Classifies one finished call.
    ///
    /// Order: a client cancel is ignored; no response follows `no_response_is_failure`; a gRPC
    /// call with a `grpc-status` (headers or trailers) is judged by it — an error in trailers
    /// after HTTP 200 is a failure, which Envoy's outlier detection misses; otherwise the HTTP
    /// status decides.
    pub fn classify(&self, o: &Observed) -> Outcome {
        if o.cancelled {
            return Outcome::Ignored;
        }
        let Some(status) = o.http_status else {
            return if self.no_response_is_failure {
                Outcome::Failure
            } else {
                Outcome::Ignored
            };
        };
        if o.grpc
            && let Some(g) = o.grpc_status
        {
            return if self.grpc_failures.contains(&g) {
                Outcome::Failure
            } else {
                Outcome::Success
            };
        }
        if self
            .http_failures
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
        {
            Outcome::Failure
        } else {
            // Including 4xx: the upstream is alive and answering.
            Outcome::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn http(status: u16) -> Observed {
        Observed {
            http_status: Some(status),
            ..Observed::default()
        }
    }

    #[test]
    fn http_statuses() {
        let c = Classifier::default();
        assert_eq!(c.classify(&http(200)), Outcome::Success);
        assert_eq!(c.classify(&http(503)), Outcome::Failure);
        assert_eq!(c.classify(&http(404)), Outcome::Success);
        assert_eq!(c.classify(&http(302)), Outcome::Success);
        assert_eq!(c.classify(&Observed::default()), Outcome::Failure);
        let cancelled = Observed {
            cancelled: true,
            ..http(503)
        };
        assert_eq!(c.classify(&cancelled), Outcome::Ignored);
    }

    #[test]
    fn grpc_status_in_trailers_after_200_counts() {
        let c = Classifier::default();
        let call = |g| Observed {
            http_status: Some(200),
            grpc_status: Some(g),
            grpc: true,
            cancelled: false,
        };
        assert_eq!(c.classify(&call(GrpcStatus::Unavailable)), Outcome::Failure);
        assert_eq!(c.classify(&call(GrpcStatus::NotFound)), Outcome::Success);
        assert_eq!(c.classify(&call(GrpcStatus::Ok)), Outcome::Success);
        // A gRPC status on a non-gRPC call is not trusted (Envoy derives one for every request).
        let plain = Observed {
            grpc: false,
            ..call(GrpcStatus::Unavailable)
        };
        assert_eq!(c.classify(&plain), Outcome::Success);
    }

    #[test]
    fn gateway_errors_only() {
        let c = Classifier {
            http_failures: vec![(502, 504)],
            ..Classifier::default()
        };
        assert_eq!(c.classify(&http(500)), Outcome::Success);
        assert_eq!(c.classify(&http(503)), Outcome::Failure);
    }
}
