//! host-sim: a proxy-wasm host on wasmtime that behaves like Envoy 1.40, for testing compiled
//! filters in `cargo test`.
//!
//! It runs the real `.wasm` artifact in several worker VMs plus the main-thread VM, with a
//! virtual clock, scripted callouts and an upstream you control, and reproduces the Envoy
//! behaviours filter authors trip on (see the crate README's fidelity list).
//!
//! ```no_run
//! use host_sim::{Envoy, Module};
//!
//! # fn main() -> Result<(), host_sim::Error> {
//! let module = Module::load("noop")?; // finds noop.wasm (run ./build.sh first)
//! let mut envoy = Envoy::builder(module).workers(2).build()?;
//! let s = envoy.new_stream();
//! let v = envoy.send_request_headers(s, [(":method", "GET"), (":path", "/"), (":authority", "svc")], true)?;
//! assert!(v.is_forwarded());
//! envoy.send_response_headers(s, [(":status", "200")], true)?;
//! assert!(envoy.stream(s).unwrap().complete);
//! # Ok(()) }
//! ```
//!
//! Design (after wasmtime's embedding style): all host state lives in `Store<HostState>`; guest
//! memory is read and written only through bounds-checked copies; every call into a VM gets a
//! fuel budget, so a runaway guest traps instead of hanging; there is no global mutable state
//! (only a cache of compiled modules), so tests run in parallel.

#![warn(missing_docs, missing_debug_implementations)]

pub mod abi;
pub mod callout;
mod clock;
mod config;
mod envoy;
mod error;
mod headers;
mod host;
pub mod load;
mod metrics;
mod module;
mod properties;
mod proto;
mod rng;
pub mod scenario;
mod sched;
mod shared;
mod stream_state;
mod trace;
mod upstream;
mod vm;
mod world;

pub use abi::{LogLevel, Status};
pub use callout::{
    CallId, CalloutKind, CalloutRecord, GrpcDelivery, GrpcEvent, GrpcReply, HttpCallOutcome,
    HttpCallReply,
};
pub use clock::{Clock, DEFAULT_WALL_START_NS, MONOTONIC_START_NS};
pub use config::{ClusterSpec, FailurePolicy, NodeSpec, RouteSpec};
pub use envoy::{Envoy, EnvoyBuilder, LocalReply, Message, StreamId, StreamRecord, Verdict};
pub use error::{Error, Result};
pub use headers::{HeaderMap, deserialize_pairs, serialize_pairs};
pub use host::{Slot, VmRef};
pub use metrics::{CUSTOM_STAT_NAMESPACE, HostCalls, MetricValue, Metrics};
pub use module::{
    AbiVersion, Import, Module, find_wasm, imports_of, provided_imports, wasm_search_dirs,
};
pub use rng::Rng;
pub use trace::{LogLine, TraceEvent, TraceKind};
pub use upstream::{Upstream, UpstreamAction, UpstreamReply, UpstreamRequest};
pub use world::ForeignCall;
