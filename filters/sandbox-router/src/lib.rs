//! meshguard `sandbox_router` filter: glue between `meshguard-policy` and the host (`meshguard-proxy`).
//!
//! Not implemented yet: this filter validates its config (`mode` only) and lets all traffic
//! through untouched. See the README status table.

use meshguard_proxy::idle::IdleRoot;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(IdleRoot::new("sandbox_router")));
}}
