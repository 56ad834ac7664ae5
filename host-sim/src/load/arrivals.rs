//! Arrival processes (open loop).

use std::time::Duration;

use crate::clock::ns;
use crate::rng::Rng;

/// From `at` on, arrivals come at `rps`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// Start of the step (since the run's start).
    #[serde(with = "crate::scenario::duration_serde")]
    pub at: Duration,
    /// Rate.
    pub rps: f64,
}

/// When requests arrive.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Poisson arrivals at a constant rate.
    Poisson {
        /// Mean requests per second.
        rps: f64,
    },
    /// Evenly spaced arrivals.
    Constant {
        /// Requests per second.
        rps: f64,
    },
    /// Poisson arrivals whose rate changes in steps, sorted by time (relative to the run's
    /// start).
    Steps(Vec<Step>),
    /// Poisson at `base_rps`, with bursts of `burst_rps` lasting `burst` every `every`.
    Bursts {
        /// Rate between bursts.
        base_rps: f64,
        /// Rate during bursts.
        burst_rps: f64,
        /// Burst period.
        #[serde(with = "crate::scenario::duration_serde")]
        every: Duration,
        /// Burst length.
        #[serde(with = "crate::scenario::duration_serde")]
        burst: Duration,
    },
}

impl Arrivals {
    /// The rate in force at `t` since start.
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self {
            Arrivals::Poisson { rps } | Arrivals::Constant { rps } => *rps,
            Arrivals::Steps(steps) => steps
                .iter()
                .take_while(|s| s.at <= t)
                .last()
                .map_or(0.0, |s| s.rps),
            Arrivals::Bursts {
                base_rps,
                burst_rps,
                every,
                burst,
            } => {
                let period = ns(*every).max(1);
                if (ns(t) % period) < ns(*burst) {
                    *burst_rps
                } else {
                    *base_rps
                }
            }
        }
    }
}

/// Generates arrival instants (ns since simulation start).
pub(crate) struct Cursor {
    spec: Arrivals,
    start: u64,
    t: u64,
    rng: Rng,
}

impl Cursor {
    pub fn new(spec: Arrivals, start: u64, rng: Rng) -> Self {
        Self {
            spec,
            start,
            t: start,
            rng,
        }
    }

    /// The next arrival; piecewise-constant rates are handled by thinning against a 1 ms grid.
    pub fn next_at(&mut self) -> Option<u64> {
        // Look ahead at most ~1 hour of zero rate before giving up.
        for _ in 0..3_600_000 {
            let rel = Duration::from_nanos(self.t - self.start);
            let rate = self.spec.rate_at(rel);
            if rate <= 0.0 {
                self.t = self.t.saturating_add(1_000_000);
                continue;
            }
            let gap = match self.spec {
                Arrivals::Constant { .. } => 1e9 / rate,
                _ => self.rng.exponential(1e9 / rate),
            };
            let gap = gap.max(1.0) as u64;
            // If the rate changes before the next arrival, restart from the change point
            // (memorylessness makes this exact for Poisson).
            let boundary = self.next_change_after(self.t);
            if let Some(b) = boundary.filter(|b| self.t.saturating_add(gap) > *b) {
                self.t = b;
                continue;
            }
            self.t = self.t.saturating_add(gap);
            return Some(self.t);
        }
        None
    }

    fn next_change_after(&self, t: u64) -> Option<u64> {
        let rel = t - self.start;
        match &self.spec {
            Arrivals::Poisson { .. } | Arrivals::Constant { .. } => None,
            Arrivals::Steps(steps) => steps
                .iter()
                .map(|s| ns(s.at))
                .find(|f| *f > rel)
                .map(|f| self.start + f),
            Arrivals::Bursts { every, burst, .. } => {
                let period = ns(*every).max(1);
                let phase = rel % period;
                let b = ns(*burst);
                let next = if phase < b {
                    rel - phase + b
                } else {
                    rel - phase + period
                };
                Some(self.start + next)
            }
        }
    }
}
