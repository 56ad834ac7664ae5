//! `ratelimit`: accuracy of a local limit shared by Envoy's workers (baselines.md §4).
//!
//! Bucket `max_tokens: 100, tokens_per_fill: 100, fill_interval: 1s` (100 rps, burst 100);
//! open-loop Poisson at 4× the limit for `--duration` (10 s); expected admitted = 100 + 100 × t,
//! t = the time of the last arrival. Rows for Envoy's native `local_ratelimit` (same bucket)
//! and meshguard's `rate_limit` at `--concurrency` 1 and 2, each a fresh Envoy with a
//! direct-response route.

use std::time::Duration;

use anyhow::Result;
use meshguard_tests::bench::{self, Row};
use meshguard_tests::loadgen::{self, Phase};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener};
use serde_json::json;

use crate::Opts;

const BUCKET: &str = r#"{"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}"#;

fn native() -> serde_json::Value {
    let pct = |key: &str| json!({"runtime_key": key, "default_value": {"numerator": 100, "denominator": "HUNDRED"}});
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "native_rl",
            "token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"},
            "filter_enabled": pct("rl_enabled"),
            "filter_enforced": pct("rl_enforced"),
        },
    })
}

pub fn run(opts: &Opts) -> Result<()> {
    let secs: f64 = opts.get("duration", 10.0)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for config in ["native_local_ratelimit", "meshguard"] {
        for workers in [1u32, 2] {
            let mut l = Listener::new("bench").direct_response(200, "ok");
            if config == "meshguard" {
                l = l.filter(
                    Filter::meshguard("rate_limit")?
                        .config(format!(r#"{{"token_bucket": {BUCKET}}}"#)),
                );
            } else {
                l.native_filters.push(native());
            }
            let envoy = Envoy::start(&EnvoyConfig::new(None).concurrency(workers).listener(l))?;
            let url = format!("http://{}/", envoy.listener("bench"));
            let phase = Phase {
                rps: 400.0,
                duration: Duration::from_secs_f64(secs),
                headers: Vec::new(),
                label: "4x".into(),
                grpc: false,
            };
            let r = rt.block_on(loadgen::run(
                &url,
                &[phase],
                Duration::from_secs(1),
                false,
                21,
            ))?;
            let r = &r[0];
            let last = r.timeline.iter().map(|(t, _)| *t).fold(0.0, f64::max);
            let expected = 100.0 + 100.0 * last;
            rows.push(
                Row::new("ratelimit", config)
                    .field("workers", workers)
                    .field("sent", r.sent)
                    .field("admitted", r.ok)
                    .field("expected", format!("{expected:.0}"))
                    .field(
                        "error_pct",
                        format!("{:+.2}", 100.0 * (r.ok as f64 - expected) / expected),
                    )
                    .field("limited", r.status(429))
                    .field("other", r.sent - r.ok - r.status(429)),
            );
            eprintln!("  {config} at {workers} workers: done");
        }
    }
    bench::print_rows(&rows);
    Ok(())
}
