//! What the route's upstream answers. By default nothing answers automatically: the test sends
//! the response with [`crate::Envoy::send_response_headers`] and friends. An [`Upstream`]
//! installed with [`crate::Envoy::set_upstream`] answers every forwarded request instead (the
//! load driver's upstream model is one).

use std::time::Duration;

use crate::headers::HeaderMap;

/// An upstream's answer to a forwarded request.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamReply {
    /// A response.
    Response {
        /// Headers (with `:status`).
        headers: HeaderMap,
        /// Body (may be empty).
        body: Vec<u8>,
        /// Trailers, if any.
        trailers: Option<HeaderMap>,
    },
    /// The upstream reset the stream before response headers (Envoy: 503, flag UR,
    /// `upstream_reset_before_response_started{remote_reset}`).
    Reset,
    /// The connection failed (Envoy: 503, flag UF,
    /// `upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}`).
    ConnectFailure,
}

impl UpstreamReply {
    /// A response with `status` and `body`.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let mut headers = HeaderMap::new();
        headers.add(":status", status.to_string());
        if !body.is_empty() {
            headers.add("content-length", body.len().to_string());
        }
        UpstreamReply::Response {
            headers,
            body,
            trailers: None,
        }
    }

    /// A gRPC response: `:status 200`, a message body and `grpc-status` in trailers.
    pub fn grpc(grpc_status: u32, message: impl Into<Vec<u8>>) -> Self {
        let mut headers = HeaderMap::new();
        headers.add(":status", "200");
        headers.add("content-type", "application/grpc");
        let mut trailers = HeaderMap::new();
        trailers.add("grpc-status", grpc_status.to_string());
        UpstreamReply::Response {
            headers,
            body: message.into(),
            trailers: Some(trailers),
        }
    }
}

/// A request as the router sends it upstream.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    /// Stream id.
    pub stream: u64,
    /// Worker that runs the stream.
    pub worker: usize,
    /// Routed cluster.
    pub cluster: &'a str,
    /// Request headers as forwarded.
    pub headers: &'a HeaderMap,
    /// Request body as forwarded.
    pub body: &'a [u8],
}

/// What an [`Upstream`] does with a request.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamAction {
    /// Answer after `after` of virtual time.
    Respond {
        /// Latency.
        after: Duration,
        /// The answer.
        reply: UpstreamReply,
    },
    /// Do not answer (the test answers, or the route timeout fires).
    Hold,
}

/// An automatic upstream: called once per request when the router has sent it completely.
pub trait Upstream: Send {
    /// Decides the answer; `now` is virtual time since the simulation started.
    fn on_request(&mut self, req: &UpstreamRequest<'_>, now: Duration) -> UpstreamAction;
}

impl<F> Upstream for F
where
    F: FnMut(&UpstreamRequest<'_>, Duration) -> UpstreamAction + Send,
{
    fn on_request(&mut self, req: &UpstreamRequest<'_>, now: Duration) -> UpstreamAction {
        self(req, now)
    }
}
