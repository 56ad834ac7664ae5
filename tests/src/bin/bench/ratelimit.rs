//! `ratelimit`: accuracy of a local limit shared by Envoy's workers (baselines.md §4).
//!
//! Bucket `max_tokens: 100, tokens_per_fill: 100, fill_interval: 1s` (100 rps, burst 100);
//! open-loop Poisson at 4× the limit for `--duration` (10 s); expected admitted = 100 + 100 × t,
//! t = the time of the last arrival. Rows for Envoy's native `local_ratelimit` (same bucket)
//! and meshguard's `rate_limit` at `--concurrency` 1 and 2, each a fresh Envoy with a
//! direct-response route.
//!
//! Global rows: two Envoys (`--concurrency 2` each) share one limit of 100 per 1 s window through
//! meshguard's reference RLS on Redis, offered 2 × 200 rps; expected admitted = 100 per started
//! window. Latency rows: 50 rps through the local path and through the RLS path. Unreachable
//! rows: the RLS hangs; every request must still be answered within the 20 ms timeout (+5 ms),
//! allowed (failure mode allow) or rejected (deny).

use std::time::Duration;

use anyhow::Result;
use meshguard_rls::{FaultMode, Limits, RedisServer, RlsServer, Storage};
use meshguard_tests::bench::{self, Row};
use meshguard_tests::loadgen::PhaseResult;
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
    global_rows(&rt, secs, &mut rows)?;
    bench::print_rows(&rows);
    Ok(())
}

const GLOBAL_LIMITS: &str = r#"
- namespace: bench
  max_value: 100
  seconds: 1
  conditions: ["descriptors[0]['generic_key'] == 'api'"]
  variables: []
"#;

fn global_envoy(rls: std::net::SocketAddr, failure_mode: &str, global: bool) -> Result<Envoy> {
    let config = if global {
        format!(
            r#"{{"global": {{"cluster": "rls", "domain": "bench", "failure_mode": "{failure_mode}"}},
                 "descriptors": [{{"name": "api", "entries": [{{"generic_key": {{"value": "api"}}}}], "global": true}}]}}"#
        )
    } else {
        format!(r#"{{"token_bucket": {BUCKET}}}"#)
    };
    let l = Listener::new("bench")
        .direct_response(200, "ok")
        .filter(Filter::meshguard("rate_limit")?.config(config));
    let mut cfg = EnvoyConfig::new(None).concurrency(2).listener(l);
    cfg.clusters
        .push(meshguard_tests::envoy::grpc_cluster("rls", rls));
    Envoy::start(&cfg)
}

fn phase(rps: f64, secs: f64) -> Phase {
    Phase {
        rps,
        duration: Duration::from_secs_f64(secs),
        headers: Vec::new(),
        label: "g".into(),
        grpc: false,
    }
}

/// Latency of every answered request (any status).
fn latency_row(config: &str, r: &PhaseResult) -> Row {
    let v = &r.all_latency_ms;
    let q = |q: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[(((v.len() - 1) as f64) * q).round() as usize]
        }
    };
    Row::new("ratelimit", config)
        .field("sent", r.sent)
        .field("ok", r.ok)
        .field("p50_ms", format!("{:.2}", q(0.5)))
        .field("p99_ms", format!("{:.2}", q(0.99)))
        .field("max_ms", format!("{:.2}", q(1.0)))
}

fn global_rows(rt: &tokio::runtime::Runtime, secs: f64, rows: &mut Vec<Row>) -> Result<()> {
    let redis = RedisServer::start()?;
    let limits = Limits::from_yaml(GLOBAL_LIMITS)?;
    let rls = rt.block_on(RlsServer::start(limits, Storage::redis(redis.url())))?;
    // Two Envoys, one limit.
    let (a, b) = (
        global_envoy(rls.addr(), "allow", true)?,
        global_envoy(rls.addr(), "allow", true)?,
    );
    let urls = [
        format!("http://{}/", a.listener("bench")),
        format!("http://{}/", b.listener("bench")),
    ];
    let (pa, pb) = ([phase(200.0, secs)], [phase(200.0, secs)]);
    let (ra, rb) = rt.block_on(async {
        let (x, y) = tokio::join!(
            loadgen::run(&urls[0], &pa, Duration::from_secs(1), false, 31),
            loadgen::run(&urls[1], &pb, Duration::from_secs(1), false, 37),
        );
        anyhow::Ok((x?, y?))
    })?;
    let admitted = ra[0].ok + rb[0].ok;
    let windows = secs.ceil();
    let expected = 100.0 * windows;
    rows.push(
        Row::new("ratelimit", "meshguard_global_two_envoys")
            .field("workers", "2x2")
            .field("sent", ra[0].sent + rb[0].sent)
            .field("admitted", admitted)
            .field("expected", format!("{expected:.0}"))
            .field(
                "error_pct",
                format!("{:+.2}", 100.0 * (admitted as f64 - expected) / expected),
            )
            .field("limited", ra[0].status(429) + rb[0].status(429))
            .field(
                "other",
                ra[0].sent + rb[0].sent - admitted - ra[0].status(429) - rb[0].status(429),
            ),
    );
    drop((a, b));
    // Added latency of the RLS path (under the limit: 50 rps against 100 per second).
    for (name, global) in [("latency_local", false), ("latency_global_rls", true)] {
        let e = global_envoy(rls.addr(), "allow", global)?;
        let url = format!("http://{}/", e.listener("bench"));
        // A fresh window: wait for the previous run's counters to expire.
        std::thread::sleep(Duration::from_millis(1100));
        let r = rt.block_on(loadgen::run(
            &url,
            &[phase(50.0, secs.min(5.0))],
            Duration::from_secs(1),
            false,
            41,
        ))?;
        rows.push(latency_row(name, &r[0]));
    }
    // The RLS hangs: the 20 ms timeout bounds every request.
    rls.set_fault(FaultMode::Hang);
    for (name, mode) in [
        ("rls_hangs_failure_allow", "allow"),
        ("rls_hangs_failure_deny", "deny"),
    ] {
        let e = global_envoy(rls.addr(), mode, true)?;
        let url = format!("http://{}/", e.listener("bench"));
        let r = rt.block_on(loadgen::run(
            &url,
            &[phase(50.0, secs.min(5.0))],
            Duration::from_secs(1),
            false,
            43,
        ))?;
        let r = &r[0];
        rows.push(
            latency_row(name, r)
                .field("status_500", r.status(500))
                .field("timeouts", r.timeouts),
        );
    }
    Ok(())
}
