//! Invariant fuzzers: the stateful policy engines driven by random operation sequences over
//! several workers sharing one [`MemStore`] (Envoy's shared-data CAS rules), with time that
//! moves forward, jumps far ahead, and goes backwards.

use arbitrary::{Arbitrary, Unstructured};
use meshguard_policy::invalid::Invalid;
use meshguard_policy::store::{MemStore, Store};
use serde::de::DeserializeOwned;

/// A config built from fuzzed numbers, through the real parse + validation; `None` when the
/// validation rejects it (the target then uses `fallback`).
fn config<Raw, T>(json: &str, fallback: &str) -> T
where
    Raw: DeserializeOwned,
    T: TryFrom<Raw, Error = Invalid>,
{
    let parse = |s: &str| {
        meshguard_proxy::parse_config::<Raw>(s.as_bytes())
            .ok()
            .and_then(|r| T::try_from(r).ok())
    };
    parse(json)
        .or_else(|| parse(fallback))
        .expect("the fallback config is valid")
}

/// Virtual clock of a run: `now` may go backwards; `max` is the latest time seen.
#[derive(Debug)]
struct Clock {
    now: u64,
    max: u64,
}

impl Clock {
    fn new() -> Self {
        Self {
            now: 1_000_000_000_000,
            max: 1_000_000_000_000,
        }
    }
    fn apply(&mut self, t: Time) {
        self.now = match t {
            Time::Forward { us } => self.now.saturating_add(u64::from(us) * 1_000),
            Time::Jump { secs } => self.now.saturating_add(u64::from(secs) * 1_000_000_000),
            Time::Back { ms } => self.now.saturating_sub(u64::from(ms) * 1_000_000),
            Time::Far => u64::MAX - 1_000,
        };
        self.max = self.max.max(self.now);
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Time {
    Forward { us: u32 },
    Jump { secs: u16 },
    Back { ms: u32 },
    Far,
}

// === load_shed ===

#[derive(Debug, Arbitrary)]
struct LoadShedInput {
    min: u16,
    max: u16,
    initial: u16,
    interval_ms: u16,
    min_samples: u8,
    buffer: u16,
    dry_run: bool,
    workers: u8,
    ops: Vec<LoadShedOp>,
}

#[derive(Debug, Arbitrary)]
enum LoadShedOp {
    Admit {
        worker: u8,
        class: u8,
    },
    Complete {
        worker: u8,
        which: u8,
        latency_us: u32,
    },
    Cancel {
        worker: u8,
        which: u8,
    },
    Tick {
        worker: u8,
    },
    Time(Time),
}

/// `load_shed::worker::Worker`: in flight is exactly what was admitted and not yet completed
/// or cancelled (never negative, never more than admitted), an enforced admission happens only
/// under the lease, and every decided limit is within `[min, max]`.
pub fn load_shed_engine(data: &[u8]) {
    use meshguard_policy::load_shed::config::{Config, RawConfig};
    use meshguard_policy::load_shed::criticality::{Admit, Criticality};
    use meshguard_policy::load_shed::shared::State;
    use meshguard_policy::load_shed::worker::Worker;
    let Ok(input) = LoadShedInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let json = format!(
        r#"{{"mode": "{}", "concurrency_limit_params": {{"initial_concurrency_limit": {},
            "min_concurrency_limit": {}, "max_concurrency_limit": {},
            "concurrency_update_interval": "{}ms"}},
            "gradient": {{"min_samples": {}, "buffer_percent": {}}}}}"#,
        if input.dry_run { "dry_run" } else { "enforce" },
        input.initial,
        input.min,
        input.max,
        input.interval_ms,
        input.min_samples,
        input.buffer,
    );
    let c: Config = config::<RawConfig, Config>(&json, "{}");
    let (lo, hi) = (c.gradient.min_limit, c.gradient.max_limit);
    let mut store = MemStore::default();
    let n = usize::from(input.workers % 4) + 1;
    // A request in flight: its class, whether admitted at low load, its timing weight.
    type InFlight = (Criticality, bool, Option<u32>);
    let mut workers: Vec<(Worker, Vec<InFlight>)> = (0..n)
        .map(|_| (Worker::new(&c, "ls", &mut store), Vec::new()))
        .collect();
    let mut clock = Clock::new();
    for op in input.ops.into_iter().take(2000) {
        match op {
            LoadShedOp::Admit { worker, class } => {
                let (w, flight) = &mut workers[usize::from(worker) % n];
                let class = Criticality::ALL[usize::from(class) % 4];
                let before = w.inflight();
                let lease = w.lease();
                match w.admit(class) {
                    Admit::Yes { low_load } => {
                        assert!(
                            before < lease,
                            "admitted with {before} in flight, lease {lease}"
                        );
                        // Timed as the filter times it (one in N when busy, weighted N).
                        let timed = w.timing(low_load);
                        flight.push((class, low_load, timed));
                    }
                    Admit::No { .. } if !c.mode.enforces() => {
                        w.admit_anyway(class);
                        let timed = w.timing(false);
                        flight.push((class, false, timed));
                    }
                    Admit::No { .. } => {}
                }
            }
            LoadShedOp::Complete {
                worker,
                which,
                latency_us,
            } => {
                let (w, flight) = &mut workers[usize::from(worker) % n];
                if !flight.is_empty() {
                    match flight.swap_remove(usize::from(which) % flight.len()) {
                        (class, low, Some(weight)) => {
                            w.complete_timed(class, u64::from(latency_us), low, weight);
                        }
                        (class, _, None) => w.cancel(class),
                    }
                }
            }
            LoadShedOp::Cancel { worker, which } => {
                let (w, flight) = &mut workers[usize::from(worker) % n];
                if !flight.is_empty() {
                    let (class, _, _) = flight.swap_remove(usize::from(which) % flight.len());
                    w.cancel(class);
                }
            }
            LoadShedOp::Tick { worker } => {
                let (w, _) = &mut workers[usize::from(worker) % n];
                if let Some(d) = w.tick(clock.now, &mut store) {
                    assert!(
                        d.limit.is_finite() && d.limit >= lo && d.limit <= hi,
                        "limit {} outside [{lo}, {hi}]",
                        d.limit
                    );
                    assert!(d.baseline_us.is_finite() && d.sample_us.is_finite());
                }
                if let Some((v, _)) = store.get("ls/state")
                    && let Some(s) = State::decode(&v)
                {
                    assert!(
                        s.limit >= lo && s.limit <= hi,
                        "published limit {} outside [{lo}, {hi}]",
                        s.limit
                    );
                    let leased: u64 = s.leases.iter().map(|(_, l)| u64::from(*l)).sum();
                    assert!(
                        leased as f64 <= s.limit.floor() + s.leases.len() as f64,
                        "leases {leased} exceed the limit {}",
                        s.limit
                    );
                }
            }
            LoadShedOp::Time(t) => clock.apply(t),
        }
        for (w, flight) in &workers {
            assert_eq!(
                w.inflight() as usize,
                flight.len(),
                "in flight differs from admitted - finished"
            );
        }
    }
}

// === rate_limit ===

#[derive(Debug, Arbitrary)]
struct BucketParams {
    max_tokens: u16,
    tokens_per_fill: u16,
    fill_interval_ms: u16,
}

impl BucketParams {
    fn json(&self) -> String {
        format!(
            r#"{{"max_tokens": {}, "tokens_per_fill": {}, "fill_interval": "{}ms"}}"#,
            self.max_tokens, self.tokens_per_fill, self.fill_interval_ms
        )
    }
}

#[derive(Debug, Arbitrary)]
struct RateLimitInput {
    rule: BucketParams,
    per_value: BucketParams,
    default: BucketParams,
    slots: u8,
    always_consume: bool,
    workers: u8,
    ops: Vec<RateLimitOp>,
}

#[derive(Debug, Arbitrary)]
enum RateLimitOp {
    Decide {
        worker: u8,
        gold: bool,
        key: Option<u8>,
    },
    Tick {
        worker: u8,
    },
    Time(Time),
}

/// `rate_limit::engine::Engine` over leased shared buckets and per-value slots: stored tokens
/// stay within `[0, max_tokens]`, per-value slots within `max_dynamic_buckets`, and no bucket
/// admits more than its burst plus its refill over the time that passed (time going
/// backwards refills nothing).
pub fn rate_limit_engine(data: &[u8]) {
    use meshguard_policy::rate_limit::bucket::Bucket;
    use meshguard_policy::rate_limit::config::{Config, RawConfig};
    use meshguard_policy::rate_limit::descriptor::Request;
    use meshguard_policy::rate_limit::engine::{Engine, Source, Verdict};
    let Ok(input) = RateLimitInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let slots = u32::from(input.slots % 16) + 1;
    let json = format!(
        r#"{{"descriptors": [
            {{"name": "gold", "entries": [{{"header": {{"name": "x-plan", "value": "gold"}}}}],
              "token_bucket": {}}},
            {{"name": "per_key", "entries": [{{"header": {{"name": "x-key"}}}}],
              "token_bucket": {}, "max_dynamic_buckets": {slots}}}],
            "token_bucket": {}, "always_consume_default_token_bucket": {}}}"#,
        input.rule.json(),
        input.per_value.json(),
        input.default.json(),
        input.always_consume,
    );
    let fallback = r#"{"descriptors": [
        {"name": "gold", "entries": [{"header": {"name": "x-plan", "value": "gold"}}],
         "token_bucket": {"max_tokens": 5, "fill_interval": "1s"}},
        {"name": "per_key", "entries": [{"header": {"name": "x-key"}}],
         "token_bucket": {"max_tokens": 3, "fill_interval": "1s"}, "max_dynamic_buckets": 4}],
        "token_bucket": {"max_tokens": 10, "fill_interval": "1s"}}"#;
    let c: Config = config::<RawConfig, Config>(&json, fallback);
    let gold = c.rules[0].bucket.expect("gold has a bucket");
    let per_key = c.rules[1].bucket.expect("per_key has a bucket");
    let default = c.default_bucket.expect("a default bucket");
    // The fallback config (when the fuzzed numbers are rejected) has its own slot count.
    let slots = c.rules[1].max_dynamic_buckets;
    let cap = |max: u32, rate: f64, span: u64| f64::from(max) + rate * span as f64 + 1.0;
    let mut store = MemStore::default();
    let n = usize::from(input.workers % 4) + 1;
    let mut engines: Vec<Engine> = (0..n).map(|_| Engine::new("rl")).collect();
    let mut clock = Clock::new();
    let start = clock.now;
    let (mut gold_admitted, mut default_admitted) = (0u64, 0u64);
    for op in input.ops.into_iter().take(2000) {
        match op {
            RateLimitOp::Decide {
                worker,
                gold: g,
                key,
            } => {
                let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![(b":path".to_vec(), b"/".to_vec())];
                if g {
                    headers.push((b"x-plan".to_vec(), b"gold".to_vec()));
                }
                if let Some(k) = key {
                    headers.push((b"x-key".to_vec(), vec![b'k', k]));
                }
                let req = Request {
                    headers: &headers,
                    source_address: None,
                };
                let e = &mut engines[usize::from(worker) % n];
                if let Verdict::Allowed { source, .. } = e.decide(&c, &req, clock.now, &mut store) {
                    match source {
                        Source::Rule(0) => gold_admitted += 1,
                        Source::Default(None) => default_admitted += 1,
                        _ => {}
                    }
                    if c.always_consume_default && matches!(source, Source::Rule(_)) {
                        default_admitted += 1;
                    }
                }
            }
            RateLimitOp::Tick { worker } => {
                engines[usize::from(worker) % n].tick(&c, clock.now, &mut store);
            }
            RateLimitOp::Time(t) => clock.apply(t),
        }
        let span = clock.max.saturating_sub(start);
        assert!(
            (gold_admitted as f64) <= cap(gold.max_tokens, gold.rate_per_ns(), span),
            "rule bucket admitted {gold_admitted} in {span} ns: {gold:?}"
        );
        assert!(
            (default_admitted as f64) <= cap(default.max_tokens, default.rate_per_ns(), span),
            "default bucket admitted {default_admitted} in {span} ns: {default:?}"
        );
        for (spec, key) in [(gold, "rl/s/gold"), (default, "rl/default")] {
            if let Some((v, _)) = store.get(key) {
                let b = Bucket::decode(&v).expect("a stored bucket decodes");
                assert!(
                    b.tokens >= 0.0 && b.tokens <= f64::from(spec.max_tokens),
                    "{key} holds {} tokens, capacity {}",
                    b.tokens,
                    spec.max_tokens
                );
            }
        }
        let mut used = 0;
        for s in 0..64u32 {
            if let Some((v, _)) = store.get(&format!("rl/d/1/{s}")) {
                assert!(s < slots, "slot {s} beyond max_dynamic_buckets {slots}");
                used += 1;
                let b = Bucket::decode(&v[8..24]).expect("a stored slot decodes");
                assert!(b.tokens >= 0.0 && b.tokens <= f64::from(per_key.max_tokens));
            }
        }
        assert!(used <= slots);
    }
}

// === circuit_breaker ===

#[derive(Debug, Arbitrary)]
struct BreakerInput {
    consecutive: u8,
    base_ms: u16,
    max_ms: u32,
    jitter: u8,
    probes: u8,
    max_requests: Option<u8>,
    rate_threshold: u8,
    rate_min_calls: u8,
    window_calls: u8,
    slow_ms: Option<u16>,
    keyed: bool,
    workers: u8,
    ops: Vec<BreakerOp>,
}

#[derive(Debug, Arbitrary)]
enum BreakerOp {
    Admit {
        worker: u8,
        key: u8,
    },
    Finish {
        which: u8,
        status: Option<u16>,
        grpc: Option<u8>,
        cancelled: bool,
        ms: u16,
    },
    Abandon {
        which: u8,
    },
    Tick {
        worker: u8,
    },
    Time(Time),
}

/// `circuit_breaker::engine::Engine`: stored breakers decode, half-open never admits more than
/// `permitted_calls` probes (per period, and as stored), successes never exceed probes, and the
/// in-flight count stays within `max_requests`.
pub fn circuit_breaker_engine(data: &[u8]) {
    use meshguard_policy::GrpcStatus;
    use meshguard_policy::circuit_breaker::config::{Config, RawConfig};
    use meshguard_policy::circuit_breaker::engine::{Decision, Engine, Finished};
    use meshguard_policy::circuit_breaker::outcome::Observed;
    use meshguard_policy::circuit_breaker::state::{Admission, Phase, Transition};
    use std::collections::BTreeMap;
    let Ok(input) = BreakerInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let max_requests = match input.max_requests {
        Some(m) => m.to_string(),
        None => "null".into(),
    };
    let slow = match input.slow_ms {
        Some(m) => format!("\"{m}ms\""),
        None => "null".into(),
    };
    let json = format!(
        r#"{{"key": {}, "failure": {{"slow_call_duration": {slow}}},
            "trip": {{"consecutive_failures": {},
              "failure_rate": {{"threshold_percent": {}, "minimum_calls": {}, "window": {{"calls": {}}}}}}},
            "open": {{"base_duration": "{}ms", "max_duration": "{}ms", "jitter_percent": {}}},
            "half_open": {{"permitted_calls": {}}}, "max_requests": {max_requests},
            "evaluation_interval": "100ms"}}"#,
        if input.keyed {
            r#"{"header": "x-tenant", "max_keys": 3}"#
        } else {
            "null"
        },
        input.consecutive,
        input.rate_threshold,
        input.rate_min_calls,
        input.window_calls,
        input.base_ms,
        input.max_ms,
        input.jitter,
        input.probes,
    );
    let c: Config = config::<RawConfig, Config>(&json, "{}");
    let p = c.params;
    let mut store = MemStore::default();
    let n = usize::from(input.workers % 4) + 1;
    let mut engines: Vec<Engine> = (0..n).map(|i| Engine::new("cb", i as u64 + 1)).collect();
    let mut clock = Clock::new();
    let mut calls: Vec<(usize, String, Decision, u64)> = Vec::new();
    let mut probes_in_period: BTreeMap<String, u32> = BTreeMap::new();
    let mut keys: Vec<String> = Vec::new();
    for op in input.ops.into_iter().take(2000) {
        match op {
            BreakerOp::Admit { worker, key } => {
                let w = usize::from(worker) % n;
                let value = [b't', key % 6];
                let k = engines[w].key(&c, "upstream", Some(&value), &mut store);
                let d = engines[w].admit(&c, &k, clock.now, &mut store);
                if d.transition == Some(Transition::HalfOpened) {
                    probes_in_period.insert(k.clone(), 0);
                }
                if d.admission == Admission::Probe {
                    let count = probes_in_period.entry(k.clone()).or_insert(0);
                    *count += 1;
                    assert!(
                        *count <= p.permitted_probes.max(1),
                        "{count} probes in one half-open period, permitted {}",
                        p.permitted_probes
                    );
                }
                if !matches!(d.admission, Admission::Reject { .. }) {
                    calls.push((w, k.clone(), d, clock.now));
                }
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            BreakerOp::Finish {
                which,
                status,
                grpc,
                cancelled,
                ms,
            } => {
                if !calls.is_empty() {
                    let (w, k, d, _) = calls.swap_remove(usize::from(which) % calls.len());
                    let observed = Observed {
                        http_status: status,
                        grpc_status: grpc.and_then(|g| GrpcStatus::from_code(u64::from(g % 20))),
                        grpc: grpc.is_some(),
                        cancelled,
                    };
                    let r = engines[w].record(
                        &c,
                        &k,
                        &d,
                        &Finished {
                            observed,
                            duration_ns: u64::from(ms) * 1_000_000,
                        },
                        || clock.now,
                        &mut store,
                    );
                    if let Some(Transition::Opened(_)) = r.transition {
                        probes_in_period.remove(&k);
                    }
                }
            }
            BreakerOp::Abandon { which } => {
                if !calls.is_empty() {
                    let (w, k, d, _) = calls.swap_remove(usize::from(which) % calls.len());
                    engines[w].abandon(&c, &k, &d, clock.now, &mut store);
                }
            }
            BreakerOp::Tick { worker } => {
                let w = usize::from(worker) % n;
                for (k, t) in engines[w].tick(&c, clock.now, &mut store) {
                    if let Transition::Opened(_) = t {
                        probes_in_period.remove(&k);
                    }
                }
            }
            BreakerOp::Time(t) => clock.apply(t),
        }
        for k in &keys {
            let (b, _) = engines[0].read(k, &mut store);
            assert!(
                b.probes_ok <= b.probes_issued,
                "{k}: {} probe successes of {} probes",
                b.probes_ok,
                b.probes_issued
            );
            if b.phase == Phase::HalfOpen {
                assert!(
                    // (0 is fine: an abandoned probe gives its slot back)
                    b.probes_issued <= p.permitted_probes.max(1),
                    "{k}: {} probes issued, permitted {}",
                    b.probes_issued,
                    p.permitted_probes
                );
            }
            if let Some(m) = p.max_requests {
                assert!(b.inflight <= m, "{k}: {} in flight, max {m}", b.inflight);
            }
            if b.phase == Phase::Open {
                assert!(b.trips >= 1, "{k}: open without a trip");
            }
        }
    }
}
