//! The breaker: a small value shared by every worker (shared data, CAS), and the pure
//! transitions on it.
//!
//! ```text
//!            failures (consecutive, rate, slow-rate)
//!   CLOSED ───────────────────────────────────────────▶ OPEN (wait = base·2^(trips−1), capped, ± jitter)
//!     ▲                                                  │ wait elapsed: the next request becomes a probe
//!     │ `permitted_probes` probes succeeded               ▼
//!     └──────────────────────────────────────────── HALF-OPEN ── a probe failed ──▶ OPEN (longer wait)
//! ```
//!
//! Every function returns the new value to write (or `None` when nothing changes); the caller
//! writes it with the CAS token it read and retries on a mismatch, so concurrent workers never
//! lose an update: consecutive failures are counted per Envoy, and at most `permitted_probes`
//! probes are ever in flight across all workers.

use crate::num::{floor_u32, u64_f64};

/// Where the breaker is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Calls flow.
    #[default]
    Closed = 0,
    /// Calls are rejected until `open_until`.
    Open = 1,
    /// A bounded number of probe calls flow; the rest are rejected.
    HalfOpen = 2,
}

/// Why the breaker opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TripReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures = 1,
    /// Failure rate over the window reached its threshold.
    FailureRate = 2,
    /// Slow-call rate over the window reached its threshold.
    SlowCallRate = 3,
    /// A half-open probe failed.
    ProbeFailed = 4,
}

impl TripReason {
    /// Name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::FailureRate => "failure_rate",
            Self::SlowCallRate => "slow_call_rate",
            Self::ProbeFailed => "probe_failed",
        }
    }

    /// All reasons.
    pub const ALL: [Self; 4] = [
        Self::ConsecutiveFailures,
        Self::FailureRate,
        Self::SlowCallRate,
        Self::ProbeFailed,
    ];

    fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == v)
    }
}

/// Timing and probe parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Trip after this many failures in a row (per Envoy); `None` disables. Default 5.
    pub consecutive_failures: Option<u32>,
    /// Open time after the first trip (ns). Default 5 s.
    pub base_wait_ns: u64,
    /// Cap of the open time (ns). Default 60 s.
    pub max_wait_ns: u64,
    /// Relative jitter of the open time, in [0, 1). Default 0.1 (±10 %).
    pub jitter: f64,
    /// Probe calls allowed in half-open; that many successes close. Default 3.
    pub permitted_probes: u32,
    /// Concurrent calls allowed while closed (`None`: unlimited). Default `None`.
    pub max_requests: Option<u32>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            base_wait_ns: 5_000_000_000,
            max_wait_ns: 60_000_000_000,
            jitter: 0.1,
            permitted_probes: 3,
            max_requests: None,
        }
    }
}

/// The shared breaker value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    /// Where it is.
    pub phase: Phase,
    /// Failures in a row while closed.
    pub consecutive: u32,
    /// End of the open period (monotonic ns).
    pub open_until_ns: u64,
    /// Trips since the breaker last closed (the backoff exponent).
    pub trips: u32,
    /// Probes admitted in this half-open period.
    pub probes_issued: u32,
    /// Probes that succeeded in this half-open period.
    pub probes_ok: u32,
    /// Why it last opened.
    pub reason: Option<TripReason>,
    /// Calls in flight (counted only when `max_requests` is set).
    pub inflight: u32,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send it.
    Allow,
    /// Send it as a half-open probe (its outcome decides).
    Probe,
    /// Reject it locally.
    Reject {
        /// Why.
        why: Rejected,
        /// Time until the breaker may let probes through (ns), when known.
        retry_after_ns: Option<u64>,
    },
}

/// Why a request was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The breaker is open.
    Open,
    /// Half-open and all probes are taken.
    ProbesTaken,
    /// `max_requests` reached.
    MaxRequests,
}

impl Rejected {
    /// Name for metrics, logs and response code details.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::ProbesTaken => "half_open",
            Self::MaxRequests => "max_requests",
        }
    }
}

/// A state change worth a metric and a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed or half-open → open.
    Opened(TripReason),
    /// Open → half-open.
    HalfOpened,
    /// Half-open → closed.
    Closed,
}

impl Breaker {
    /// Decides a request at `now`. Returns the decision and, when the breaker changes (a probe
    /// slot taken, open → half-open, an in-flight count), the value to write.
    pub fn admit(
        &self,
        now_ns: u64,
        p: &Params,
    ) -> (Admission, Option<(Breaker, Option<Transition>)>) {
        match self.phase {
            Phase::Closed => match p.max_requests {
                Some(max) if self.inflight >= max => (
                    Admission::Reject {
                        why: Rejected::MaxRequests,
                        retry_after_ns: None,
                    },
                    None,
                ),
                Some(_) => {
                    let next = Breaker {
                        inflight: self.inflight.saturating_add(1),
                        ..*self
                    };
                    (Admission::Allow, Some((next, None)))
                }
                None => (Admission::Allow, None),
            },
            Phase::Open if now_ns < self.open_until_ns => (
                Admission::Reject {
                    why: Rejected::Open,
                    retry_after_ns: Some(self.open_until_ns.saturating_sub(now_ns)),
                },
                None,
            ),
            Phase::Open => {
                let next = Breaker {
                    phase: Phase::HalfOpen,
                    probes_issued: 1,
                    probes_ok: 0,
                    ..*self
                };
                (Admission::Probe, Some((next, Some(Transition::HalfOpened))))
            }
            Phase::HalfOpen if self.probes_issued < p.permitted_probes => {
                let next = Breaker {
                    probes_issued: self.probes_issued.saturating_add(1),
                    ..*self
                };
                (Admission::Probe, Some((next, None)))
            }
            Phase::HalfOpen => (
                Admission::Reject {
                    why: Rejected::ProbesTaken,
                    retry_after_ns: None,
                },
                None,
            ),
        }
    }

    /// Records the outcome of a call admitted as `probe` (or not). `jitter_unit` is a random
    /// number in [0, 1) for the open time.
    pub fn record(
        &self,
        outcome: super::outcome::Outcome,
        probe: bool,
        now_ns: u64,
        p: &Params,
        jitter_unit: f64,
    ) -> Option<(Breaker, Option<Transition>)> {
        use super::outcome::Outcome;
        let mut next = *self;
        if p.max_requests.is_some() && !probe {
            next.inflight = next.inflight.saturating_sub(1);
        }
        let transition = match (self.phase, probe, outcome) {
            (Phase::HalfOpen, true, Outcome::Success) => {
                next.probes_ok = next.probes_ok.saturating_add(1);
                if next.probes_ok >= p.permitted_probes {
                    next = Breaker {
                        inflight: next.inflight,
                        ..Breaker::default()
                    };
                    Some(Transition::Closed)
                } else {
                    None
                }
            }
            (Phase::HalfOpen, true, Outcome::Failure) => {
                next = next.tripped(TripReason::ProbeFailed, now_ns, p, jitter_unit);
                Some(Transition::Opened(TripReason::ProbeFailed))
            }
            (Phase::HalfOpen, true, Outcome::Ignored) => {
                // The probe told us nothing: free its slot for another.
                next.probes_issued = next.probes_issued.saturating_sub(1);
                None
            }
            (Phase::Closed, false, Outcome::Failure) => {
                next.consecutive = next.consecutive.saturating_add(1);
                match p.consecutive_failures {
                    Some(n) if next.consecutive >= n => {
                        next =
                            next.tripped(TripReason::ConsecutiveFailures, now_ns, p, jitter_unit);
                        Some(Transition::Opened(TripReason::ConsecutiveFailures))
                    }
                    _ => None,
                }
            }
            (Phase::Closed, false, Outcome::Success) => {
                next.consecutive = 0;
                None
            }
            // Calls admitted before a trip, finishing while open or half-open, and stale
            // probes (the breaker moved on): not evidence about the current period.
            _ => None,
        };
        (next != *self).then_some((next, transition))
    }

    /// Trips a closed breaker for `reason` (a window verdict). `None` if not closed.
    pub fn trip(
        &self,
        reason: TripReason,
        now_ns: u64,
        p: &Params,
        jitter_unit: f64,
    ) -> Option<(Breaker, Option<Transition>)> {
        (self.phase == Phase::Closed).then(|| {
            (
                self.tripped(reason, now_ns, p, jitter_unit),
                Some(Transition::Opened(reason)),
            )
        })
    }

    fn tripped(&self, reason: TripReason, now_ns: u64, p: &Params, jitter_unit: f64) -> Breaker {
        let trips = self.trips.saturating_add(1);
        Breaker {
            phase: Phase::Open,
            consecutive: 0,
            open_until_ns: now_ns.saturating_add(open_time(trips, p, jitter_unit)),
            trips,
            probes_issued: 0,
            probes_ok: 0,
            reason: Some(reason),
            inflight: self.inflight,
        }
    }

    /// Bytes for shared data (fixed 31 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(31);
        out.push(1); // version
        out.push(self.phase as u8);
        out.extend_from_slice(&self.consecutive.to_le_bytes());
        out.extend_from_slice(&self.open_until_ns.to_le_bytes());
        out.extend_from_slice(&self.trips.to_le_bytes());
        out.extend_from_slice(&self.probes_issued.to_le_bytes());
        out.extend_from_slice(&self.probes_ok.to_le_bytes());
        out.push(self.reason.map_or(0, |r| r as u8));
        out.extend_from_slice(&self.inflight.to_le_bytes());
        out
    }

    /// Parses [`Breaker::encode`]; `None` if malformed (the caller starts from closed).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 31 || b.first() != Some(&1) {
            return None;
        }
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                b.get(o..o.checked_add(4)?)?.try_into().ok()?,
            ))
        };
        Some(Self {
            phase: match b.get(1)? {
                0 => Phase::Closed,
                1 => Phase::Open,
                2 => Phase::HalfOpen,
                _ => return None,
            },
            consecutive: u32_at(2)?,
            open_until_ns: u64::from_le_bytes(b.get(6..14)?.try_into().ok()?),
            trips: u32_at(14)?,
            probes_issued: u32_at(18)?,
            probes_ok: u32_at(22)?,
            reason: TripReason::from_u8(*b.get(26)?),
            inflight: u32_at(27)?,
        })
    }
}

/// Open time for the `trips`-th trip in a row: `base · 2^(trips−1)`, capped at `max`, times
/// `1 ± jitter` (`jitter_unit` in [0, 1) picks where).
pub fn open_time(trips: u32, p: &Params, jitter_unit: f64) -> u64 {
    let exp = trips.saturating_sub(1).min(32);
    let wait = p
        .base_wait_ns
        .checked_shl(exp)
        .filter(|w| w >> exp == p.base_wait_ns)
        .unwrap_or(u64::MAX)
        .min(p.max_wait_ns);
    let factor = 1.0 + p.jitter * (2.0 * jitter_unit.clamp(0.0, 1.0) - 1.0);
    let jittered = u64_f64(wait) * factor;
    // floor_u32 is too small for ns: split into ms to stay exact enough.
    let ms = floor_u32(jittered / 1e6);
    u64::from(ms).saturating_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::super::outcome::Outcome::{Failure, Ignored, Success};
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    const S: u64 = 1_000_000_000;

    fn p() -> Params {
        Params {
            jitter: 0.0,
            ..Params::default()
        }
    }

    fn apply(r: Option<(Breaker, Option<Transition>)>, b: &mut Breaker) -> Option<Transition> {
        r.and_then(|(n, t)| {
            *b = n;
            t
        })
    }

    #[test]
    fn defaults_are_documented() {
        let d = Params::default();
        assert_eq!(d.consecutive_failures, Some(5));
        assert_eq!((d.base_wait_ns, d.max_wait_ns), (5 * S, 60 * S));
        assert_eq!(
            (d.jitter, d.permitted_probes, d.max_requests),
            (0.1, 3, None)
        );
    }

    #[test]
    fn consecutive_failures_trip_and_successes_reset() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            assert_eq!(apply(b.record(Failure, false, 0, &p(), 0.5), &mut b), None);
        }
        apply(b.record(Success, false, 0, &p(), 0.5), &mut b);
        assert_eq!(b.consecutive, 0);
        for _ in 0..4 {
            apply(b.record(Failure, false, 0, &p(), 0.5), &mut b);
        }
        let t = apply(b.record(Failure, false, 10, &p(), 0.5), &mut b);
        assert_eq!(t, Some(Transition::Opened(TripReason::ConsecutiveFailures)));
        assert_eq!(
            (b.phase, b.open_until_ns, b.trips),
            (Phase::Open, 10 + 5 * S, 1)
        );
        // Successes of calls admitted before the trip do not close it.
        assert_eq!(b.record(Success, false, 20, &p(), 0.5), None);
    }

    #[test]
    fn open_rejects_with_retry_after_then_probes() {
        let mut b = Breaker::default();
        apply(b.trip(TripReason::FailureRate, 0, &p(), 0.5), &mut b);
        assert_eq!(
            b.admit(S, &p()).0,
            Admission::Reject {
                why: Rejected::Open,
                retry_after_ns: Some(4 * S)
            }
        );
        // At 5 s the first request becomes a probe; three probes in all, then rejections.
        let (a, w) = b.admit(5 * S, &p());
        assert_eq!(a, Admission::Probe);
        assert_eq!(apply(w, &mut b), Some(Transition::HalfOpened));
        for _ in 0..2 {
            let (a, w) = b.admit(5 * S, &p());
            assert_eq!(a, Admission::Probe);
            apply(w, &mut b);
        }
        assert_eq!(
            b.admit(5 * S, &p()).0,
            Admission::Reject {
                why: Rejected::ProbesTaken,
                retry_after_ns: None
            }
        );
        // Three successful probes close it.
        apply(b.record(Success, true, 5 * S, &p(), 0.5), &mut b);
        apply(b.record(Success, true, 5 * S, &p(), 0.5), &mut b);
        let t = apply(b.record(Success, true, 5 * S, &p(), 0.5), &mut b);
        assert_eq!(t, Some(Transition::Closed));
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn a_failed_probe_reopens_with_backoff_capped() {
        let mut b = Breaker::default();
        apply(
            b.trip(TripReason::ConsecutiveFailures, 0, &p(), 0.5),
            &mut b,
        );
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            now = b.open_until_ns;
            apply(b.admit(now, &p()).1, &mut b);
            let t = apply(b.record(Failure, true, now, &p(), 0.5), &mut b);
            assert_eq!(t, Some(Transition::Opened(TripReason::ProbeFailed)));
            waits.push((b.open_until_ns - now) / S);
        }
        assert_eq!(waits, vec![10, 20, 40, 60, 60, 60]);
        // An ignored probe frees its slot.
        apply(b.admit(b.open_until_ns, &p()).1, &mut b);
        assert_eq!(b.probes_issued, 1);
        apply(b.record(Ignored, true, now, &p(), 0.5), &mut b);
        assert_eq!(b.probes_issued, 0);
    }

    #[test]
    fn jitter_spreads_the_open_time() {
        let p = Params {
            jitter: 0.1,
            ..Params::default()
        };
        assert_eq!(open_time(1, &p, 0.0), 4_500 * 1_000_000);
        assert_eq!(open_time(1, &p, 0.5), 5_000 * 1_000_000);
        assert!(open_time(1, &p, 0.999) < 5_500 * 1_000_000);
        assert_eq!(open_time(u32::MAX, &p, 0.5), 60 * S);
    }

    #[test]
    fn max_requests_counts_in_flight() {
        let p = Params {
            max_requests: Some(2),
            ..p()
        };
        let mut b = Breaker::default();
        for _ in 0..2 {
            let (a, w) = b.admit(0, &p);
            assert_eq!(a, Admission::Allow);
            apply(w, &mut b);
        }
        assert_eq!(
            b.admit(0, &p).0,
            Admission::Reject {
                why: Rejected::MaxRequests,
                retry_after_ns: None
            }
        );
        apply(b.record(Success, false, 0, &p, 0.5), &mut b);
        assert_eq!(b.inflight, 1);
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let b = Breaker {
            phase: Phase::HalfOpen,
            consecutive: 3,
            open_until_ns: 77,
            trips: 2,
            probes_issued: 1,
            probes_ok: 1,
            reason: Some(TripReason::SlowCallRate),
            inflight: 9,
        };
        let bytes = b.encode();
        assert_eq!(Breaker::decode(&bytes), Some(b));
        assert!(Breaker::decode(&bytes[..30]).is_none());
        let mut bad = bytes.clone();
        bad[1] = 7;
        assert!(Breaker::decode(&bad).is_none());
    }
}
