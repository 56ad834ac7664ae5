//! One worker VM's side of circuit breaking: breaker keys, CAS loops on the shared breaker
//! value, local window counts merged on tick.
//!
//! Per request: the breaker as last read from shared data, re-read when that read is older than
//! [`READ_CACHE_NS`] (so every worker sees a trip within 10 ms, and the worker that tripped it
//! at once), and a write only when the breaker changes (a failure, the first success after
//! failures, a probe, an in-flight count). A decision that writes always reads first.
//! Failure-rate and slow-call-rate windows are counted locally and merged into shared data
//! once per `evaluation_interval`, so a rate trip is seen within one interval. Everything here
//! is pure over the [`Store`] port.

use std::collections::BTreeMap;

use super::config::{Config, Rate};
use super::outcome::{Observed, Outcome};
use super::state::{Admission, Breaker, Phase, Transition, TripReason};
use super::window::{Counts, Window};
use crate::num::u64_f64;
use crate::store::Store;

/// CAS attempts before giving up on an update.
pub const MAX_CAS_ATTEMPTS: u32 = 16;
/// The shared key of values beyond `max_keys`.
pub const OVERFLOW_KEY: &str = "~other";
/// How long a worker decides on its last read of a breaker, when that decision writes nothing
/// (closed without `max_requests`, open before its wait ends, half-open without a free probe).
/// A shared-data read takes a process-wide lock in Envoy and re-enters the VM to copy the value
/// in: at 10k requests per second per worker this turns 10k of them into 100, and a trip on
/// another worker is seen within this long (decisions that write, e.g. the probe after the
/// wait, always read first).
pub const READ_CACHE_NS: u64 = 10_000_000;
/// Breakers remembered per worker (keys are bounded by clusters × `max_keys`; past this the
/// memory starts over).
const READ_CACHE_MAX: usize = 4096;

/// The decision on one request, with what the caller must remember for its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub admission: Admission,
    /// The breaker value the decision was made on.
    pub seen: Breaker,
    /// A transition this decision caused (open → half-open).
    pub transition: Option<Transition>,
    /// The decision could not be written after [`MAX_CAS_ATTEMPTS`] (contention): the request
    /// was let through (fail open).
    pub contended: bool,
}

/// What the request's outcome changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The outcome.
    pub outcome: Option<Outcome>,
    /// The call was slow.
    pub slow: bool,
    /// A transition it caused.
    pub transition: Option<Transition>,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// What was observed.
    pub observed: Observed,
    /// From admission to completion (ns).
    pub duration_ns: u64,
}

/// Per-worker circuit-breaking state.
#[derive(Debug)]
pub struct Engine {
    prefix: String,
    /// Local window counts per breaker key, merged on tick.
    pending: BTreeMap<String, Counts>,
    /// Known header values per cluster (mirrors the shared registry).
    known: BTreeMap<String, Vec<String>>,
    /// The last read of each breaker that needed no write, with when it stops being trusted
    /// (see [`READ_CACHE_NS`]).
    read_cache: BTreeMap<String, (Breaker, u64)>,
    rng: u64,
}

impl Engine {
    /// An engine whose shared keys start with `prefix`; `seed` varies the open-time jitter.
    pub fn new(prefix: &str, seed: u64) -> Self {
        Self {
            prefix: prefix.to_owned(),
            pending: BTreeMap::new(),
            known: BTreeMap::new(),
            read_cache: BTreeMap::new(),
            rng: seed | 1,
        }
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64*: jitter only needs to differ between workers and trips.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let v = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        u64_f64(v) / u64_f64(1u64 << 53)
    }

    /// The breaker key of a request to `cluster` with key-header value `value`. Values beyond
    /// `max_keys` per cluster (agreed by all workers through a shared registry) share
    /// [`OVERFLOW_KEY`].
    pub fn key(
        &mut self,
        config: &Config,
        cluster: &str,
        value: Option<&[u8]>,
        store: &mut impl Store,
    ) -> String {
        let Some(value) = value.filter(|_| config.key_header.is_some()) else {
            return cluster.to_owned();
        };
        let value = String::from_utf8_lossy(value);
        let known = self.known.entry(cluster.to_owned()).or_default();
        if known.iter().any(|k| *k == value) {
            return format!("{cluster}|{value}");
        }
        // Not known here: consult (and maybe extend) the shared registry.
        let reg_key = format!("{}/keys/{cluster}", self.prefix);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut list, cas) = match store.get(&reg_key) {
                Some((v, cas)) => (decode_list(&v), cas),
                None => (Vec::new(), 0),
            };
            if list.iter().any(|k| *k == value) {
                *known = list;
                return format!("{cluster}|{value}");
            }
            if u32::try_from(list.len()).unwrap_or(u32::MAX) >= config.max_keys {
                *known = list;
                return format!("{cluster}|{OVERFLOW_KEY}");
            }
            list.push(value.clone().into_owned());
            if store.set(&reg_key, &encode_list(&list), cas) {
                *known = list;
                return format!("{cluster}|{value}");
            }
        }
        format!("{cluster}|{OVERFLOW_KEY}")
    }

    fn breaker_key(&self, key: &str) -> String {
        // Built by hand: this runs on every request, and `format!` (core::fmt) costs about as
        // many Wasm instructions as the rest of the breaker's decision.
        let mut k = String::with_capacity(
            self.prefix
                .len()
                .saturating_add(key.len())
                .saturating_add(3),
        );
        k.push_str(&self.prefix);
        k.push_str("/b/");
        k.push_str(key);
        k
    }

    /// Reads a breaker (closed when absent or unreadable).
    pub fn read(&self, key: &str, store: &mut impl Store) -> (Breaker, u32) {
        read_at(&self.breaker_key(key), store)
    }

    /// Decides a request for breaker `key` at `now_ns`.
    pub fn admit(
        &mut self,
        config: &Config,
        key: &str,
        now_ns: u64,
        store: &mut impl Store,
    ) -> Decision {
        if let Some((seen, until_ns)) = self.read_cache.get(key)
            && now_ns < *until_ns
            && let (admission, None) = seen.admit(now_ns, &config.params)
        {
            return Decision {
                admission,
                seen: *seen,
                transition: None,
                contended: false,
            };
        }
        let bkey = self.breaker_key(key);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (seen, cas) = read_at(&bkey, store);
            let (admission, write) = seen.admit(now_ns, &config.params);
            let Some((next, transition)) = write else {
                self.remember(key, seen, now_ns);
                return Decision {
                    admission,
                    seen,
                    transition: None,
                    contended: false,
                };
            };
            if store.set(&bkey, &next.encode(), cas) {
                self.read_cache.remove(key);
                return Decision {
                    admission,
                    seen,
                    transition,
                    contended: false,
                };
            }
        }
        Decision {
            admission: Admission::Allow,
            seen: Breaker::default(),
            transition: None,
            contended: true,
        }
    }

    /// Records a call admitted with `decision` that finished. `now_ns` (monotonic ns) is asked
    /// only when the outcome changes the shared breaker: the common healthy call writes
    /// nothing and needs no clock (one host call fewer per request for the filter).
    pub fn record(
        &mut self,
        config: &Config,
        key: &str,
        decision: &Decision,
        finished: &Finished,
        now_ns: impl FnOnce() -> u64,
        store: &mut impl Store,
    ) -> Recorded {
        let Finished {
            observed,
            duration_ns,
        } = *finished;
        let outcome = config.classifier.classify(&observed);
        let slow =
            config.slow_call_ns.is_some_and(|t| duration_ns > t) && outcome != Outcome::Ignored;
        let probe = decision.admission == Admission::Probe;
        // Window counts feed only the rate trips (merged on tick).
        let windowed = config.failure_rate.is_some() || config.slow_call_rate.is_some();
        if windowed && outcome != Outcome::Ignored && !probe {
            let counts = Counts {
                calls: 1,
                failures: u32::from(outcome == Outcome::Failure),
                slow: u32::from(slow),
            };
            // Looked up before inserting: no key copy on the requests after a key's first.
            match self.pending.get_mut(key) {
                Some(c) => c.add(counts),
                None => {
                    self.pending.insert(key.to_owned(), counts);
                }
            }
        }
        // A slow probe is a failed probe: the upstream is not healthy yet.
        let effective = if probe && slow {
            Outcome::Failure
        } else {
            outcome
        };
        // The common healthy case needs no shared write at all.
        let quiet = !probe
            && config.params.max_requests.is_none()
            && decision.seen.phase == Phase::Closed
            && decision.seen.consecutive == 0
            && effective != Outcome::Failure;
        let mut recorded = Recorded {
            outcome: Some(outcome),
            slow,
            transition: None,
        };
        if quiet || decision.contended {
            return recorded;
        }
        let now_ns = now_ns();
        recorded.transition = self.update(key, store, |b, jitter| {
            b.record(effective, probe, now_ns, &config.params, jitter)
        });
        recorded
    }

    /// A call admitted with `decision` ended without an outcome (the client went away before
    /// `on_log`): frees its probe slot or in-flight count.
    pub fn abandon(
        &mut self,
        config: &Config,
        key: &str,
        decision: &Decision,
        now_ns: u64,
        store: &mut impl Store,
    ) {
        let probe = decision.admission == Admission::Probe;
        if decision.contended || (!probe && config.params.max_requests.is_none()) {
            return;
        }
        self.update(key, store, |b, jitter| {
            b.record(Outcome::Ignored, probe, now_ns, &config.params, jitter)
        });
    }

    /// Remembers a read of `key` that needed no write (see [`READ_CACHE_NS`]).
    fn remember(&mut self, key: &str, seen: Breaker, now_ns: u64) {
        let until_ns = now_ns.saturating_add(READ_CACHE_NS);
        if let Some(entry) = self.read_cache.get_mut(key) {
            *entry = (seen, until_ns);
            return;
        }
        if self.read_cache.len() >= READ_CACHE_MAX {
            self.read_cache.clear();
        }
        self.read_cache.insert(key.to_owned(), (seen, until_ns));
    }

    fn update(
        &mut self,
        key: &str,
        store: &mut impl Store,
        f: impl Fn(&Breaker, f64) -> Option<(Breaker, Option<Transition>)>,
    ) -> Option<Transition> {
        let bkey = self.breaker_key(key);
        let jitter = self.jitter();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (current, cas) = read_at(&bkey, store);
            let (next, transition) = f(&current, jitter)?;
            if store.set(&bkey, &next.encode(), cas) {
                // This worker's next decision reads what it wrote.
                self.read_cache.remove(key);
                return transition;
            }
        }
        None
    }

    /// Once per `evaluation_interval`: merges local window counts into each breaker's shared
    /// window and trips breakers whose failure or slow-call rate reached its threshold.
    pub fn tick(
        &mut self,
        config: &Config,
        now_ns: u64,
        store: &mut impl Store,
    ) -> Vec<(String, Transition)> {
        let rates: Vec<(TripReason, Rate)> = [
            (TripReason::FailureRate, config.failure_rate),
            (TripReason::SlowCallRate, config.slow_call_rate),
        ]
        .into_iter()
        .filter_map(|(r, c)| c.map(|c| (r, c)))
        .collect();
        let pending = core::mem::take(&mut self.pending);
        let mut transitions = Vec::new();
        if rates.is_empty() {
            return transitions;
        }
        for (key, counts) in pending {
            for (reason, rate) in &rates {
                let wkey = format!("{}/w/{}/{key}", self.prefix, reason.as_str());
                let bucket = config.bucket_ns(rate);
                let mut total = None;
                for _ in 0..MAX_CAS_ATTEMPTS {
                    let (mut w, cas) = match store.get(&wkey) {
                        Some((v, cas)) => (Window::decode(&v).unwrap_or_default(), cas),
                        None => (Window::default(), 0),
                    };
                    w.add(now_ns, bucket, counts, rate.span);
                    if store.set(&wkey, &w.encode(), cas) {
                        total = Some(w.total());
                        break;
                    }
                }
                let Some(t) = total else { continue };
                let bad = match reason {
                    TripReason::SlowCallRate => t.slow,
                    _ => t.failures,
                };
                if t.calls >= rate.minimum_calls
                    && u64_f64(u64::from(bad)) >= rate.threshold * u64_f64(u64::from(t.calls))
                {
                    let reason = *reason;
                    if let Some(tr) = self.update(&key, store, |b, j| {
                        b.trip(reason, now_ns, &config.params, j)
                    }) {
                        transitions.push((key.clone(), tr));
                        // Start the next closed period with an empty window.
                        let _ = store.set(&wkey, &Window::default().encode(), 0);
                    }
                }
            }
        }
        transitions
    }
}

/// Reads the breaker stored at `bkey` (closed when absent or unreadable).
fn read_at(bkey: &str, store: &mut impl Store) -> (Breaker, u32) {
    match store.get(bkey) {
        Some((v, cas)) => (Breaker::decode(&v).unwrap_or_default(), cas),
        None => (Breaker::default(), 0),
    }
}

fn encode_list(list: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, k) in list.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(k.as_bytes());
    }
    out
}

fn decode_list(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == b'\n')
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[cfg(test)]
mod tests;
