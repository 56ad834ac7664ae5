//! meshguard's end-to-end test support: stock Envoy on loopback ports, and clients that see
//! exactly what a real client sees.
//!
//! - [`envoy`]: build a bootstrap (listeners with meshguard filters, clusters), start Envoy 1.40
//!   from the pinned wheel on free ports, wait for readiness with a bound, read `/stats`, keep
//!   the log and print it when a test fails, kill on drop.
//! - [`h1`]: a byte-exact HTTP/1.1 client (mixed-case names, non-UTF-8 values, chunked bodies,
//!   `expect: 100-continue`, trailers), because HTTP libraries normalise what we want to test.
//! - [`h2`]: an HTTP/2 (h2c, prior knowledge) client on hyper that returns trailers too.
//! - [`paths`]: where the Envoy binary and the built `.wasm` files are.
//!
//! The test upstream (latency, capacity, failures, echo) is the `meshguard-upstream` crate.

pub mod admin;
pub mod bench;
pub mod children;
pub mod envoy;
pub mod h1;
pub mod h2;
pub mod loadgen;
pub mod paths;
pub mod registry;
pub mod response;
pub mod template;

pub use envoy::{Envoy, EnvoyConfig, Filter, Listener};
pub use response::Response;
