//! meshguard `load_shed` filter: adaptive concurrency with criticality, as thin glue.
//!
//! Decisions live in `meshguard_policy::load_shed` (the limit algorithm, class admission, the
//! cross-worker scheme); host calls live in `meshguard-proxy`. Per request this filter reads at
//! most three request headers (the criticality header, and `:path`/`:method` only when rules or
//! exemptions need them) and the monotonic clock twice; everything shared across workers
//! happens on tick. See `docs/load-shed.md`.

pub mod filter;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<filter::Root>::default());
}}
