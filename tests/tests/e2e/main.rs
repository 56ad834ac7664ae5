//! End-to-end tests against stock Envoy 1.40 with meshguard's compiled filters.
//!
//! One test binary, a module per topic (as wasmtime does): Envoy start-up is the slow part, so
//! tests that can share one Envoy with several listeners do.

mod bundle;
mod circuit_breaker;
mod config;
mod faults;
mod hostile;
mod load_shed;
mod oci;
mod per_route;
mod prometheus;
mod proxy;
mod rate_limit;
mod rate_limit_global;
mod sandbox_router;
mod smoke;
mod transparency;
