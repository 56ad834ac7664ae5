//! One worker VM's side of load shedding: local admission against its lease, the window it
//! reports, and the tick that publishes, elects a leader, decides and adopts leases.
//!
//! The request path ([`Worker::admit`], [`Worker::complete`], [`Worker::cancel`]) touches only
//! local memory. [`Worker::tick`] does all shared-data work once per update interval; see
//! [`super::shared`] for the scheme.

use std::collections::VecDeque;

use super::config::Config;
use super::criticality::{Admit, ClassAdmission, Criticality};
use super::gradient::{GradientLimit, Window};
use super::shared::{Report, State, split};
use crate::histogram::Histogram;
use crate::num::{ceil_u64, floor_u32, u64_f64};
use crate::store::Store;

/// A leadership claim lasts this many update intervals without renewal.
pub const LEADER_TTL_INTERVALS: u64 = 3;
/// Low-load samples needed to update the baseline (a start-up under overload yields few).
pub const MIN_BASELINE_SAMPLES: u64 = 5;
/// A decision looks back at most this many intervals to find enough latency samples.
pub const HISTORY_INTERVALS: usize = 10;
/// Reports older than this many intervals are ignored (their worker is gone or idle).
pub const REPORT_TTL_INTERVALS: u64 = 3;
/// Latency samples a worker aims for per update interval, in multiples of `min_samples`: when
/// its last interval admitted more requests than that, it times one request in N (see
/// [`Worker::timing`]).
pub const TIMED_PER_MIN_SAMPLES: u64 = 4;

/// Counters since the last tick, flushed to metrics by the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Admitted per class (lowest first).
    pub admitted: [u64; 4],
    /// Rejected (or, in dry run, would have been) per class.
    pub rejected: [u64; 4],
}

/// What the tick decided, for metrics and logs (the leader's view; `None` elsewhere).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decided {
    /// Global limit.
    pub limit: f64,
    /// Sum of in-flight reported by all workers.
    pub inflight: u64,
    /// Baseline latency (µs), 0 when unknown.
    pub baseline_us: f64,
    /// Last latency sample (µs), 0 when none.
    pub sample_us: f64,
}

/// Per-worker load-shedding state.
#[derive(Debug)]
pub struct Worker {
    keys: Keys,
    id: u32,
    interval_ns: u64,
    initial_lease: u32,
    lease: Option<u32>,
    low_load: Option<f64>,
    last_publish_ns: Option<u64>,
    admission: ClassAdmission,
    report: Report,
    counts: Counts,
    leader: Option<GradientLimit>,
    params: super::gradient::GradientParams,
    last_seq: Vec<(u32, u64)>,
    /// The leader's memory per worker: smoothed arrivals and when it last saw any (ns).
    demand: Vec<(u32, f64, u64)>,
    history: VecDeque<(Histogram, Histogram)>,
    /// Which requests are timed: those admitted above low load, and those at low load.
    sampling: [Sampler; 2],
}

/// Times one request in `stride` of a kind (see [`Worker::timing`]).
#[derive(Clone, Copy, Debug)]
struct Sampler {
    /// 1: every request.
    stride: u32,
    /// Requests since the last one timed.
    untimed: u32,
    /// Requests this interval.
    seen: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            stride: 1,
            untimed: 0,
            seen: 0,
        }
    }
}

impl Sampler {
    fn next(&mut self) -> Option<u32> {
        self.seen = self.seen.saturating_add(1);
        self.untimed = self.untimed.saturating_add(1);
        if self.untimed < self.stride {
            return None;
        }
        self.untimed = 0;
        Some(self.stride)
    }

    /// Sets the stride for the next interval from this one's requests: about `wanted` timed.
    fn roll(&mut self, wanted: u64) {
        self.stride = u32::try_from(self.seen.checked_div(wanted).unwrap_or(0))
            .unwrap_or(u32::MAX)
            .max(1);
        self.untimed = self.untimed.min(self.stride.saturating_sub(1));
        self.seen = 0;
    }
}

#[derive(Debug)]
struct Keys {
    next_id: String,
    leader: String,
    state: String,
    report_prefix: String,
}

impl Worker {
    /// A worker for `config`, with shared-data keys under `prefix`. Allocates this VM's worker
    /// id from the store.
    pub fn new(config: &Config, prefix: &str, store: &mut impl Store) -> Self {
        let keys = Keys {
            next_id: format!("{prefix}/next_id"),
            leader: format!("{prefix}/leader"),
            state: format!("{prefix}/state"),
            report_prefix: format!("{prefix}/r/"),
        };
        let id = allocate_id(&keys.next_id, store);
        Self {
            keys,
            id,
            interval_ns: u64::try_from(config.update_interval.as_nanos()).unwrap_or(u64::MAX),
            initial_lease: floor_u32(config.gradient.initial_limit).max(1),
            lease: None,
            low_load: None,
            last_publish_ns: None,
            admission: ClassAdmission::new(config.reserve),
            report: Report::default(),
            counts: Counts::default(),
            leader: None,
            params: config.gradient.clone(),
            last_seq: Vec::new(),
            demand: Vec::new(),
            history: VecDeque::new(),
            sampling: [Sampler::default(); 2],
        }
    }

    /// This VM's worker id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The lease requests are admitted against: the leader's, or the initial limit before the
    /// first decision; at least 1, so a worker that was idle when leases were split can still
    /// serve until the next tick (over-admission bounded by one request per such worker).
    pub fn lease(&self) -> u32 {
        self.lease.unwrap_or(self.initial_lease).max(1)
    }

    /// Requests of this worker in flight.
    pub fn inflight(&self) -> u32 {
        self.admission.inflight()
    }

    /// Decides a request of `class`. In dry run the caller admits anyway with
    /// [`Worker::admit_anyway`].
    pub fn admit(&mut self, class: Criticality) -> Admit {
        self.report.arrivals = self.report.arrivals.saturating_add(1);
        let lease = self.lease();
        let low_load = self.low_load.unwrap_or(f64::from(lease) / 2.0);
        let decision = self.admission.try_admit(class, lease, low_load);
        let slot = match decision {
            Admit::Yes { .. } => self.counts.admitted.get_mut(class.index()),
            Admit::No { .. } => self.counts.rejected.get_mut(class.index()),
        };
        if let Some(n) = slot {
            *n = n.saturating_add(1);
        }
        decision
    }

    /// Counts a request in flight without a decision (dry run of a rejection).
    pub fn admit_anyway(&mut self, class: Criticality) {
        self.admission.force_admit(class);
    }

    /// Whether to time a request admitted with `low_load` (call once per admitted request),
    /// and if so the weight of its latency sample: how many requests it stands for.
    ///
    /// Timing a request costs the filter two clock reads, host calls that Envoy charges about
    /// a microsecond each. A decision needs `min_samples` latencies, not every request's: when
    /// this worker's last interval admitted more than [`TIMED_PER_MIN_SAMPLES`] × `min_samples`
    /// requests of a kind, one request in N of that kind is timed (N keeps about that many
    /// samples per interval) and its sample counts N times, so percentiles and throughput stay
    /// unbiased. Requests at low load (the baseline's) and above it are sampled separately:
    /// under overload the few at low load are all timed.
    pub fn timing(&mut self, low_load: bool) -> Option<u32> {
        self.sampling
            .get_mut(usize::from(low_load))
            .and_then(Sampler::next)
    }

    /// A request admitted with `low_load` completed after `latency_us` (a sample of weight 1).
    pub fn complete(&mut self, class: Criticality, latency_us: u64, low_load: bool) {
        self.complete_timed(class, latency_us, low_load, 1);
    }

    /// A request admitted with `low_load` and timed with `weight` (see [`Worker::timing`])
    /// completed after `latency_us`.
    pub fn complete_timed(
        &mut self,
        class: Criticality,
        latency_us: u64,
        low_load: bool,
        weight: u32,
    ) {
        self.admission.release(class);
        self.report.latency.record_n(latency_us, weight);
        if low_load {
            self.report.low_load.record_n(latency_us, weight);
        }
    }

    /// A request admitted earlier ended without a latency sample: cancelled or reset, or
    /// completed but not timed (see [`Worker::timing`]).
    pub fn cancel(&mut self, class: Criticality) {
        self.admission.release(class);
    }

    /// Takes the counters accumulated since the last call.
    pub fn take_counts(&mut self) -> Counts {
        core::mem::take(&mut self.counts)
    }

    /// Once per update interval: publish, lead if leader, adopt the lease.
    pub fn tick(&mut self, now_ns: u64, store: &mut impl Store) -> Option<Decided> {
        self.publish(now_ns, store);
        let decided = if self.claim_leadership(now_ns, store) {
            self.decide(now_ns, store)
        } else {
            self.leader = None;
            None
        };
        if let Some(state) = store
            .get(&self.keys.state)
            .and_then(|(v, _)| State::decode(&v))
        {
            // A worker the leader has not heard from yet assumes it is one more worker and
            // takes an equal share (over-admission is bounded by that share for one interval).
            let lease = state.lease_of(self.id).unwrap_or_else(|| {
                let n = u32::try_from(state.leases.len()).unwrap_or(u32::MAX);
                floor_u32(state.limit / f64::from(n.saturating_add(1)))
            });
            self.lease = Some(lease);
            // This worker's share of the global low-load level, in proportion to its lease.
            self.low_load = (state.limit > 0.0)
                .then(|| state.low_load_inflight * f64::from(lease.max(1)) / state.limit);
        }
        self.admission.end_window();
        decided
    }

    fn publish(&mut self, now_ns: u64, store: &mut impl Store) {
        self.report.seq = self.report.seq.wrapping_add(1);
        self.report.at_ns = now_ns;
        self.report.window_ns = now_ns.saturating_sub(self.last_publish_ns.unwrap_or(now_ns));
        self.last_publish_ns = Some(now_ns);
        self.report.peak = self.admission.peak().max(self.admission.inflight());
        self.report.inflight = self.admission.inflight();
        self.report.lease = self.lease();
        // The next interval times about TIMED_PER_MIN_SAMPLES x min_samples of each kind.
        let wanted = self
            .params
            .min_samples
            .saturating_mul(TIMED_PER_MIN_SAMPLES);
        for s in &mut self.sampling {
            s.roll(wanted);
        }
        let key = format!("{}{}", self.keys.report_prefix, self.id);
        let _ = store.set(&key, &self.report.encode(), 0);
        let seq = self.report.seq;
        self.report = Report {
            seq,
            ..Report::default()
        };
    }

    fn claim_leadership(&mut self, now_ns: u64, store: &mut impl Store) -> bool {
        let ttl = self.interval_ns.saturating_mul(LEADER_TTL_INTERVALS);
        let current = store.get(&self.keys.leader);
        let (holder, expires, cas) = match &current {
            Some((v, cas)) => match (v.get(..4), v.get(4..12)) {
                (Some(a), Some(b)) => (
                    u32::from_le_bytes(a.try_into().unwrap_or_default()),
                    u64::from_le_bytes(b.try_into().unwrap_or_default()),
                    *cas,
                ),
                _ => (u32::MAX, 0, *cas),
            },
            None => (u32::MAX, 0, 0),
        };
        if holder != self.id && expires > now_ns {
            return false;
        }
        let mut claim = self.id.to_le_bytes().to_vec();
        claim.extend_from_slice(&now_ns.saturating_add(ttl).to_le_bytes());
        store.set(&self.keys.leader, &claim, cas)
    }

    fn decide(&mut self, now_ns: u64, store: &mut impl Store) -> Option<Decided> {
        let previous = store
            .get(&self.keys.state)
            .and_then(|(v, _)| State::decode(&v));
        let limit = self.leader.get_or_insert_with(|| {
            let mut l = GradientLimit::new(self.params.clone());
            if let Some(s) = &previous {
                l.resume(s.limit, s.baseline_us);
            }
            l
        });
        // Gather fresh reports: workers 0..next_id that reported within the TTL.
        let max_id = store
            .get(&self.keys.next_id)
            .and_then(|(v, _)| Some(u32::from_le_bytes(v.get(..4)?.try_into().ok()?)))
            .unwrap_or(0)
            .min(1024);
        let ttl = self.interval_ns.saturating_mul(REPORT_TTL_INTERVALS);
        let mut latency = Histogram::new();
        let mut low_load = Histogram::new();
        // The busiest worker relative to its lease decides whether the limit is used: leases
        // split the limit, so one worker can be at its lease while the sum of peaks is not.
        let mut peak_ratio = 0.0f64;
        let mut inflight = 0u64;
        let mut throughput = 0.0f64; // completions per second, summed over workers
        let mut demands = Vec::new();
        let memory = self.interval_ns.saturating_mul(BURST_MEMORY_INTERVALS);
        for id in 0..max_id {
            let key = format!("{}{id}", self.keys.report_prefix);
            let Some(r) = store.get(&key).and_then(|(v, _)| Report::decode(&v)) else {
                continue;
            };
            if now_ns.saturating_sub(r.at_ns) > ttl {
                continue;
            }
            // Demand is smoothed across intervals: the workers' windows are offset, so a sudden
            // change of load shows in one report an interval before the other.
            let (smoothed, last_active) = match self.demand.iter_mut().find(|(w, ..)| *w == id) {
                Some((_, d, seen)) => {
                    *d = 0.5 * *d + 0.5 * u64_f64(r.arrivals);
                    if r.arrivals > 0 {
                        *seen = now_ns;
                    }
                    (*d, *seen)
                }
                None => {
                    let seen = if r.arrivals > 0 { now_ns } else { 0 };
                    self.demand.push((id, u64_f64(r.arrivals), seen));
                    (u64_f64(r.arrivals), seen)
                }
            };
            demands.push(Demand {
                id,
                arrivals: if r.arrivals == 0 {
                    0
                } else {
                    ceil_u64(smoothed).max(1)
                },
                recent: last_active != 0 && now_ns.saturating_sub(last_active) <= memory,
            });
            inflight = inflight.saturating_add(u64::from(r.inflight));
            let fresh = match self.last_seq.iter_mut().find(|(w, _)| *w == id) {
                Some((_, seq)) if *seq == r.seq => false,
                Some((_, seq)) => {
                    *seq = r.seq;
                    true
                }
                None => {
                    self.last_seq.push((id, r.seq));
                    true
                }
            };
            if fresh {
                if r.window_ns > 0 {
                    throughput += u64_f64(r.latency.count()) * 1e9 / u64_f64(r.window_ns);
                }
                latency.merge(&r.latency);
                low_load.merge(&r.low_load);
                if r.arrivals > 0 {
                    peak_ratio = peak_ratio.max(f64::from(r.peak) / f64::from(r.lease.max(1)));
                }
            }
        }
        // A decision needs `min_samples` latencies: at high traffic the newest interval has
        // them (fast reaction); at low traffic older intervals are added, newest first, up to
        // HISTORY_INTERVALS (so noise at low rates does not move the limit).
        self.history.push_front((latency, low_load));
        self.history.truncate(HISTORY_INTERVALS);
        let p = limit.params();
        let mut lat = Histogram::new();
        let mut low = Histogram::new();
        for (l, ll) in &self.history {
            if lat.count() < p.min_samples {
                lat.merge(l);
            }
            // Low-load samples are rare under overload: use the whole history.
            low.merge(ll);
        }
        let pct = |h: &Histogram, min: u64| {
            (h.count() >= min)
                .then(|| h.percentile(p.percentile))
                .flatten()
                .map(u64_f64)
        };
        let window = Window {
            sample: pct(&lat, p.min_samples),
            low_load: pct(&low, MIN_BASELINE_SAMPLES),
            peak_inflight: peak_ratio * limit.limit(),
        };
        limit.update(&window);
        let state = State {
            epoch: previous.map_or(1, |s| s.epoch.wrapping_add(1)),
            at_ns: now_ns,
            limit: limit.limit(),
            baseline_us: limit.baseline().unwrap_or(0.0),
            sample_us: limit.sample().unwrap_or(0.0),
            low_load_inflight: match limit.baseline() {
                Some(b) if throughput > 0.0 => 0.5 * throughput * b / 1e6,
                _ => limit.limit() / 2.0,
            },
            leases: split_active(limit.limit(), &demands, inflight),
        };
        let _ = store.set(&self.keys.state, &state.encode(), 0);
        Some(Decided {
            limit: state.limit,
            inflight,
            baseline_us: state.baseline_us,
            sample_us: state.sample_us,
        })
    }
}

/// Share of the unused limit (limit − in flight) set aside for workers that served traffic
/// recently but saw none in the last interval, so such a worker can still take a burst.
pub const BURST_SHARE: f64 = 0.5;
/// "Recently": within this many update intervals (60 s at the default 100 ms). A VM that never
/// serves requests (Envoy's main thread) or a worker idle for longer gets no burst slice.
pub const BURST_MEMORY_INTERVALS: u64 = 600;

/// One worker as the leader sees it when splitting the limit.
#[derive(Clone, Copy, Debug)]
struct Demand {
    id: u32,
    /// Smoothed arrivals per interval, 0 if none in the last one.
    arrivals: u64,
    /// Had arrivals within [`BURST_MEMORY_INTERVALS`].
    recent: bool,
}

/// Leases for the next interval. Σ leases ≤ floor(limit) always.
///
/// Workers that saw traffic in the last interval split the limit in proportion to their
/// arrivals. A worker that served traffic recently but had no arrivals in the last interval
/// (new connections land on any worker) gets an even slice of `BURST_SHARE` × the unused limit,
/// taken from the busy workers' split, instead of a lease of 1 that would reject a burst while
/// the limit is mostly free. Under overload nothing is unused and leases follow arrivals alone;
/// a VM that never served (the main thread's) gets 0.
fn split_active(limit: f64, demands: &[Demand], inflight: u64) -> Vec<(u32, u32)> {
    let active: Vec<(u32, u64)> = demands
        .iter()
        .filter(|d| d.arrivals > 0)
        .map(|d| (d.id, d.arrivals))
        .collect();
    if active.is_empty() {
        // Nobody saw traffic: split evenly so the first requests anywhere are served.
        let all: Vec<(u32, u64)> = demands.iter().map(|d| (d.id, 0)).collect();
        return split(limit, &all);
    }
    let total = floor_u32(limit).max(1);
    let quiet = demands
        .iter()
        .filter(|d| d.arrivals == 0 && d.recent)
        .count();
    let unused = u64::from(total).saturating_sub(inflight);
    let slice = match u64::try_from(quiet) {
        Ok(n) if n > 0 => floor_u32(u64_f64(unused) * BURST_SHARE / u64_f64(n)),
        _ => 0,
    };
    let set_aside = slice.saturating_mul(u32::try_from(quiet).unwrap_or(u32::MAX));
    let mut leases = split(f64::from(total.saturating_sub(set_aside)), &active);
    leases.extend(
        demands
            .iter()
            .filter(|d| d.arrivals == 0)
            .map(|d| (d.id, if d.recent { slice } else { 0 })),
    );
    leases
}

fn allocate_id(key: &str, store: &mut impl Store) -> u32 {
    for _ in 0..64 {
        let (next, cas) = match store.get(key) {
            Some((v, cas)) => (
                v.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_le_bytes),
                cas,
            ),
            None => (0, 0),
        };
        if store.set(key, &next.wrapping_add(1).to_le_bytes(), cas) {
            return next;
        }
    }
    // Contention this high does not happen at VM start; a duplicate id only merges two
    // workers' reports.
    u32::MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn sum(leases: &[(u32, u32)]) -> u32 {
        leases.iter().map(|l| l.1).sum()
    }

    fn lease(leases: &[(u32, u32)], id: u32) -> u32 {
        leases.iter().find(|l| l.0 == id).map_or(0, |l| l.1)
    }

    /// Workers as (id, arrivals in the last interval, served traffic recently).
    fn demands(d: &[(u32, u64, bool)]) -> Vec<Demand> {
        d.iter()
            .map(|&(id, arrivals, recent)| Demand {
                id,
                arrivals,
                recent,
            })
            .collect()
    }

    #[test]
    fn a_quiet_worker_keeps_room_for_a_burst_at_low_load() {
        // Worker 1 saw the only arrival of the interval; 2 and 3 served traffic a while ago;
        // 4 never did (the main thread's VM); 20 in flight.
        let d = demands(&[(1, 1, true), (2, 0, true), (3, 0, true), (4, 0, false)]);
        let l = split_active(200.0, &d, 20);
        assert_eq!(sum(&l), 200);
        // Half the free limit goes to the quiet workers: each can take 45 at once, not 1.
        assert_eq!(l, vec![(1, 110), (2, 45), (3, 45), (4, 0)]);
        // Busy workers alone split by arrivals, as before.
        let d = demands(&[(1, 30, true), (2, 10, true), (4, 0, false)]);
        assert_eq!(split_active(200.0, &d, 20), vec![(1, 150), (2, 50), (4, 0)]);
    }

    #[test]
    fn under_overload_leases_follow_arrivals_alone() {
        // The limit is full: no burst room.
        let d = demands(&[(1, 300, true), (2, 100, true), (3, 0, true)]);
        let l = split_active(100.0, &d, 100);
        assert_eq!(l.len(), 3);
        assert_eq!(lease(&l, 1), 75);
        assert_eq!(lease(&l, 2), 25);
        assert_eq!(lease(&l, 3), 0);
        // More in flight than the limit (it shrank): still within the limit.
        let d = demands(&[(1, 10, true), (2, 10, true)]);
        assert_eq!(sum(&split_active(50.0, &d, 80)), 50);
    }

    #[test]
    fn a_worker_that_never_served_gets_no_burst_slice() {
        // All traffic on worker 1: worker 2 must not hold back half the free limit.
        let d = demands(&[(1, 50, true), (2, 0, false)]);
        let l = split_active(40.0, &d, 10);
        assert_eq!(l, vec![(1, 40), (2, 0)]);
        // A quiet worker gets nothing when the limit is full.
        let d = demands(&[(1, 50, true), (2, 0, true)]);
        assert_eq!(split_active(40.0, &d, 40), vec![(1, 40), (2, 0)]);
    }

    #[test]
    fn leases_never_exceed_the_limit() {
        for limit in [1.0, 2.5, 7.0, 31.9, 200.0] {
            for inflight in [0, 1, 5, 40, 500] {
                let d = demands(&[
                    (1, 0, true),
                    (2, 7, true),
                    (3, 0, false),
                    (4, 1, true),
                    (5, 90, true),
                ]);
                let l = split_active(limit, &d, inflight);
                assert!(
                    f64::from(sum(&l)) <= limit.max(1.0),
                    "{limit} {inflight} {l:?}"
                );
                assert_eq!(l.len(), d.len(), "{l:?}");
            }
        }
    }

    #[test]
    fn a_busy_worker_times_one_request_in_n_and_weighs_its_sample_n_times() {
        use crate::load_shed::config::RawConfig;
        use crate::load_shed::shared::Report;
        use crate::store::{MemStore, Store};
        let cfg = Config::try_from(RawConfig::default()).unwrap();
        let mut store = MemStore::default();
        let mut w = Worker::new(&cfg, "ls", &mut store);
        let class = Criticality::Critical;
        // Until the first interval is known, every request is timed with weight 1.
        assert_eq!(w.timing(false), Some(1));
        assert_eq!(w.timing(true), Some(1));
        // An interval of 2,000 requests above low load (min_samples 50: 200 wanted) and 30 at
        // low load: one in 10 above low load from now on, every one at low load.
        for _ in 0..2000 {
            let _ = w.timing(false);
        }
        for _ in 0..30 {
            let _ = w.timing(true);
        }
        let _ = w.tick(100_000_000, &mut store);
        let timed: Vec<Option<u32>> = (0..30).map(|_| w.timing(false)).collect();
        assert_eq!(timed.iter().flatten().count(), 3, "{timed:?}");
        assert!(timed.iter().flatten().all(|&n| n == 10), "{timed:?}");
        assert_eq!(timed.get(9), Some(&Some(10)));
        assert_eq!(w.timing(true), Some(1));
        // 1,000 requests, each sample weighing the requests it stands for: the report counts
        // about 1,000 latencies (the leader's throughput and percentiles see every request).
        let mut weights = 0;
        for _ in 0..1000 {
            let _ = w.admit(class);
            match w.timing(false) {
                Some(n) => {
                    w.complete_timed(class, 5_000, false, n);
                    weights += u64::from(n);
                }
                None => w.cancel(class),
            }
        }
        assert!((990..=1000).contains(&weights), "{weights}");
        let _ = w.tick(200_000_000, &mut store);
        let (bytes, _) = store.get(&format!("ls/r/{}", w.id())).unwrap();
        assert_eq!(Report::decode(&bytes).unwrap().latency.count(), weights);
        // That interval had 1,030 requests above low load: one in 5 next.
        assert_eq!((0..10).filter(|_| w.timing(false).is_some()).count(), 2);
        // A quiet interval: every request timed again.
        let _ = w.tick(300_000_000, &mut store);
        assert_eq!(w.timing(false), Some(1));
    }
}
