//! meshguard's fuzz targets, as plain functions of the fuzzer's bytes.
//!
//! Each `pub fn <target>(data: &[u8])` panics only when it finds a bug: a panic inside the
//! code under test (which would trap the VM in Envoy), or a broken invariant checked here
//! (in-flight count below zero, a bucket above its capacity, a stripped key still present,
//! a module that trapped in host-sim). `fuzz/fuzz_targets/<target>.rs` calls the function for
//! libFuzzer (`fuzz/run.sh <target> <seconds>`); `tests/replay.rs` replays every seed of
//! `fuzz/corpus/<target>/` and every crash of `fuzz/regressions/<target>/` through it in
//! `cargo test`. See docs/fuzzing.md.

#[cfg(feature = "abi")]
pub mod abi;
pub mod config;
pub mod engines;
pub mod parsers;

/// A fuzz target: a function of the input bytes that panics on a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("config_load_shed", config::config_load_shed),
    ("config_circuit_breaker", config::config_circuit_breaker),
    ("config_rate_limit", config::config_rate_limit),
    ("config_sandbox_router", config::config_sandbox_router),
    ("baggage", parsers::baggage),
    ("tracestate", parsers::tracestate),
    ("sandbox_key", parsers::sandbox_key),
    ("registry", parsers::registry),
    ("cidr", parsers::cidr),
    ("descriptor", parsers::descriptor),
    ("rls_answer", parsers::rls_answer),
    ("duration", parsers::duration),
    ("load_shed_engine", engines::load_shed_engine),
    ("rate_limit_engine", engines::rate_limit_engine),
    ("circuit_breaker_engine", engines::circuit_breaker_engine),
    #[cfg(feature = "abi")]
    ("abi_load_shed", abi::abi_load_shed),
    #[cfg(feature = "abi")]
    ("abi_circuit_breaker", abi::abi_circuit_breaker),
    #[cfg(feature = "abi")]
    ("abi_rate_limit", abi::abi_rate_limit),
    #[cfg(feature = "abi")]
    ("abi_sandbox_router", abi::abi_sandbox_router),
    #[cfg(feature = "abi")]
    ("abi_meshguard", abi::abi_meshguard),
];

/// Splits fuzzer bytes at the first `0xff` (never valid UTF-8): the parts a target needs two
/// inputs for (e.g. a config and a request).
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
