//! meshguard `sandbox_router` filter: send a request that carries a sandbox routing key to that
//! sandbox of the destination service, as thin glue.
//!
//! Decisions live in `meshguard_policy::sandbox` (the W3C baggage and trace-context parsers,
//! key rules, the table, the registry document, the engine); host calls live in
//! `meshguard-proxy`. Per request this filter reads the request headers once; only when they
//! carry a key does it read the route's cluster (`xds.cluster_name`, before any header
//! changes) and, in edge mode, the client address. A routed request gets the routing header
//! (and `x-envoy-original-dst-host` for an address) and Envoy's route cache is cleared. One
//! worker per period polls the registry; the table is shared by all workers through shared
//! data. See `docs/sandbox-router.md`.

pub mod filter;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<filter::Root>::default());
}}
