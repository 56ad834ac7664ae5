//! Engine tests: workers (engines) sharing one [`MemStore`].

#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_precision_loss
)] // tests

use super::*;
use crate::rate_limit::config::RawConfig;
use crate::store::MemStore;
#[cfg(target_arch = "wasm32")]
use crate::test;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn config(json: &str) -> Config {
    let raw: RawConfig = serde_json::from_str(json).unwrap();
    Config::try_from(raw).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

const NATIVE_BUCKET: &str =
    r#"{"token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}}"#;

/// baselines.md §4: 100 rps with a burst of 100, offered 400 rps for 10 s, two workers:
/// expected admitted = 100 + 10 × 100 = 1100.
#[test]
fn two_workers_admit_exactly_burst_plus_rate() {
    let c = config(NATIVE_BUCKET);
    let mut store = MemStore::default();
    let mut workers = [Engine::new("rl"), Engine::new("rl")];
    let h = headers(&[(":path", "/")]);
    let req = Request {
        headers: &h,
        source_address: None,
    };
    let mut admitted = 0u64;
    // 400 rps = one request every 2.5 ms, alternating workers; ticks every 100 ms.
    for i in 0..4000u64 {
        let now = i * 2_500_000;
        let w = (i % 2) as usize;
        if matches!(
            workers[w].decide(&c, &req, now, &mut store),
            Verdict::Allowed { .. }
        ) {
            admitted += 1;
        }
        if now % (100 * MS) == 0 {
            for w in &mut workers {
                w.tick(&c, now, &mut store);
            }
        }
    }
    // At 10 s: 100 + 100 × (9.9975 s) tokens were available.
    assert!((1098..=1100).contains(&admitted), "{admitted}");
}

#[test]
fn leases_make_the_common_case_free_of_shared_writes() {
    #[derive(Default)]
    struct Counting(MemStore, u32);
    impl Store for Counting {
        fn get(&mut self, k: &str) -> Option<(Vec<u8>, u32)> {
            self.0.get(k)
        }
        fn set(&mut self, k: &str, v: &[u8], cas: u32) -> bool {
            self.1 += 1;
            self.0.set(k, v, cas)
        }
    }
    let c = config(
        r#"{"token_bucket": {"max_tokens": 1000, "tokens_per_fill": 1000, "fill_interval": "1s"}}"#,
    );
    let mut store = Counting::default();
    let mut e = Engine::new("rl");
    let req = Request::default();
    for i in 0..1000u64 {
        assert!(matches!(
            e.decide(&c, &req, i * MS, &mut store),
            Verdict::Allowed { .. }
        ));
    }
    assert!(store.1 < 50, "{} shared writes for 1000 requests", store.1);
}

#[test]
fn limited_requests_know_when_to_retry() {
    let c = config(
        r#"{"token_bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "1s"}}"#,
    );
    let mut store = MemStore::default();
    let mut e = Engine::new("rl");
    let req = Request::default();
    for _ in 0..2 {
        assert!(matches!(
            e.decide(&c, &req, 0, &mut store),
            Verdict::Allowed { .. }
        ));
    }
    match e.decide(&c, &req, 250 * MS, &mut store) {
        Verdict::Limited {
            retry_after_ns,
            contended,
            source,
            ..
        } => {
            assert_eq!(
                (retry_after_ns, contended, source),
                (750 * MS, false, Source::Default(None))
            );
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn rules_first_match_and_unlimited_when_nothing_matches() {
    let c = config(
        r#"{"descriptors": [
            {"name": "post", "entries": [{"method": "POST"}], "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}},
            {"name": "any_api", "entries": [{"path": {"prefix": "/api"}}], "token_bucket": {"max_tokens": 5, "fill_interval": "1s"}}
        ]}"#,
    );
    let mut store = MemStore::default();
    let mut e = Engine::new("rl");
    let post = headers(&[(":method", "POST"), (":path", "/api/x")]);
    let req = Request {
        headers: &post,
        source_address: None,
    };
    assert!(matches!(
        e.decide(&c, &req, 0, &mut store),
        Verdict::Allowed {
            source: Source::Rule(0),
            ..
        }
    ));
    assert!(matches!(
        e.decide(&c, &req, 0, &mut store),
        Verdict::Limited {
            source: Source::Rule(0),
            ..
        }
    ));
    let get = headers(&[(":method", "GET"), (":path", "/api/x")]);
    let req = Request {
        headers: &get,
        source_address: None,
    };
    assert!(matches!(
        e.decide(&c, &req, 0, &mut store),
        Verdict::Allowed {
            source: Source::Rule(1),
            ..
        }
    ));
    let other = headers(&[(":method", "GET"), (":path", "/web")]);
    let req = Request {
        headers: &other,
        source_address: None,
    };
    assert_eq!(e.decide(&c, &req, 0, &mut store), Verdict::Unlimited);
}

#[test]
fn per_value_buckets_are_separate_and_bounded() {
    let c = config(
        r#"{"descriptors": [{"name": "per_client", "entries": [{"client_address": {}}],
             "token_bucket": {"max_tokens": 2, "fill_interval": "1s"}, "max_dynamic_buckets": 16}]}"#,
    );
    let mut store = MemStore::default();
    let mut workers = [Engine::new("rl"), Engine::new("rl")];
    let ask = |w: &mut Engine, store: &mut MemStore, ip: &str, now: u64| {
        let addr = format!("{ip}:1234");
        let req = Request {
            headers: &[],
            source_address: Some(addr.as_bytes()),
        };
        matches!(w.decide(&c, &req, now, store), Verdict::Allowed { .. })
    };
    // Each client gets its own 2 tokens, whichever worker it lands on.
    assert!(ask(&mut workers[0], &mut store, "1.1.1.1", 0));
    assert!(ask(&mut workers[1], &mut store, "1.1.1.1", 0));
    assert!(!ask(&mut workers[0], &mut store, "1.1.1.1", 0));
    assert!(ask(&mut workers[1], &mut store, "2.2.2.2", 0));
    // A client rotating through 10,000 addresses never grows the table past its 16 slots.
    for i in 0..10_000u32 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        ask(
            &mut workers[(i % 2) as usize],
            &mut store,
            &ip,
            u64::from(i) * MS,
        );
    }
    let slots = (0..100)
        .filter(|s| store.get(&format!("rl/d/0/{s}")).is_some())
        .count();
    assert_eq!(slots, 16);
    assert!(workers[0].evictions + workers[1].evictions > 9_000);
}

#[test]
fn a_key_flood_does_not_grow_the_worker_cache() {
    // Regression: each worker cached the slot of every value it had ever seen, so a client
    // rotating through new values grew the VM's memory without bound (the shared table stayed
    // at its cap). The cache now holds at most one value per slot.
    let c = config(
        r#"{"descriptors": [{"name": "per_key", "entries": [{"header": {"name": "x-key"}}],
             "token_bucket": {"max_tokens": 2, "fill_interval": "1h"}, "max_dynamic_buckets": 16}]}"#,
    );
    let mut store = MemStore::default();
    let mut workers = [Engine::new("rl"), Engine::new("rl")];
    for i in 0..20_000u64 {
        let h = headers(&[("x-key", &format!("k{i}"))]);
        let req = Request {
            headers: &h,
            source_address: None,
        };
        let w = &mut workers[(i % 2) as usize];
        assert!(matches!(
            w.decide(&c, &req, i * MS, &mut store),
            Verdict::Allowed { .. }
        ));
    }
    for w in &workers {
        assert!(w.slots.len() <= 16, "{} cached slots", w.slots.len());
        assert!(w.owners.len() <= 16, "{} cached owners", w.owners.len());
    }
    // The cache still works: a value used again is found, and its bucket is the same.
    let h = headers(&[("x-key", "again")]);
    let req = Request {
        headers: &h,
        source_address: None,
    };
    let now = 20_000 * MS;
    assert!(matches!(
        workers[0].decide(&c, &req, now, &mut store),
        Verdict::Allowed { .. }
    ));
    assert!(matches!(
        workers[0].decide(&c, &req, now, &mut store),
        Verdict::Allowed { .. }
    ));
    assert!(matches!(
        workers[0].decide(&c, &req, now, &mut store),
        Verdict::Limited { .. }
    ));
}

#[test]
fn an_over_limit_value_is_not_evicted_by_a_flood_of_new_values() {
    // Regression: a limited request did not refresh its slot's last-used time, so a value over
    // its limit became the least recently used, was evicted by new values, and came back with
    // a full bucket: flooding new keys bought a limited client fresh tokens.
    let c = config(
        r#"{"descriptors": [{"name": "per_key", "entries": [{"header": {"name": "x-key"}}],
             "token_bucket": {"max_tokens": 2, "fill_interval": "1h"}, "max_dynamic_buckets": 16}]}"#,
    );
    let mut store = MemStore::default();
    let mut workers = [Engine::new("rl"), Engine::new("rl")];
    let hot = headers(&[("x-key", "hot")]);
    let hot_req = Request {
        headers: &hot,
        source_address: None,
    };
    for w in &mut workers {
        assert!(matches!(
            w.decide(&c, &hot_req, 0, &mut store),
            Verdict::Allowed { .. }
        ));
    }
    // One new value per millisecond, the hot value in between (used more recently than any
    // other slot in its probe window but one).
    for i in 1..10_000u64 {
        let w = &mut workers[(i % 2) as usize];
        if i % 2 == 0 {
            let h = headers(&[("x-key", &format!("k{i}"))]);
            let req = Request {
                headers: &h,
                source_address: None,
            };
            w.decide(&c, &req, i * MS, &mut store);
        } else {
            let v = w.decide(&c, &hot_req, i * MS, &mut store);
            assert!(matches!(v, Verdict::Limited { .. }), "at {i} ms: {v:?}");
        }
    }
    assert!(workers[0].evictions + workers[1].evictions > 4_000);
}

#[test]
fn unused_leases_go_back_on_tick() {
    let c = config(
        r#"{"token_bucket": {"max_tokens": 80, "tokens_per_fill": 1, "fill_interval": "1h"}}"#,
    );
    let mut store = MemStore::default();
    let mut a = Engine::new("rl");
    let mut b = Engine::new("rl");
    let req = Request::default();
    // a leases 10 (80 / 8) and uses 1.
    assert!(matches!(
        a.decide(&c, &req, 0, &mut store),
        Verdict::Allowed { .. }
    ));
    a.tick(&c, S, &mut store);
    // b can now use all 79 remaining tokens.
    let n = (0..100)
        .filter(|_| matches!(b.decide(&c, &req, S, &mut store), Verdict::Allowed { .. }))
        .count();
    assert_eq!(n, 79);
}

#[test]
fn matched_requests_also_consume_the_default_bucket_unless_told_not_to() {
    let rules = r#""descriptors": [{"name": "per_client", "entries": [{"header": {"name": "x-client"}}],
                   "token_bucket": {"max_tokens": 10, "fill_interval": "1h"}}],
                   "token_bucket": {"max_tokens": 3, "fill_interval": "1h"}"#;
    let h = headers(&[("x-client", "a")]);
    let req = Request {
        headers: &h,
        source_address: None,
    };
    let c = config(&format!("{{{rules}}}"));
    let mut store = MemStore::default();
    let mut e = Engine::new("rl");
    let allowed = (0..10)
        .filter(|_| matches!(e.decide(&c, &req, 0, &mut store), Verdict::Allowed { .. }))
        .count();
    assert_eq!(allowed, 3, "the service-wide bucket of 3 holds");
    // (The rule's own bucket paid for the ten attempts: it is empty now too.)
    assert!(matches!(
        e.decide(&c, &req, 0, &mut store),
        Verdict::Limited { .. }
    ));
    let c = config(&format!(
        "{{{rules}, \"always_consume_default_token_bucket\": false}}"
    ));
    let mut store = MemStore::default();
    let mut e = Engine::new("rl");
    let allowed = (0..20)
        .filter(|_| matches!(e.decide(&c, &req, 0, &mut store), Verdict::Allowed { .. }))
        .count();
    assert_eq!(allowed, 10);
}

#[test]
fn profiles_use_their_own_rules_and_buckets() {
    let c = config(
        r#"{"token_bucket": {"max_tokens": 100, "fill_interval": "1h"},
            "profiles": {"checkout": {"token_bucket": {"max_tokens": 2, "fill_interval": "1h"}}}}"#,
    );
    let mut store = MemStore::default();
    let mut e = Engine::new("rl");
    let req = Request::default();
    let p = c.profile("checkout");
    let n = (0..10)
        .filter(|_| {
            matches!(
                e.decide_in(&c, p, &req, || 0, &mut store),
                Verdict::Allowed { .. }
            )
        })
        .count();
    assert_eq!(n, 2);
    assert!(matches!(
        e.decide_in(&c, p, &req, || 0, &mut store),
        Verdict::Limited {
            source: Source::Default(Some(0)),
            ..
        }
    ));
    // The top level is untouched by the profile's traffic.
    assert!(matches!(
        e.decide(&c, &req, 0, &mut store),
        Verdict::Allowed {
            source: Source::Default(None),
            ..
        }
    ));
}

#[test]
fn a_request_no_rule_matches_does_not_ask_the_time() {
    let c = config(
        r#"{"descriptors": [{"name": "per_user", "entries": [{"header": {"name": "x-user"}}],
        "token_bucket": {"max_tokens": 3, "fill_interval": "10s"}}]}"#,
    );
    let mut store = MemStore::default();
    let mut e = Engine::new("rl");
    let asked = std::cell::Cell::new(0);
    let clock = || {
        asked.set(asked.get() + 1);
        0
    };
    let none: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let no_user = Request {
        headers: &none,
        source_address: None,
    };
    assert!(matches!(
        e.decide_in(&c, None, &no_user, clock, &mut store),
        Verdict::Unlimited
    ));
    assert_eq!(asked.get(), 0);
    let user = vec![(b"x-user".to_vec(), b"u".to_vec())];
    let req = Request {
        headers: &user,
        source_address: None,
    };
    assert!(matches!(
        e.decide_in(&c, None, &req, clock, &mut store),
        Verdict::Allowed { .. }
    ));
    assert_eq!(asked.get(), 1);
}
