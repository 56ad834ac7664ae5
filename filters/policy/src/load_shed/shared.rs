//! How the worker VMs of one Envoy share one limit (the cross-worker scheme).
//!
//! Envoy runs one VM per worker; a limit that must hold for the whole Envoy lives in shared
//! data. Touching shared data on every request costs about as much as a whole no-op Wasm filter
//! (baselines.md §5), so the request path never does: each worker admits against a **lease**, its
//! share of the global limit, with plain local counters. Once per update interval (on tick):
//!
//! 1. every worker publishes a [`Report`] of its last window (latency histograms, peak
//!    in-flight, arrivals) under its own key;
//! 2. one worker holds the leader key (claimed with CAS, expiring after a few intervals); the
//!    leader merges the fresh reports, runs the [`GradientLimit`](super::gradient::GradientLimit)
//!    and writes a [`State`]: the limit and each worker's lease, proportional to its arrivals
//!    (a worker quiet for one interval keeps a slice of the free limit, see `worker.rs`);
//! 3. every worker reads the state and adopts its lease.
//!
//! Σ leases ≤ limit by construction, so the workers together never admit more than the limit
//! (over-admission is zero; a shrinking limit lets requests already admitted finish). The cost is
//! under-admission when load moves between workers faster than one interval; leases follow
//! arrivals each interval. Everything here is pure; `meshguard-load-shed` does the host calls.

use crate::histogram::Histogram;
use crate::num::{floor_u32, u64_f64};

/// One worker's window, as published to shared data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Increments with every report of this worker.
    pub seq: u64,
    /// Monotonic time of the report (ns).
    pub at_ns: u64,
    /// Peak in-flight of this worker in the window.
    pub peak: u32,
    /// In flight at the time of the report.
    pub inflight: u32,
    /// The lease this worker admitted against during the window.
    pub lease: u32,
    /// Requests that arrived (admitted or rejected) in the window.
    pub arrivals: u64,
    /// Length of the window (ns).
    pub window_ns: u64,
    /// Latency (µs) of requests completed in the window.
    pub latency: Histogram,
    /// Latency (µs) of those admitted at low load.
    pub low_load: Histogram,
}

/// The leader's decision, read by every worker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// Increments with every decision.
    pub epoch: u64,
    /// Monotonic time of the decision (ns).
    pub at_ns: u64,
    /// The global limit.
    pub limit: f64,
    /// The baseline latency (µs), 0 when unknown.
    pub baseline_us: f64,
    /// The last latency sample (µs), 0 when none.
    pub sample_us: f64,
    /// Global in-flight at or below which an admission counts as low load: half of completions
    /// per second × baseline latency (Little's law: the concurrency the current throughput needs
    /// without queueing), so it stays below the service's capacity even when saturated and
    /// queueing cannot leak into the baseline; `limit / 2` before a baseline is known.
    pub low_load_inflight: f64,
    /// `(worker id, lease)` for every worker that reported recently.
    pub leases: Vec<(u32, u32)>,
}

impl State {
    /// The lease of worker `id`, if it has one.
    pub fn lease_of(&self, id: u32) -> Option<u32> {
        self.leases.iter().find(|(w, _)| *w == id).map(|(_, l)| *l)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
    fn histogram(&mut self) -> Option<Histogram> {
        let (h, used) = Histogram::decode(self.0)?;
        self.0 = self.0.get(used..)?;
        Some(h)
    }
}

const REPORT_VERSION: u32 = 1;
const STATE_VERSION: u32 = 1;
/// A state never carries more leases than this (bounds decoding of foreign data).
pub const MAX_WORKERS: usize = 1024;

impl Report {
    /// Bytes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u32(REPORT_VERSION);
        w.u64(self.seq);
        w.u64(self.at_ns);
        w.u32(self.peak);
        w.u32(self.inflight);
        w.u32(self.lease);
        w.u64(self.arrivals);
        w.u64(self.window_ns);
        self.latency.encode(&mut w.0);
        self.low_load.encode(&mut w.0);
        w.0
    }

    /// Parses [`Report::encode`]'s bytes; `None` if malformed or another version.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.u32()? != REPORT_VERSION {
            return None;
        }
        Some(Self {
            seq: r.u64()?,
            at_ns: r.u64()?,
            peak: r.u32()?,
            inflight: r.u32()?,
            lease: r.u32()?,
            arrivals: r.u64()?,
            window_ns: r.u64()?,
            latency: r.histogram()?,
            low_load: r.histogram()?,
        })
    }
}

impl State {
    /// Bytes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u32(STATE_VERSION);
        w.u64(self.epoch);
        w.u64(self.at_ns);
        w.f64(self.limit);
        w.f64(self.baseline_us);
        w.f64(self.sample_us);
        w.f64(self.low_load_inflight);
        let n = self.leases.len().min(MAX_WORKERS);
        w.u32(u32::try_from(n).unwrap_or(0));
        for (id, lease) in self.leases.iter().take(n) {
            w.u32(*id);
            w.u32(*lease);
        }
        w.0
    }

    /// Parses [`State::encode`]'s bytes; `None` if malformed or another version.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.u32()? != STATE_VERSION {
            return None;
        }
        let mut s = Self {
            epoch: r.u64()?,
            at_ns: r.u64()?,
            limit: r.f64()?,
            baseline_us: r.f64()?,
            sample_us: r.f64()?,
            low_load_inflight: r.f64()?,
            leases: Vec::new(),
        };
        let n = usize::try_from(r.u32()?).ok()?;
        if n > MAX_WORKERS {
            return None;
        }
        for _ in 0..n {
            s.leases.push((r.u32()?, r.u32()?));
        }
        Some(s)
    }
}

/// Splits `limit` into leases proportional to each worker's `demand` (arrivals), every worker
/// at least 1 while the limit allows, Σ leases ≤ floor(limit). Workers with no demand share
/// equally what is left so a worker that starts receiving traffic is not starved for a whole
/// interval.
pub fn split(limit: f64, demands: &[(u32, u64)]) -> Vec<(u32, u32)> {
    let total = floor_u32(limit).max(1);
    let n = u32::try_from(demands.len()).unwrap_or(u32::MAX);
    if n == 0 {
        return Vec::new();
    }
    let sum: u64 = demands.iter().fold(0u64, |a, (_, d)| a.saturating_add(*d));
    // Each worker gets a floor of 1 (when the limit has room), the rest by demand.
    let floor_each = u32::from(total >= n);
    let spare = total.saturating_sub(floor_each.saturating_mul(n));
    let mut out: Vec<(u32, u32)> = demands
        .iter()
        .map(|(id, d)| {
            let share = if sum == 0 {
                f64::from(spare) / f64::from(n)
            } else {
                f64::from(spare) * u64_f64(*d) / u64_f64(sum)
            };
            (*id, floor_each.saturating_add(floor_u32(share)))
        })
        .collect();
    // Hand out what flooring left, largest demand first, one each.
    let used: u32 = out.iter().fold(0u32, |a, (_, l)| a.saturating_add(*l));
    let mut left = total.saturating_sub(used);
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by_key(|i| core::cmp::Reverse(demands.get(*i).map_or(0, |d| d.1)));
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        if let Some((_, l)) = out.get_mut(i) {
            *l = l.saturating_add(1);
            left = left.saturating_sub(1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn sum(leases: &[(u32, u32)]) -> u32 {
        leases.iter().map(|l| l.1).sum()
    }

    #[test]
    fn split_is_proportional_and_never_over_the_limit() {
        let l = split(25.9, &[(1, 600), (2, 400)]);
        assert_eq!(sum(&l), 25);
        assert_eq!(l, vec![(1, 15), (2, 10)]);
        let l = split(10.0, &[(1, 0), (2, 0), (3, 0)]);
        assert_eq!(sum(&l), 10);
        assert!(l.iter().all(|(_, x)| (3..=4).contains(x)));
        // More workers than the limit: no floor, still within the limit.
        let l = split(2.0, &[(1, 5), (2, 5), (3, 5)]);
        assert!(sum(&l) <= 2);
        // A worker without demand keeps one slot.
        let l = split(20.0, &[(1, 1000), (2, 0)]);
        assert_eq!(l, vec![(1, 19), (2, 1)]);
        assert!(split(5.0, &[]).is_empty());
    }

    #[test]
    fn reports_and_states_round_trip() {
        let mut r = Report {
            seq: 3,
            at_ns: 99,
            peak: 7,
            arrivals: 1234,
            ..Report::default()
        };
        r.latency.record(20_000);
        r.low_load.record(19_000);
        assert_eq!(Report::decode(&r.encode()), Some(r));
        let s = State {
            epoch: 9,
            at_ns: 5,
            limit: 24.5,
            baseline_us: 20_000.0,
            sample_us: 23_000.0,
            low_load_inflight: 9.5,
            leases: vec![(1, 12), (2, 12)],
        };
        assert_eq!(State::decode(&s.encode()), Some(s.clone()));
        assert_eq!(s.lease_of(2), Some(12));
        assert_eq!(s.lease_of(3), None);
    }

    #[test]
    fn garbage_is_rejected() {
        let s = State {
            leases: vec![(1, 1)],
            ..State::default()
        }
        .encode();
        for cut in 0..s.len() {
            assert!(State::decode(&s[..cut]).is_none());
        }
        let mut wrong = s.clone();
        wrong[0] = 9;
        assert!(State::decode(&wrong).is_none());
        assert!(Report::decode(&[1, 0, 0, 0, 1]).is_none());
        let r = Report::default().encode();
        for cut in 0..r.len() {
            assert!(Report::decode(&r[..cut]).is_none());
        }
    }
}
