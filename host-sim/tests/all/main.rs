//! host-sim integration tests: one binary, one module per topic (wasmtime's layout).
//!
//! The `.wasm` fixtures are found through `host_sim::find_wasm` (`$MESHGUARD_WASM_DIR`, the
//! cargo target dirs, `dist/`); build them with `./build.sh` (or `cargo build --release
//! --target wasm32-wasip1 -p noop-filter -p abi-probe -p meshguard-load-shed`).

mod support;

mod bodies;
mod bundle;
mod callouts;
mod circuit_breaker;
mod failure;
mod foreign;
mod headers;
mod lifecycle;
mod load;
mod load_shed;
mod local_reply;
mod metrics;
mod properties;
mod rate_limit;
mod sandbox_router;
mod scenario;
mod shared;
mod smoke;
mod ticks;
mod wasi;
