//! Time, read in one place and passed into policy as an argument.
//!
//! Monotonic time comes from WASI `clock_time_get(MONOTONIC)` (Envoy answers it from its
//! monotonic clock); it is what every policy measures latency and intervals with. Wall time
//! (`REALTIME`) is only for what must be shown to people (logs, `retry-after` deadlines across
//! hosts). Both are read through std, which on `wasm32-wasip1` is exactly those WASI calls and
//! cannot panic.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic nanoseconds since the first call in this VM. Never goes backwards.
#[allow(clippy::disallowed_methods)] // the one place a filter reads the monotonic clock
pub fn monotonic_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let now = Instant::now();
    let epoch = *EPOCH.get_or_init(|| now);
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Monotonic time as a [`Duration`] since the first call in this VM.
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
