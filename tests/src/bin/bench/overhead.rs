//! `overhead`: Envoy CPU per request for each meshguard module, next to no filter and a no-op
//! Rust proxy-wasm filter.
//!
//! Method (baselines.md §1): one Envoy per config, `--concurrency 1`, a route with
//! `direct_response` (no upstream), HTTP/1.1 load from `wrk -t1 -c16` for a few seconds per
//! round, rounds interleaved across configs (so drift in machine load hits every config alike),
//! figure = Envoy process CPU (utime + stime) / requests served, median over rounds with min–max.
//! Envoy and wrk are pinned to different cores when `taskset` is available.

use std::time::Duration;

use anyhow::{Result, bail};
use meshguard_tests::bench::{self, Row};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener};

use crate::Opts;

const FILTERS: [&str; 4] = [
    "load_shed",
    "circuit_breaker",
    "rate_limit",
    "sandbox_router",
];

fn configs() -> Result<Vec<(String, Vec<Filter>)>> {
    let mut out = vec![
        ("no_filter".to_owned(), vec![]),
        ("noop_wasm".to_owned(), vec![Filter::noop()?]),
    ];
    for f in FILTERS {
        out.push((f.to_owned(), vec![Filter::meshguard(f)?]));
    }
    out.push((
        "all_four".to_owned(),
        FILTERS
            .iter()
            .map(|f| Filter::meshguard(f))
            .collect::<Result<_>>()?,
    ));
    Ok(out)
}

pub fn run(opts: &Opts) -> Result<()> {
    let rounds: usize = opts.get("rounds", 7)?;
    let secs: u64 = opts.get("duration", 3)?;
    let connections: u32 = opts.get("connections", 16)?;
    let only: String = opts.get("only", String::new())?;
    let duration = Duration::from_secs(secs);

    let mut envoys = Vec::new();
    for (name, filters) in configs()? {
        if !only.is_empty() && !only.split(',').any(|o| o == name || o == "no_filter") {
            continue;
        }
        let mut l = Listener::new("bench").direct_response(200, "ok");
        for f in filters {
            l = l.filter(f);
        }
        let mut cfg = EnvoyConfig::new(None).concurrency(1).listener(l);
        // Pin Envoy to core 0; wrk runs on core 1.
        cfg.extra_args = vec![];
        let envoy = Envoy::start(&cfg)?;
        pin(envoy.pid(), 0);
        envoys.push((name, envoy));
    }
    eprintln!(
        "overhead: {} configs x {rounds} rounds x {secs}s, wrk -t1 -c{connections}, Envoy --concurrency 1",
        envoys.len()
    );
    // Warm-up: V8 tiers up hot Wasm functions; measure steady state.
    for (_, envoy) in &envoys {
        bench::wrk(
            envoy.listener("bench"),
            connections,
            Duration::from_secs(1),
            Some(1),
        )?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); envoys.len()];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); envoys.len()];
    for round in 0..rounds {
        // Rotate the order each round so no config always runs first or last.
        for k in 0..envoys.len() {
            let i = (k + round) % envoys.len();
            let (name, envoy) = &envoys[i];
            let before = envoy.cpu_time()?;
            let r = bench::wrk(envoy.listener("bench"), connections, duration, Some(1))?;
            let cpu = envoy.cpu_time()? - before;
            if r.non_2xx > 0 || r.errors > 0 {
                bail!("{name}: {} non-2xx, {} socket errors", r.non_2xx, r.errors);
            }
            samples[i].push(cpu.as_secs_f64() * 1e6 / r.requests as f64);
            rps[i].push(r.requests as f64 / r.seconds.max(1e-9));
        }
        eprintln!("  round {}/{rounds} done", round + 1);
    }
    let (base, _, _) = bench::median_min_max(&samples[0]);
    let rows: Vec<Row> = envoys
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let (med, min, max) = bench::median_min_max(&samples[i]);
            let (rps_med, _, _) = bench::median_min_max(&rps[i]);
            Row::new("overhead", name)
                .field("cpu_us_per_req", format!("{med:.2}"))
                .field("min", format!("{min:.2}"))
                .field("max", format!("{max:.2}"))
                .field("added_us", format!("{:.2}", med - base))
                .field("ratio", format!("{:.3}", med / base))
                .field("rps", format!("{rps_med:.0}"))
                .field("rounds", rounds)
        })
        .collect();
    bench::print_rows(&rows);
    Ok(())
}

/// Pins a process (all its threads) to one CPU when `taskset` exists; best effort.
fn pin(pid: u32, cpu: u32) {
    if bench::which("taskset") {
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .output();
    }
}
