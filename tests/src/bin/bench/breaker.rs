//! `breaker`: a dependency that fails as a whole for 10 s, then heals (baselines.md §3).
//!
//! One upstream host (100 slots, 5 ms), steady open-loop 500 rps for 25 s; the upstream fails
//! every request from 5 s to 15 s — with HTTP 500, or (gRPC scenario) with `grpc-status: 13`
//! INTERNAL in trailers after a 200, the common real-world case. Envoy `--concurrency 2`.
//! Rows for no protection, Envoy's outlier detection (`consecutive_5xx: 5, interval: 1s`) and
//! meshguard's circuit_breaker (defaults): client-visible failures, requests that reached the
//! failing upstream (split into before and after the breaker opened), time to open after the
//! failure starts, time to the first success after it heals.

use std::time::Duration;

use anyhow::{Result, bail};
use meshguard_tests::bench::{self, Row};
use meshguard_tests::envoy::cluster;
use meshguard_tests::loadgen::{self, Phase};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener};
use serde_json::json;

use crate::Opts;
use crate::upstream_proc::{configure, start_upstream, stats};

const FAIL_FROM_S: f64 = 5.0;
const FAIL_TO_S: f64 = 15.0;

fn upstream_config(kind: &str) -> String {
    format!(
        r#"{{"latency": {{"fixed": {{"ms": 5}}}},
            "capacity": {{"concurrency": 100, "queue": "unbounded"}},
            "failure": {{"rate": 0.0, "kind": {kind},
                        "windows": [{{"from_ms": 5000, "to_ms": 15000, "kind": {kind}}}]}}}}"#
    )
}

fn envoy_for(config: &str, upstream: std::net::SocketAddr) -> Result<Envoy> {
    let mut l = Listener::new("bench");
    let mut up = cluster("upstream", upstream);
    match config {
        "no_protection" => {}
        "outlier_detection" => {
            up["outlier_detection"] = json!({"consecutive_5xx": 5, "interval": "1s"});
        }
        "meshguard" => l = l.filter(Filter::meshguard("circuit_breaker")?),
        other => bail!("unknown config {other}"),
    }
    let mut cfg = EnvoyConfig::new(None).concurrency(2).listener(l);
    cfg.clusters.push(up);
    Envoy::start(&cfg)
}

pub fn run(opts: &Opts) -> Result<()> {
    let rps: f64 = opts.get("rps", 500.0)?;
    let secs: f64 = opts.get("duration", 25.0)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for (scenario, kind, grpc, failing) in [
        ("http_500", r#"{"status": 500}"#, false, 500u16),
        (
            "grpc_internal_in_trailers",
            r#"{"grpc": 13}"#,
            true,
            1013u16,
        ),
    ] {
        for config in ["no_protection", "outlier_detection", "meshguard"] {
            let up = start_upstream(&upstream_config(kind))?;
            let envoy = envoy_for(config, up.addr)?;
            let url = format!("http://{}/", envoy.listener("bench"));
            let phase = Phase {
                rps,
                duration: Duration::from_secs_f64(secs),
                headers: Vec::new(),
                label: scenario.into(),
                grpc,
            };
            // Restart the upstream's failure clock right before the load starts.
            configure(&up, &upstream_config(kind))?;
            let r = rt.block_on(loadgen::run(
                &url,
                &[phase],
                Duration::from_secs(1),
                false,
                5,
            ))?;
            let r = &r[0];
            let reached = stats(&up)?["failures_injected"].as_u64().unwrap_or(0);
            // A local rejection: meshguard's 503 / gRPC UNAVAILABLE (14); the upstream's
            // failures are 500 / INTERNAL (13).
            let rejection = |s: u16| s == 503 || s == 1014;
            let opened_at = r
                .timeline
                .iter()
                .find(|(t, s)| *t >= FAIL_FROM_S && rejection(*s))
                .map(|(t, _)| *t);
            let healed_at = r
                .timeline
                .iter()
                .find(|(t, s)| *t >= FAIL_TO_S && *s == 200)
                .map(|(t, _)| *t);
            let failed = |from: f64, to: f64| {
                r.timeline
                    .iter()
                    .filter(|(t, s)| *t >= from && *t < to && *s == failing)
                    .count()
            };
            let (before, after) = match opened_at {
                Some(o) => (failed(0.0, o), failed(o, f64::MAX)),
                None => (failed(0.0, f64::MAX), 0),
            };
            let fmt_ms = |v: Option<f64>, base: f64| {
                v.map_or("never".to_owned(), |t| {
                    format!("{:.0}", (t - base) * 1000.0)
                })
            };
            rows.push(
                Row::new("breaker", config)
                    .field("scenario", scenario)
                    .field("sent", r.sent)
                    .field("client_ok", r.ok)
                    .field("client_failures", r.sent - r.ok)
                    .field("reached_failing_upstream", reached)
                    .field("failed_before_open", before)
                    .field("failed_after_open", after)
                    .field("time_to_open_ms", fmt_ms(opened_at, FAIL_FROM_S))
                    .field("time_to_close_ms", fmt_ms(healed_at, FAIL_TO_S)),
            );
            eprintln!("  {scenario} {config}: done");
            drop(envoy);
        }
    }
    bench::print_rows(&rows);
    Ok(())
}
