//! Engine tests: several workers (engines) sharing one [`MemStore`], as Envoy's worker VMs share
//! shared data.

#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // tests

use super::*;
use crate::circuit_breaker::config::RawConfig;
use crate::circuit_breaker::state::Rejected;
use crate::store::MemStore;
#[cfg(target_arch = "wasm32")]
use crate::test;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn config(json: &str) -> Config {
    let raw: RawConfig = serde_json::from_str(json).unwrap();
    Config::try_from(raw).unwrap()
}

fn fail() -> Observed {
    Observed {
        http_status: Some(503),
        ..Observed::default()
    }
}

fn fin(observed: &Observed, duration_ns: u64) -> Finished {
    Finished {
        observed: *observed,
        duration_ns,
    }
}

fn ok() -> Observed {
    Observed {
        http_status: Some(200),
        ..Observed::default()
    }
}

#[test]
fn consecutive_failures_are_counted_per_envoy_and_every_worker_sees_the_trip() {
    let c = config(r#"{"open": {"jitter_percent": 0}}"#);
    let mut store = MemStore::default();
    let mut workers = [Engine::new("cb", 1), Engine::new("cb", 2)];
    let mut transitions = Vec::new();
    // Five failures, alternating between the workers.
    for i in 0..5 {
        let w = &mut workers[i % 2];
        let d = w.admit(&c, "svc", 0, &mut store);
        assert_eq!(d.admission, Admission::Allow, "call {i}");
        let r = w.record(&c, "svc", &d, &fin(&fail(), 1), || 10, &mut store);
        transitions.extend(r.transition);
    }
    assert_eq!(
        transitions,
        vec![Transition::Opened(TripReason::ConsecutiveFailures)]
    );
    // The very next request on either worker is rejected, with the remaining open time.
    for w in &mut workers {
        let d = w.admit(&c, "svc", S, &mut store);
        assert_eq!(
            d.admission,
            Admission::Reject {
                why: Rejected::Open,
                retry_after_ns: Some(4 * S + 10)
            }
        );
    }
    // Another cluster is unaffected.
    assert_eq!(
        workers[0].admit(&c, "other", S, &mut store).admission,
        Admission::Allow
    );
}

#[test]
fn probes_are_bounded_across_workers_and_close_the_breaker() {
    let c = config(r#"{"open": {"jitter_percent": 0}, "half_open": {"permitted_calls": 3}}"#);
    let mut store = MemStore::default();
    let mut a = Engine::new("cb", 1);
    let mut b = Engine::new("cb", 2);
    for _ in 0..5 {
        let d = a.admit(&c, "svc", 0, &mut store);
        a.record(&c, "svc", &d, &fin(&fail(), 1), || 0, &mut store);
    }
    // After the open period, each worker tries five requests: three probes in all.
    let mut probes = Vec::new();
    for i in 0..10 {
        let (w, name) = if i % 2 == 0 {
            (&mut a, 'a')
        } else {
            (&mut b, 'b')
        };
        let d = w.admit(&c, "svc", 5 * S, &mut store);
        if d.admission == Admission::Probe {
            probes.push((name, d));
        } else {
            assert_eq!(
                d.admission,
                Admission::Reject {
                    why: Rejected::ProbesTaken,
                    retry_after_ns: None
                }
            );
        }
    }
    assert_eq!(probes.len(), 3);
    let mut last = None;
    for (name, d) in &probes {
        let w = if *name == 'a' { &mut a } else { &mut b };
        last = w
            .record(&c, "svc", d, &fin(&ok(), 1), || 5 * S, &mut store)
            .transition
            .or(last);
    }
    assert_eq!(last, Some(Transition::Closed));
    assert_eq!(
        b.admit(&c, "svc", 5 * S, &mut store).admission,
        Admission::Allow
    );
}

#[test]
fn a_slow_probe_fails_and_an_abandoned_probe_frees_its_slot() {
    let c = config(
        r#"{"open": {"jitter_percent": 0}, "half_open": {"permitted_calls": 1},
            "failure": {"slow_call_duration": "100ms"}}"#,
    );
    let mut store = MemStore::default();
    let mut e = Engine::new("cb", 1);
    for _ in 0..5 {
        let d = e.admit(&c, "svc", 0, &mut store);
        e.record(&c, "svc", &d, &fin(&fail(), 1), || 0, &mut store);
    }
    let d = e.admit(&c, "svc", 5 * S, &mut store);
    assert_eq!(d.admission, Admission::Probe);
    e.abandon(&c, "svc", &d, 5 * S, &mut store);
    let d = e.admit(&c, "svc", 5 * S, &mut store);
    assert_eq!(d.admission, Admission::Probe, "slot freed");
    let r = e.record(&c, "svc", &d, &fin(&ok(), 200 * MS), || 5 * S, &mut store);
    assert_eq!(
        r.transition,
        Some(Transition::Opened(TripReason::ProbeFailed))
    );
}

#[test]
fn failure_rate_window_trips_from_merged_worker_counts() {
    let c = config(
        r#"{"trip": {"consecutive_failures": 0,
                     "failure_rate": {"threshold_percent": 50, "minimum_calls": 20,
                                      "window": {"duration": "10s"}}}}"#,
    );
    let mut store = MemStore::default();
    let mut workers = [Engine::new("cb", 1), Engine::new("cb", 2)];
    // Each worker: 6 failures, 6 successes interleaved (never 5 in a row anyway).
    for w in &mut workers {
        for i in 0..12 {
            let d = w.admit(&c, "svc", 0, &mut store);
            let o = if i % 2 == 0 { fail() } else { ok() };
            assert_eq!(
                w.record(&c, "svc", &d, &fin(&o, 1), || 0, &mut store)
                    .transition,
                None
            );
        }
    }
    // The first worker's tick sees 12 calls: below the minimum.
    assert!(workers[0].tick(&c, 100 * MS, &mut store).is_empty());
    // The second brings the window to 24 calls, 50 % failed: trip.
    let t = workers[1].tick(&c, 150 * MS, &mut store);
    assert_eq!(
        t,
        vec![(
            "svc".to_owned(),
            Transition::Opened(TripReason::FailureRate)
        )]
    );
    assert!(matches!(
        workers[0].admit(&c, "svc", 200 * MS, &mut store).admission,
        Admission::Reject {
            why: Rejected::Open,
            ..
        }
    ));
}

#[test]
fn slow_call_rate_trips() {
    let c = config(
        r#"{"failure": {"slow_call_duration": "1s"},
            "trip": {"slow_call_rate": {"threshold_percent": 80, "minimum_calls": 10}}}"#,
    );
    let mut store = MemStore::default();
    let mut e = Engine::new("cb", 1);
    for _ in 0..10 {
        let d = e.admit(&c, "svc", 0, &mut store);
        let r = e.record(&c, "svc", &d, &fin(&ok(), 2 * S), || 0, &mut store);
        assert!(r.slow);
    }
    let t = e.tick(&c, 100 * MS, &mut store);
    assert_eq!(
        t,
        vec![(
            "svc".to_owned(),
            Transition::Opened(TripReason::SlowCallRate)
        )]
    );
}

#[test]
fn keys_are_bounded_and_agreed_by_all_workers() {
    let c = config(r#"{"key": {"header": ":authority", "max_keys": 2}}"#);
    let mut store = MemStore::default();
    let mut a = Engine::new("cb", 1);
    let mut b = Engine::new("cb", 2);
    assert_eq!(a.key(&c, "svc", Some(b"x"), &mut store), "svc|x");
    assert_eq!(b.key(&c, "svc", Some(b"y"), &mut store), "svc|y");
    assert_eq!(a.key(&c, "svc", Some(b"z"), &mut store), "svc|~other");
    assert_eq!(b.key(&c, "svc", Some(b"z"), &mut store), "svc|~other");
    assert_eq!(b.key(&c, "svc", Some(b"x"), &mut store), "svc|x");
    assert_eq!(a.key(&c, "svc", None, &mut store), "svc");
    // Without a key header configured, the value is ignored.
    let plain = config("{}");
    assert_eq!(a.key(&plain, "svc", Some(b"q"), &mut store), "svc");
}

/// A [`MemStore`] that counts the reads and writes made of it.
#[derive(Default)]
struct Counting {
    store: MemStore,
    gets: u32,
    sets: u32,
}

impl Store for Counting {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.gets += 1;
        self.store.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        self.sets += 1;
        self.store.set(key, value, cas)
    }
}

#[test]
fn healthy_traffic_writes_nothing() {
    let c = config("{}");
    let mut store = Counting::default();
    let mut e = Engine::new("cb", 1);
    for _ in 0..100 {
        let d = e.admit(&c, "svc", 0, &mut store);
        e.record(&c, "svc", &d, &fin(&ok(), 1), || 0, &mut store);
    }
    assert_eq!(store.sets, 0);
}

#[test]
fn a_worker_rereads_a_quiet_breaker_at_most_every_read_cache_interval() {
    let c = config(r#"{"trip": {"consecutive_failures": 2}, "open": {"jitter_percent": 0}}"#);
    let mut store = Counting::default();
    let mut a = Engine::new("cb", 1);
    let mut b = Engine::new("cb", 2);
    // Healthy traffic on `b`: one read per interval, not one per request.
    for i in 0..100 {
        let d = b.admit(&c, "svc", i * MS / 10, &mut store);
        assert_eq!(d.admission, Admission::Allow);
        b.record(&c, "svc", &d, &fin(&ok(), 1), || i * MS / 10, &mut store);
    }
    assert_eq!(store.gets, 1, "100 requests in 10 ms");
    // `a` trips the breaker at 5 ms and rejects its own next request at once.
    for _ in 0..2 {
        let d = a.admit(&c, "svc", 5 * MS, &mut store);
        a.record(&c, "svc", &d, &fin(&fail(), 1), || 5 * MS, &mut store);
    }
    assert!(matches!(
        a.admit(&c, "svc", 5 * MS, &mut store).admission,
        Admission::Reject { .. }
    ));
    // `b` still trusts its read of 0 ms until 10 ms, then sees the trip.
    assert_eq!(
        b.admit(&c, "svc", READ_CACHE_NS - 1, &mut store).admission,
        Admission::Allow
    );
    assert!(matches!(
        b.admit(&c, "svc", READ_CACHE_NS, &mut store).admission,
        Admission::Reject {
            why: Rejected::Open,
            ..
        }
    ));
    // A failure `b` records is written from a fresh read, and `b` decides on what it wrote.
    let mut c2 = Engine::new("cb", 3);
    let d = c2.admit(&c, "other", 0, &mut store);
    c2.record(&c, "other", &d, &fin(&fail(), 1), || 0, &mut store);
    let d = c2.admit(&c, "other", 0, &mut store);
    assert_eq!(
        d.seen.consecutive, 1,
        "not the cached read of before the failure"
    );
}

/// Random interleavings of two workers: the invariants of the state machine hold whatever the
/// order (no transition without its condition, probes bounded, no open → closed jump).
#[test]
fn random_interleavings_keep_the_invariants() {
    let c = config(r#"{"half_open": {"permitted_calls": 2}, "open": {"base_duration": "1s"}}"#);
    for seed in 1..40u64 {
        let mut rng = seed;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut store = MemStore::default();
        let mut workers = [Engine::new("cb", seed), Engine::new("cb", seed + 100)];
        let mut open: Vec<(usize, Decision)> = Vec::new();
        let mut now = 0u64;
        let mut phase = Phase::Closed;
        for _ in 0..400 {
            now += next() % (200 * MS);
            let w = usize::from(next() % 2 == 1);
            if next() % 3 == 0 || open.is_empty() {
                let d = workers[w].admit(&c, "svc", now, &mut store);
                if d.admission == Admission::Probe || d.admission == Admission::Allow {
                    open.push((w, d));
                }
            } else {
                let i = usize::try_from(next() % open.len() as u64).unwrap();
                let (w, d) = open.swap_remove(i);
                let o = if next() % 2 == 0 { fail() } else { ok() };
                let r = workers[w].record(&c, "svc", &d, &fin(&o, 1), || now, &mut store);
                match r.transition {
                    Some(Transition::Opened(TripReason::ConsecutiveFailures)) => {
                        assert_eq!(r.outcome, Some(Outcome::Failure));
                        assert_eq!(d.admission, Admission::Allow);
                    }
                    Some(Transition::Opened(TripReason::ProbeFailed))
                    | Some(Transition::Closed) => {
                        assert_eq!(d.admission, Admission::Probe);
                    }
                    _ => {}
                }
            }
            let (b, _) = workers[0].read("svc", &mut store);
            assert!(b.probes_issued <= 2, "seed {seed}: {b:?}");
            assert!(
                !(phase == Phase::Open && b.phase == Phase::Closed),
                "seed {seed}: open -> closed without probes"
            );
            phase = b.phase;
        }
    }
}
