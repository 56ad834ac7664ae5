//! The rate_limit module (issue 6): accuracy across workers and bounded per-value buckets.

use std::time::Duration;

use host_sim::load::{self, Arrivals, Latency, LoadSpec, RequestClass, UpstreamModel};
use host_sim::{Envoy, Module};

use crate::support::Result;

fn envoy(workers: usize, config: &str) -> Result<Envoy> {
    Ok(Envoy::builder(Module::load("rate_limit")?)
        .workers(workers)
        .plugin_config(config)
        .tracing(false)
        .build()?)
}

fn spec(rps: f64, secs: u64) -> LoadSpec {
    LoadSpec {
        duration: Duration::from_secs(secs),
        arrivals: Arrivals::Poisson { rps },
        upstream: UpstreamModel {
            capacity: 1000,
            latency: Latency::Fixed(Duration::from_millis(2)),
            ..Default::default()
        },
        seed: 9,
        ..Default::default()
    }
}

/// baselines.md §4: 100 rps with a burst of 100, offered 400 rps for 10 s: 1,100 expected.
#[test]
fn admits_burst_plus_rate_at_one_two_and_four_workers() -> Result {
    for workers in [1, 2, 4] {
        let mut e = envoy(
            workers,
            r#"{"token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}}"#,
        )?;
        let r = load::run(&mut e, &spec(400.0, 10));
        let line = r.summary_line(&format!("{workers} workers"));
        // The last arrival is just before 10 s: 100 + 100 x ~9.99 tokens.
        assert!((1095..=1100).contains(&r.ok), "{line}");
        assert_eq!(r.ok + r.rejected, r.sent, "{line}");
        assert_eq!(e.counter("meshguard.rate_limit.allowed"), r.ok, "{line}");
    }
    Ok(())
}

#[test]
fn per_value_buckets_stay_at_their_cap_under_key_rotation() -> Result {
    let mut e = envoy(
        2,
        r#"{"descriptors": [{"name": "per_key", "entries": [{"header": {"name": "x-key"}}],
             "token_bucket": {"max_tokens": 5, "fill_interval": "1s"}, "max_dynamic_buckets": 64}]}"#,
    )?;
    // 2,000 distinct keys, one request each, then a well-behaved key.
    let mut s = spec(1000.0, 2);
    s.classes = (0..2000)
        .map(|i| RequestClass {
            name: format!("k{i}"),
            weight: 1.0,
            headers: vec![("x-key".into(), format!("k{i}"))],
        })
        .collect();
    let r = load::run(&mut e, &s);
    assert_eq!(r.rejected, 0, "fresh keys all start with a full bucket");
    let slots = e
        .shared_data_keys()
        .iter()
        .filter(|k| String::from_utf8_lossy(k).contains("/d/0/"))
        .count();
    assert_eq!(slots, 64);
    assert!(e.counter("meshguard.rate_limit.dynamic_evictions") > 1000);
    Ok(())
}
