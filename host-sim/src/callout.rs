//! Outbound calls made by the module (`proxy_http_call`, `proxy_grpc_call`,
//! `proxy_grpc_stream`), how tests answer them, and the record of every call.
//!
//! Each cluster can have a responder: a closure that sees the call and returns a reply with a
//! virtual latency. Without a responder the call stays pending until the test answers it with
//! [`crate::Envoy::reply_http`] / [`crate::Envoy::reply_grpc`] or its timeout fires.
//!
//! Envoy's delivery rules, reproduced (checked against Envoy 1.40 by the differential suite):
//! http responses and failures go to the *root* context that owns the call
//! (`on_http_call_response(root, token, ...)`); responses from the endpoint carry the router's
//! `x-envoy-upstream-service-time`; a refused connection, a reset before headers and a timeout
//! are *responses* the async client's router makes (503 / 503 / 504 `upstream request
//! timeout`); only a reset after the response started is delivered as zero headers, body and
//! trailers with `proxy_get_status` = (BrokenConnection, "reset"); a unary gRPC success is one
//! `on_grpc_receive`, a failure one `on_grpc_close`.

use std::time::Duration;

use crate::abi::Status;
use crate::headers::HeaderMap;

/// Which host call made the callout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalloutKind {
    /// `proxy_http_call`.
    Http,
    /// `proxy_grpc_call`.
    GrpcCall,
    /// `proxy_grpc_stream`.
    GrpcStream,
}

/// Identifies one recorded callout (its index in [`crate::Envoy::callouts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct CallId(pub usize);

/// One outbound call attempt, as the module made it (also failed attempts, with their status).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CalloutRecord {
    /// Virtual time of the call (ns since start).
    pub t_ns: u64,
    /// VM name.
    pub vm: String,
    /// Root context that owns the call.
    pub root_ctx: u32,
    /// Token returned to the module (0 when the call failed).
    pub token: u32,
    /// Kind.
    pub kind: CalloutKind,
    /// Target cluster.
    pub cluster: String,
    /// Status `proxy_*_call` returned.
    pub status: Status,
    /// Request headers (http) or initial metadata (gRPC).
    pub headers: HeaderMap,
    /// Request body (http) or request message (gRPC unary).
    pub body: Vec<u8>,
    /// Request trailers (http).
    pub trailers: HeaderMap,
    /// gRPC service.
    pub service: String,
    /// gRPC method.
    pub method: String,
    /// Timeout the module asked for (None = no timeout).
    pub timeout: Option<Duration>,
    /// Messages sent on a gRPC stream.
    pub stream_messages: Vec<Vec<u8>>,
    /// The module closed (half-closed) or cancelled the call.
    pub closed_by_module: bool,
    /// How it ended, once it did (`response 200`, `reset`, `timeout`, `grpc_close 0`, ...).
    pub outcome: Option<String>,
    #[serde(skip)]
    pub(crate) vm_ref: Option<crate::host::VmRef>,
}

impl CalloutRecord {
    /// `:method` of an http call.
    pub fn method_header(&self) -> Option<&str> {
        self.headers.get(":method")
    }
    /// `:path` of an http call.
    pub fn path(&self) -> Option<&str> {
        self.headers.get(":path")
    }
}

/// How an http callout ends.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpCallOutcome {
    /// A response (any status).
    Response {
        /// Headers (with `:status`).
        headers: HeaderMap,
        /// Body.
        body: Vec<u8>,
        /// Trailers.
        trailers: HeaderMap,
    },
    /// The stream was reset after the response started (Envoy's async client calls
    /// `onFailure`): delivered as zero headers, body and trailers with `proxy_get_status` =
    /// (BrokenConnection, `reset`).
    Reset,
    /// The call's timeout fired: the async client's router answers 504 `upstream request
    /// timeout`.
    Timeout,
    /// The cluster's endpoint refused the connection: the router answers 503 `upstream connect
    /// error or disconnect/reset before headers. reset reason: remote connection failure`
    /// (a response, not a failure; checked against Envoy 1.40).
    ConnectFailure,
    /// The endpoint reset the stream before response headers: the router answers 503 `...
    /// reset reason: remote reset`.
    ResetBeforeHeaders,
}

/// A responder's answer to an http callout.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpCallReply {
    /// Virtual latency before the outcome is delivered. `None` = never answer (only the
    /// call's timeout, if any, ends it).
    pub delay: Option<Duration>,
    /// The outcome.
    pub outcome: HttpCallOutcome,
}

impl HttpCallReply {
    /// A response with `status`, no body, delivered immediately.
    pub fn status(status: u16) -> Self {
        let mut headers = HeaderMap::new();
        headers.add(":status", status.to_string());
        Self {
            delay: Some(Duration::ZERO),
            outcome: HttpCallOutcome::Response {
                headers,
                body: Vec::new(),
                trailers: HeaderMap::new(),
            },
        }
    }
    /// A 200 response.
    pub fn ok() -> Self {
        Self::status(200)
    }
    /// The stream is reset after the response started: the module gets zero headers, body
    /// and trailers, and `proxy_get_status` = (BrokenConnection, `reset`).
    pub fn reset() -> Self {
        Self {
            delay: Some(Duration::ZERO),
            outcome: HttpCallOutcome::Reset,
        }
    }
    /// The cluster's endpoint is down (connection refused): Envoy's router answers the call
    /// with a 503 response (see [`HttpCallOutcome::ConnectFailure`]).
    pub fn connect_failure() -> Self {
        Self {
            delay: Some(Duration::ZERO),
            outcome: HttpCallOutcome::ConnectFailure,
        }
    }
    /// The endpoint resets the stream before sending headers: Envoy's router answers 503
    /// (see [`HttpCallOutcome::ResetBeforeHeaders`]).
    pub fn reset_before_headers() -> Self {
        Self {
            delay: Some(Duration::ZERO),
            outcome: HttpCallOutcome::ResetBeforeHeaders,
        }
    }
    /// Never answers (the call's timeout decides).
    pub fn never() -> Self {
        Self {
            delay: None,
            outcome: HttpCallOutcome::Reset,
        }
    }
    /// Adds a response header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        if let HttpCallOutcome::Response { headers, .. } = &mut self.outcome {
            headers.add(k, v);
        }
        self
    }
    /// Sets the response body.
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        if let HttpCallOutcome::Response { body, .. } = &mut self.outcome {
            *body = b.into();
        }
        self
    }
    /// Adds a response trailer.
    pub fn trailer(mut self, k: &str, v: &str) -> Self {
        if let HttpCallOutcome::Response { trailers, .. } = &mut self.outcome {
            trailers.add(k, v);
        }
        self
    }
    /// Delivers after `d` of virtual time.
    pub fn after(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

/// One event delivered to the module for a gRPC call or stream.
#[derive(Clone, Debug, PartialEq)]
pub enum GrpcDelivery {
    /// `proxy_on_grpc_receive_initial_metadata`.
    InitialMetadata(HeaderMap),
    /// `proxy_on_grpc_receive` (one message, without the 5-byte gRPC frame).
    Message(Vec<u8>),
    /// `proxy_on_grpc_receive_trailing_metadata`.
    TrailingMetadata(HeaderMap),
    /// `proxy_on_grpc_close` with a gRPC status and message.
    Close {
        /// gRPC status code.
        status: u32,
        /// gRPC message (readable with `proxy_get_status`).
        message: String,
    },
}

/// A responder's answer: deliveries, each after a virtual delay from *now*.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrpcReply {
    /// (delay, delivery) in order.
    pub deliveries: Vec<(Duration, GrpcDelivery)>,
}

impl GrpcReply {
    /// Unary success with `message` (one `on_grpc_receive`).
    pub fn ok(message: impl Into<Vec<u8>>) -> Self {
        Self {
            deliveries: vec![(Duration::ZERO, GrpcDelivery::Message(message.into()))],
        }
    }
    /// Failure with a gRPC status (one `on_grpc_close`).
    pub fn error(status: u32, message: &str) -> Self {
        Self {
            deliveries: vec![(
                Duration::ZERO,
                GrpcDelivery::Close {
                    status,
                    message: message.into(),
                },
            )],
        }
    }
    /// No deliveries (the call stays open).
    pub fn none() -> Self {
        Self::default()
    }
    /// Adds a delivery at `delay` from now.
    pub fn then(mut self, delay: Duration, d: GrpcDelivery) -> Self {
        self.deliveries.push((delay, d));
        self
    }
    /// Shifts every delivery by `d`.
    pub fn after(mut self, d: Duration) -> Self {
        for (t, _) in &mut self.deliveries {
            *t += d;
        }
        self
    }
}

/// What a gRPC responder is told.
#[derive(Debug)]
pub enum GrpcEvent<'a> {
    /// A unary call or a stream was opened.
    Open(&'a CalloutRecord),
    /// The module sent a message on a stream.
    Message(&'a CalloutRecord, &'a [u8]),
    /// The module half-closed the stream.
    ClientClose(&'a CalloutRecord),
}

/// Responder for http callouts to one cluster.
pub type HttpResponder = Box<dyn FnMut(&CalloutRecord) -> HttpCallReply + Send>;
/// Responder for gRPC calls and streams to one cluster.
pub type GrpcResponder = Box<dyn FnMut(GrpcEvent<'_>) -> GrpcReply + Send>;

/// Work created by host calls during one VM call, dispatched by the Envoy after it returns.
#[derive(Clone, Debug)]
pub(crate) enum Outbound {
    NewCall(usize),
    StreamMessage(usize, Vec<u8>),
    StreamClose(usize),
}
