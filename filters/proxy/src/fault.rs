//! Fault injection for the hardening tests: a **test build** of a filter (cargo feature
//! `fault-injection`, built by `./build.sh` into `dist/fault/`) traps the VM when a request
//! carries `x-meshguard-fault: trap`, so tests can show what Envoy's `failure_policy`
//! (FAIL_CLOSED, FAIL_OPEN, FAIL_RELOAD) does to clients when a filter crashes. Release
//! artifacts are built without the feature: there [`on_request_headers`] is an empty inline
//! function and reads nothing.

/// The trigger header of fault builds.
pub const TRIGGER_HEADER: &str = "x-meshguard-fault";

/// Called first in every filter's `on_http_request_headers`. In a fault build, traps (a Wasm
/// `unreachable`, what a panic becomes under `panic = "abort"`) when the request carries
/// `x-meshguard-fault: trap`.
#[inline(always)]
pub fn on_request_headers() {
    #[cfg(feature = "fault-injection")]
    if crate::http::request_header(TRIGGER_HEADER).as_deref() == Some(b"trap".as_slice()) {
        trap();
    }
}

#[cfg(feature = "fault-injection")]
fn trap() {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}
