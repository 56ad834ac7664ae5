//! `overhead`: Envoy CPU per request for each meshguard module, next to no filter and a no-op
//! Rust proxy-wasm filter.
//!
//! Method (baselines.md §1): one Envoy per config, `--concurrency 1`, a route with
//! `direct_response` (no upstream), HTTP/1.1 load from `wrk -t1 -c16` for a few seconds per
//! round, rounds interleaved across configs (so drift in machine load hits every config alike),
//! figure = Envoy process CPU (utime + stime) / requests served, median over rounds with min–max.
//! Envoy and wrk are pinned to different cores when `taskset` is available.

use std::time::Duration;

use anyhow::Result;
use meshguard_tests::Filter;
use meshguard_tests::bench::{self, Row};

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
        // Envoy pinned to core 0; wrk runs on core 1.
        envoys.push((name, bench::start_direct_response_envoy(filters)?));
    }
    eprintln!(
        "overhead: {} configs x {rounds} rounds x {secs}s, wrk -t1 -c{connections}, Envoy --concurrency 1",
        envoys.len()
    );
    // Warm-up: V8 tiers up hot Wasm functions; measure steady state.
    for (_, envoy) in &envoys {
        bench::measure_envoy_cpu(envoy, connections, Duration::from_secs(1))?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); envoys.len()];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); envoys.len()];
    for round in 0..rounds {
        // Rotate the order each round so no config always runs first or last.
        for k in 0..envoys.len() {
            let i = (k + round) % envoys.len();
            let (name, envoy) = &envoys[i];
            let sample = bench::measure_envoy_cpu(envoy, connections, duration)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            samples[i].push(sample.cpu_us_per_req);
            rps[i].push(sample.rps);
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
