//! Public view of a stream (what the client and the upstream saw) and the filter-manager state
//! host-sim keeps for each direction.

use crate::headers::HeaderMap;
use crate::host::VmRef;

/// Identifies a stream of one simulated Envoy.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StreamId(pub u64);

/// Headers, body and trailers that went past the filter in one direction.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Message {
    /// Headers, once forwarded.
    pub headers: Option<HeaderMap>,
    /// Body bytes forwarded so far.
    pub body: Vec<u8>,
    /// Trailers, once forwarded.
    pub trailers: Option<HeaderMap>,
    /// The end of the message was forwarded.
    pub end_stream: bool,
}

impl Message {
    /// `:status` of a response.
    pub fn status(&self) -> Option<u16> {
        self.headers.as_ref()?.get(":status")?.parse().ok()
    }

    /// A header of the forwarded headers.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.as_ref()?.get(k)
    }

    /// `grpc-status` from trailers, or from headers (trailers-only responses).
    pub fn grpc_status(&self) -> Option<u32> {
        let from = |m: &HeaderMap| m.get("grpc-status").and_then(|v| v.parse().ok());
        self.trailers
            .as_ref()
            .and_then(from)
            .or_else(|| self.headers.as_ref().and_then(from))
    }
}

/// A local reply as Envoy sent it downstream.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LocalReply {
    /// The status the module (or Envoy) asked for (for gRPC requests the HTTP status sent is 200).
    pub status: u32,
    /// Response code details (whitespace replaced by `_`).
    pub details: String,
    /// The gRPC status sent, for gRPC requests.
    pub grpc_status: Option<u32>,
    /// Body the module asked for (for gRPC requests it is sent as `grpc-message`).
    pub body: Vec<u8>,
    /// Headers as first built (before the filter's own `on_response_headers`, which may change
    /// the copy the client gets: see [`StreamRecord::downstream`]).
    pub headers: HeaderMap,
}

/// What happened to a stream's current part.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Everything received so far was forwarded (upstream for request operations, downstream
    /// for response operations).
    Forwarded,
    /// The filter holds some of it (a paused callback, or buffering).
    Paused,
    /// The stream was answered locally.
    LocalReply(LocalReply),
    /// The stream was reset (details).
    Reset(String),
}

impl Verdict {
    /// True for [`Verdict::Forwarded`].
    pub fn is_forwarded(&self) -> bool {
        matches!(self, Verdict::Forwarded)
    }
    /// True for [`Verdict::Paused`].
    pub fn is_paused(&self) -> bool {
        matches!(self, Verdict::Paused)
    }
    /// The local reply, if any.
    pub fn local_reply(&self) -> Option<&LocalReply> {
        match self {
            Verdict::LocalReply(r) => Some(r),
            _ => None,
        }
    }
}

/// Everything observable about one stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StreamRecord {
    /// Id.
    pub id: StreamId,
    /// Worker that ran it.
    pub worker: usize,
    /// What the upstream received.
    pub upstream: Message,
    /// What the client received.
    pub downstream: Message,
    /// The local reply, if Envoy answered locally.
    pub local_reply: Option<LocalReply>,
    /// Reset details, if the stream was reset.
    pub reset: Option<String>,
    /// The stream finished (on_log/on_done/on_delete ran).
    pub complete: bool,
    /// The filter was skipped (FAIL_OPEN on a failed VM).
    pub bypassed: bool,
    /// Cluster the router used.
    pub cluster: Option<String>,
    /// Virtual time the request headers arrived (ns since start).
    pub start_ns: u64,
    /// Virtual time the stream completed.
    pub end_ns: Option<u64>,
}

/// Filter-manager state of one direction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dir {
    pub headers_seen: bool,
    /// The filter stopped on headers (StopAllIteration): later data is held by the FM.
    pub headers_paused: bool,
    pub headers_forwarded: bool,
    /// The headers ended the message.
    pub headers_eos: bool,
    /// Data held by the FM while headers are paused (not yet shown to the filter).
    pub held: Vec<u8>,
    pub held_trailers: Option<HeaderMap>,
    /// The filter returned StopIterationAndBuffer on data: its buffer is held.
    pub buffering: bool,
    pub trailers_paused: bool,
    /// The sender finished this direction.
    pub eos_seen: bool,
    pub trailers_seen: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Wasm,
    Bypass,
    Failed,
}

/// Internal stream state.
#[derive(Debug)]
pub(crate) struct Stream {
    pub rec: StreamRecord,
    pub vm: VmRef,
    pub ctx: u32,
    pub mode: Mode,
    pub created: bool,
    pub req: Dir,
    pub resp: Dir,
    pub stream_failed: bool,
    pub failure_local_reply_sent: bool,
    pub waiting_upstream: bool,
    pub upstream_done: bool,
    pub is_grpc: bool,
    pub local_response: bool,
}

impl Stream {
    pub fn ended(&self) -> bool {
        self.rec.complete
            || self.rec.reset.is_some()
            || self.rec.local_reply.is_some() && self.rec.downstream.end_stream
    }
}

impl Stream {
    pub fn new(id: u64, worker: usize, vm: VmRef) -> Self {
        Stream {
            rec: StreamRecord {
                id: StreamId(id),
                worker,
                upstream: Message::default(),
                downstream: Message::default(),
                local_reply: None,
                reset: None,
                complete: false,
                bypassed: false,
                cluster: None,
                start_ns: 0,
                end_ns: None,
            },
            vm,
            ctx: 0,
            mode: Mode::Wasm,
            created: false,
            req: Dir::default(),
            resp: Dir::default(),
            stream_failed: false,
            failure_local_reply_sent: false,
            waiting_upstream: false,
            upstream_done: false,
            is_grpc: false,
            local_response: false,
        }
    }
}
