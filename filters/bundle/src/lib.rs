//! meshguard bundle: any subset of the four policies in **one** Envoy filter, one config.
//!
//! A Wasm filter's cost is mostly the boundary, not the logic: each filter in the chain is
//! another context created and another VM call per callback (measured in stock Envoy 1.40,
//! four no-op Wasm filters cost about 1.25× one). The bundle pays that once. Per request it
//! runs the enabled policies in a fixed order, and within one callback every request header
//! and property is asked of the host once ([`meshguard_proxy::http::RequestMemo`]).
//!
//! Order on the request path (each policy sees the request only if the ones before let it
//! through):
//!
//! 1. `rate_limit` — cheapest rejection, and a global limit may pause for its RLS call;
//! 2. `load_shed` — counts what is admitted in flight;
//! 3. `sandbox_router` — may reroute (clearing the route cache);
//! 4. `circuit_breaker` — keyed by the cluster the request finally goes to.
//!
//! So inbound (rate limit, then load shed) and outbound (sandbox router, then circuit
//! breaker) each keep the order the single filters are documented in. The policies are the
//! very glue of the single filters (this crate compiles their `filter.rs` files as modules),
//! so behaviour, metrics (`meshguard.<filter>.*`), per-route metadata
//! (`meshguard.<filter>`), decision filter state and shared-data keys are the same as with the
//! single filters. See `docs/bundle.md`.

// The single filters' glue, compiled here as modules. They are files, not crate
// dependencies: each filter crate is a cdylib whose entry point (`proxy_wasm::main!`, a
// `#[no_mangle]` export) would clash with this one if linked as a library.
#[path = "../../circuit-breaker/src/filter.rs"]
mod circuit_breaker;
#[path = "../../load-shed/src/filter.rs"]
mod load_shed;
#[path = "../../rate-limit/src/filter.rs"]
mod rate_limit;
#[path = "../../sandbox-router/src/filter.rs"]
mod sandbox_router;

mod bundle;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<bundle::Root>::default());
}}
