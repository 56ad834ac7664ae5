//! Differential tests: host-sim against stock Envoy 1.40.
//!
//! Every scenario is data ([`scenario::Scenario`]): the abi-probe plugin with a configuration,
//! routes, clusters whose endpoints answer fixed replies (or are down), the requests a client
//! sends, and which observables to compare. [`real::run_group`] runs it in host-sim
//! ([`sim`]) and in one real Envoy per test function ([`real`]), and the two observations —
//! status, response headers (minus `date`, `server`, `x-envoy-upstream-service-time`), body,
//! trailers (gRPC status and message included), requests each endpoint received (routed and
//! callouts), metric values, the module's log lines — must be equal.
//!
//! Envoy runs on free loopback ports and is killed when the test ends; waits are bounded
//! polls on conditions, never fixed sleeps.

mod client;
mod observe;
mod real;
mod scenario;
mod server;
mod sim;

mod callouts;
mod failure;
mod headers;
mod lifecycle;
mod local_reply;
mod properties;
mod state;
