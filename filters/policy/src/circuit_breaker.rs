//! Circuit breaking: fail fast on a failing upstream cluster, probe carefully, close when it is
//! healthy again.
//!
//! - [`config`]: the JSON config and its validated form.
//! - [`outcome`]: what counts as a failure (HTTP status, gRPC status in headers or trailers,
//!   resets, slow calls).
//! - [`state`]: the breaker itself — a small value shared by all workers through shared data,
//!   and pure transitions on it (request, outcome, window verdict).
//! - [`window`]: failure-rate and slow-call-rate windows (count- or time-based).

pub mod config;
pub mod engine;
pub mod outcome;
pub mod state;
pub mod window;
