//! The virtual clock: wall and monotonic time under test control.
//!
//! Nothing in host-sim reads the machine's clock. Time moves only when the test (or the event
//! loop working through scheduled events) advances it, so the same seed and the same script
//! give the same run. Wall time starts at a fixed instant (2026-01-01T00:00:00Z by default);
//! monotonic time starts at an arbitrary non-zero value, like a real boot clock.

use std::time::Duration;

/// Default wall-clock start: 2026-01-01T00:00:00Z, in ns since the Unix epoch.
pub const DEFAULT_WALL_START_NS: u64 = 1_767_225_600_000_000_000;
/// Monotonic time at simulation start (an arbitrary "uptime" of 1000 s).
pub const MONOTONIC_START_NS: u64 = 1_000_000_000_000;

/// Virtual time. `now` is nanoseconds since the start of the simulation.
#[derive(Clone, Debug)]
pub struct Clock {
    wall_start_ns: u64,
    now_ns: u64,
}

impl Clock {
    /// A clock whose wall time starts at `wall_start_ns`.
    pub fn new(wall_start_ns: u64) -> Self {
        Self {
            wall_start_ns,
            now_ns: 0,
        }
    }

    /// Nanoseconds since the simulation started.
    pub fn elapsed_ns(&self) -> u64 {
        self.now_ns
    }

    /// Time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_ns)
    }

    /// Wall clock, ns since the Unix epoch (`proxy_get_current_time_nanoseconds`, WASI REALTIME).
    ///
    /// Envoy 1.40 was observed to advance the wall clock in whole microseconds; host-sim's is
    /// as fine-grained as the virtual time it is given.
    pub fn wall_ns(&self) -> u64 {
        self.wall_start_ns.saturating_add(self.now_ns)
    }

    /// Monotonic clock (WASI MONOTONIC).
    pub fn monotonic_ns(&self) -> u64 {
        MONOTONIC_START_NS.saturating_add(self.now_ns)
    }

    /// Moves time forward to `t_ns` (since start); never backwards.
    pub(crate) fn set(&mut self, t_ns: u64) {
        if t_ns > self.now_ns {
            self.now_ns = t_ns;
        }
    }
}

/// Converts a duration to ns, saturating.
pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
