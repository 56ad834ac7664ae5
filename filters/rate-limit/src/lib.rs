//! meshguard `rate_limit` filter: token buckets shared by every worker of an Envoy, as thin
//! glue.
//!
//! Decisions live in `meshguard_policy::rate_limit` (descriptors, buckets, the leasing engine);
//! host calls live in `meshguard-proxy`. Per request this filter reads the request headers once
//! (and `source.address` when a rule needs it); below the limit a request usually costs no
//! shared-data call at all (tokens are leased in small batches). See `docs/rate-limit.md`.

pub mod filter;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<filter::Root>::default());
}}
