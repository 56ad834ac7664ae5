//! `overload`: goodput under overload for load shedding (baselines.md §2), and the
//! criticality flood.
//!
//! Setup: the test upstream as its own process with 20 concurrent slots, lognormal service time
//! (median 20 ms, σ 0.25) and an unbounded FIFO queue; its capacity is measured first (closed
//! loop, 100 concurrent). Then, for pass-through, Envoy's native `adaptive_concurrency` (the
//! config of baselines.md) and meshguard's load_shed (defaults), one Envoy `--concurrency 2`
//! each, open-loop Poisson load at 0.5×, 1×, 2×, 3× capacity for `--duration` seconds per step
//! (steps in order on one Envoy), client timeout 1 s. The unloaded p99 is measured at 0.1× through
//! pass-through. The criticality rows send a critical trickle (0.25× capacity) and, after a
//! warm-up, 12× as much sheddable traffic (3× capacity).

use std::time::Duration;

use anyhow::{Result, bail};
use meshguard_tests::bench::{self, Row};
use meshguard_tests::loadgen::{self, Phase, PhaseResult};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener};
use serde_json::{Value, json};

use crate::Opts;
use crate::upstream_proc::{drain, start_upstream};

const UPSTREAM: &str = r#"{"seed": 42, "latency": {"lognormal": {"median_ms": 20, "sigma": 0.25}},
                           "capacity": {"concurrency": 20, "queue": "unbounded"}}"#;
const TIMEOUT: Duration = Duration::from_secs(1);
const CRITICALITY: &str = r#"{"criticality": {"header": "x-criticality"}}"#;

fn native_ac() -> Value {
    json!({
        "name": "envoy.filters.http.adaptive_concurrency",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency",
            "gradient_controller_config": {
                "sample_aggregate_percentile": {"value": 90},
                "concurrency_limit_params": {"concurrency_update_interval": "0.1s"},
                "min_rtt_calc_params": {"interval": "30s", "request_count": 50},
            },
        },
    })
}

fn envoy_for(config: &str, upstream: std::net::SocketAddr) -> Result<Envoy> {
    let mut l = Listener::new("bench");
    match config {
        "pass_through" => {}
        "native_ac" => l.native_filters.push(native_ac()),
        "meshguard" => l = l.filter(Filter::meshguard("load_shed")?),
        "meshguard_criticality" => {
            l = l.filter(Filter::meshguard("load_shed")?.config(CRITICALITY));
        }
        other => bail!("unknown config {other}"),
    }
    Envoy::start(&EnvoyConfig::new(Some(upstream)).concurrency(2).listener(l))
}

fn phase(label: &str, rps: f64, secs: f64, headers: &[(&str, &str)]) -> Phase {
    Phase {
        rps,
        duration: Duration::from_secs_f64(secs),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        label: label.to_owned(),
        grpc: false,
    }
}

fn step_row(config: &str, load: f64, r: &PhaseResult) -> Row {
    Row::new("overload", config)
        .field("load", format!("{load}"))
        .field("sent", r.sent)
        .field("goodput_rps", format!("{:.0}", r.goodput()))
        .field("rejected", r.status(503))
        .field(
            "other_errors",
            r.statuses.values().sum::<u64>() - r.status(503) + r.errors,
        )
        .field("timeouts", r.timeouts)
        .field("p50_ms", format!("{:.1}", r.quantile(0.5)))
        .field("p99_ms", format!("{:.1}", r.quantile(0.99)))
}

pub fn run(opts: &Opts) -> Result<()> {
    let secs: f64 = opts.get("duration", 8.0)?;
    let only: String = opts.get("only", String::new())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let upstream = start_upstream(UPSTREAM)?;
    let up_url = format!("http://{}/", upstream.addr);
    let capacity = rt.block_on(loadgen::saturate(&up_url, 100, Duration::from_secs(5)))?;
    drain(&upstream)?;
    eprintln!("overload: upstream capacity {capacity:.0} rps (20 slots x lognormal 20 ms)");
    let mut rows = vec![
        Row::new("overload", "upstream_capacity").field("capacity_rps", format!("{capacity:.0}")),
    ];

    // Unloaded latency through Envoy without filters.
    {
        let envoy = envoy_for("pass_through", upstream.addr)?;
        let url = format!("http://{}/", envoy.listener("bench"));
        let r = rt.block_on(loadgen::run(
            &url,
            &[phase("unloaded", 0.1 * capacity, 5.0, &[])],
            TIMEOUT,
            false,
            1,
        ))?;
        rows.push(step_row("unloaded", 0.1, &r[0]));
    }
    drain(&upstream)?;

    let loads = [0.5, 1.0, 2.0, 3.0];
    for config in ["pass_through", "native_ac", "meshguard"] {
        if !only.is_empty() && !only.split(',').any(|o| o == config) {
            continue;
        }
        let envoy = envoy_for(config, upstream.addr)?;
        let url = format!("http://{}/", envoy.listener("bench"));
        let phases: Vec<Phase> = loads
            .iter()
            .map(|l| phase(&format!("{l}x"), l * capacity, secs, &[]))
            .collect();
        eprintln!("  {config}: {} steps of {secs}s", phases.len());
        let results = rt.block_on(loadgen::run(&url, &phases, TIMEOUT, false, 7))?;
        for (load, r) in loads.iter().zip(&results) {
            rows.push(step_row(config, *load, r));
        }
        drop(envoy);
        drain(&upstream)?;
    }

    // Criticality: a critical trickle, then a 12x sheddable flood on top.
    for config in ["native_ac", "meshguard_criticality"] {
        if !only.is_empty() && !only.split(',').any(|o| o == config || o == "criticality") {
            continue;
        }
        let envoy = envoy_for(config, upstream.addr)?;
        let url = format!("http://{}/", envoy.listener("bench"));
        let warm = 2.0;
        let phases = [
            phase(
                "critical",
                0.25 * capacity,
                warm + secs,
                &[("x-criticality", "critical")],
            ),
            phase(
                "sheddable",
                3.0 * capacity,
                secs,
                &[("x-criticality", "sheddable")],
            ),
        ];
        // The flood starts after the warm-up: run it as a separate, delayed phase.
        let results = rt.block_on(async {
            let crit = loadgen::run(&url, &phases[..1], TIMEOUT, true, 11);
            let flood = async {
                tokio::time::sleep(Duration::from_secs_f64(warm)).await;
                loadgen::run(&url, &phases[1..], TIMEOUT, true, 13).await
            };
            let (c, f) = tokio::join!(crit, flood);
            anyhow::Ok((c?, f?))
        })?;
        let (crit, flood) = (&results.0[0], &results.1[0]);
        let success = |r: &PhaseResult| r.ok as f64 / r.sent.max(1) as f64;
        rows.push(
            Row::new("overload", config)
                .field("scenario", "criticality_flood_12x")
                .field("critical_sent", crit.sent)
                .field(
                    "critical_success_pct",
                    format!("{:.2}", 100.0 * success(crit)),
                )
                .field("critical_p99_ms", format!("{:.1}", crit.quantile(0.99)))
                .field("sheddable_sent", flood.sent)
                .field(
                    "sheddable_success_pct",
                    format!("{:.2}", 100.0 * success(flood)),
                )
                .field(
                    "goodput_rps",
                    format!("{:.0}", (crit.ok + flood.ok) as f64 / (warm + secs)),
                )
                .field("timeouts", crit.timeouts + flood.timeouts),
        );
        drop(envoy);
        drain(&upstream)?;
    }
    bench::print_rows(&rows);
    Ok(())
}
