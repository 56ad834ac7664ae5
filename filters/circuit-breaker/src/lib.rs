//! meshguard `circuit_breaker` filter: fail fast on a failing upstream cluster, as thin glue.
//!
//! Decisions live in `meshguard_policy::circuit_breaker` (the breaker state machine, outcome
//! classification, windows, the cross-worker engine); host calls live in `meshguard-proxy`.
//! Per request this filter reads the route's cluster (`xds.cluster_name`), the breaker (one
//! shared-data read), and the response headers once (plus trailers for gRPC); it writes shared
//! data only when the breaker changes. See `docs/circuit-breaker.md`.

pub mod filter;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<filter::Root>::default());
}}
