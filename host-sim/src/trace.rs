//! What happened, in order: module log lines and a structured trace of callbacks, header
//! changes, local replies, callouts, metrics and failures. The CLI prints the trace as JSON
//! lines; tests assert on it (prefer asserting outcomes; the trace is for the cases where the
//! sequence *is* the behaviour).

use serde::Serialize;

use crate::abi::LogLevel;

/// One line the module logged (`proxy_log`, or stdout/stderr through WASI `fd_write`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Virtual time, ns since the simulation started.
    pub t_ns: u64,
    /// Which VM (`canary`, `main`, `worker0`, ...).
    pub vm: String,
    /// Level.
    pub level: LogLevel,
    /// Message (lossy UTF-8).
    pub message: String,
}

/// One trace event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceEvent {
    /// Virtual time, ns since the simulation started.
    pub t_ns: u64,
    /// Which VM, when the event is about one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub vm: String,
    /// The event.
    #[serde(flatten)]
    pub kind: TraceKind,
}

/// Trace event kinds (serialized with an `"ev"` tag).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TraceKind {
    /// A callback into the module returned.
    Callback {
        /// Export name (`proxy_on_request_headers`).
        name: String,
        /// Context id.
        ctx: u32,
        /// Arguments after the context id.
        args: Vec<i64>,
        /// Return value (absent for void callbacks).
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<i64>,
    },
    /// A log line.
    Log {
        /// Level.
        level: LogLevel,
        /// Message.
        message: String,
    },
    /// A header map was changed by the module.
    HeaderChange {
        /// Context id.
        ctx: u32,
        /// Which map.
        map: String,
        /// `add`, `replace`, `remove` or `set_pairs`.
        op: String,
        /// Key (empty for `set_pairs`).
        key: String,
        /// Value (absent for remove).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    /// Headers (and completion state) went past the filter.
    Forward {
        /// Stream id.
        stream: u64,
        /// `request` or `response`.
        dir: String,
        /// What was forwarded: `headers`, `body`, `trailers`.
        part: String,
        /// Header pairs or body length.
        #[serde(skip_serializing_if = "Option::is_none")]
        headers: Option<Vec<(String, String)>>,
        /// Body bytes forwarded.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<usize>,
        /// End of stream.
        end_stream: bool,
    },
    /// A local reply was sent downstream.
    LocalReply {
        /// Stream id.
        stream: u64,
        /// HTTP status.
        status: u32,
        /// Response code details.
        details: String,
        /// gRPC status, when sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        grpc_status: Option<u32>,
        /// Body.
        body: String,
    },
    /// A stream was reset.
    Reset {
        /// Stream id.
        stream: u64,
        /// Details.
        details: String,
    },
    /// The module made an outbound call.
    Callout {
        /// `http`, `grpc` or `grpc_stream`.
        kind: String,
        /// Token returned to the module (0 on failure).
        token: u32,
        /// Cluster.
        cluster: String,
        /// Status returned by the host call.
        status: String,
        /// `:method :path` for http, `service/method` for gRPC.
        target: String,
    },
    /// A callout completed (response delivered to the module).
    CalloutDone {
        /// Token.
        token: u32,
        /// `response`, `reset`, `timeout`, `grpc_close`...
        outcome: String,
    },
    /// A metric changed.
    Metric {
        /// Full name (without the `wasmcustom.` prefix).
        name: String,
        /// `increment`, `record`.
        op: String,
        /// Value or delta.
        value: i64,
    },
    /// A foreign function was called.
    ForeignFunction {
        /// Context id.
        ctx: u32,
        /// Function name.
        name: String,
        /// Status returned.
        status: String,
    },
    /// A VM trapped; it is now failed.
    Trap {
        /// Export that trapped.
        function: String,
        /// The trap message.
        message: String,
    },
    /// A failed VM was replaced (FAIL_RELOAD).
    VmReload {
        /// Generation of the new VM.
        generation: usize,
    },
    /// A stream finished (after on_log / on_done / on_delete).
    StreamComplete {
        /// Stream id.
        stream: u64,
    },
}

/// Where log lines and trace events go.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub logs: Vec<LogLine>,
    pub log_cap: usize,
    pub logs_dropped: u64,
    pub events: Vec<TraceEvent>,
    pub tracing: bool,
}

impl Recorder {
    pub fn new(tracing: bool, log_cap: usize) -> Self {
        Self {
            logs: Vec::new(),
            log_cap,
            logs_dropped: 0,
            events: Vec::new(),
            tracing,
        }
    }

    pub fn log(&mut self, t_ns: u64, vm: &str, level: LogLevel, message: String) {
        if self.tracing {
            self.events.push(TraceEvent {
                t_ns,
                vm: vm.to_string(),
                kind: TraceKind::Log {
                    level,
                    message: message.clone(),
                },
            });
        }
        if self.logs.len() < self.log_cap {
            self.logs.push(LogLine {
                t_ns,
                vm: vm.to_string(),
                level,
                message,
            });
        } else {
            self.logs_dropped += 1;
        }
    }

    pub fn event(&mut self, t_ns: u64, vm: &str, kind: TraceKind) {
        if self.tracing {
            self.events.push(TraceEvent {
                t_ns,
                vm: vm.to_string(),
                kind,
            });
        }
    }
}
