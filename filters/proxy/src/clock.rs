//! Time, read in one place and passed into policy as an argument.
//!
//! Monotonic time comes from WASI `clock_time_get(MONOTONIC)`: Envoy answers it from its
//! process-wide steady clock, so **the value is the same in every worker VM** — which matters,
//! because deadlines written to shared data by one worker (a breaker's open-until, a report's
//! age) are read by the others. It is read raw, not through `std::time::Instant`: an `Instant`
//! can only be turned into a number relative to another `Instant` of the same VM, and such
//! per-VM origins differ between workers. Wall time (`REALTIME`) is only for what must be shown
//! to people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // the WASI import itself
mod wasi {
    /// `clock_time_get` clock id of the monotonic clock.
    pub const MONOTONIC: u32 = 1;

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        /// WASI preview 1 `clock_time_get(id, precision, *time) -> errno`.
        pub fn clock_time_get(id: u32, precision: u64, time: *mut u64) -> u16;
    }
}

/// Nanoseconds of the host's monotonic clock: process-wide in Envoy (the same origin in every
/// worker VM), never going backwards. 0 if the host refuses the call. Inside a
/// [`crate::http::RequestMemo`] scope it is read once (the policies of one callback share one
/// instant).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // one WASI import, its only out-parameter is a local
pub fn monotonic_nanos() -> u64 {
    remember(crate::memo::clock(|| {
        let mut t = 0u64;
        // SAFETY: `t` is a live local the host writes 8 bytes to.
        let errno = unsafe { wasi::clock_time_get(wasi::MONOTONIC, 1, &mut t) };
        if errno == 0 { t } else { 0 }
    }))
}

/// Native stand-in (tests): nanoseconds since the first call in this process.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::disallowed_methods)] // native tests only
pub fn monotonic_nanos() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    remember(crate::memo::clock(|| {
        let now = Instant::now();
        let epoch = *EPOCH.get_or_init(|| now);
        u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }))
}

thread_local! {
    /// The last monotonic time this worker read (see [`recent_nanos`]).
    static LAST: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

fn remember(t: u64) -> u64 {
    LAST.with(|l| l.set(t));
    t
}

/// The monotonic time this worker last read (by any policy, a tick or a timed request), with
/// no host call; the clock itself only before the first read. Never ahead of the real time,
/// behind it by the time since that read: for decisions that tolerate that, where something
/// else reads the clock often (the `meshguard` bundle's breaker admission, refreshed by the
/// load shedder's timed requests and the tick).
pub fn recent_nanos() -> u64 {
    match LAST.with(core::cell::Cell::get) {
        0 => monotonic_nanos(),
        t => t,
    }
}

/// Monotonic time as a [`Duration`] (see [`monotonic_nanos`]).
pub fn monotonic() -> Duration {
    Duration::from_nanos(monotonic_nanos())
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the host clock is before 1970).
#[allow(clippy::disallowed_methods)] // the one place a filter reads the wall clock
pub fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_backwards() {
        let a = monotonic_nanos();
        let b = monotonic_nanos();
        assert!(b >= a);
        assert!(wall_nanos() > 1_600_000_000_000_000_000);
    }
}
