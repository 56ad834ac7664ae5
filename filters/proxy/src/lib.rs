//! The host port of meshguard: the only crate that talks proxy-wasm.
//!
//! Filter crates are thin glue: they read what they need through this crate, ask
//! `meshguard-policy` for a decision with the current time, and act through this crate.
//! Everything that could make a filter misbehave inside Envoy is handled here once:
//!
//! - [`config`]: typed JSON config with unknown fields rejected and errors that name the field;
//!   `on_configure` returns false with one log line.
//! - [`abi`]: non-panicking wrappers over the raw host calls. The Rust SDK's own wrappers
//!   `panic!` on any status they do not expect (a panic traps the VM and fails every later
//!   request on that worker), so the calls on meshguard's request path go through here.
//! - [`clock`]: monotonic and wall time (read here, passed into policy as arguments).
//! - [`metrics`]: `meshguard.<filter>.<name>` counters, gauges and histograms.
//! - [`http`]: request/response header access including *all* values of a repeated header,
//!   gRPC detection, gRPC-aware local replies with response code details, and Envoy's
//!   `clear_route_cache` foreign function.

#![warn(missing_docs)]

pub mod abi;
pub mod clock;
pub mod config;
pub mod fault;
pub mod http;
pub mod idle;
mod memo;
pub mod metrics;
pub mod shared;

pub use config::{ConfigError, parse_config};
pub use metrics::{Counter, Gauge, Histogram, Metrics};
