//! `host-sim`: simulated requests per second per core in host-sim, next to Envoy's requests per
//! CPU-second for the same module, measured in the same run.
//!
//! host-sim side: one simulated Envoy per module (1 worker, tracing off), driven from this
//! process's only busy thread: a full request is request headers (end of stream), response
//! headers `200` (end of stream) and completion (`on_log`, `on_done`, `on_delete`), with the
//! connection manager's headers and the router's response header, as in Envoy. Figure =
//! requests / CPU time of this process (utime + stime from `/proc/self/stat`), each round
//! running until at least `--sim-cpu-ms` of CPU were spent.
//!
//! Envoy side: the method of `overhead` ([`bench::start_direct_response_envoy`]: one Envoy
//! `--concurrency 1`, a `direct_response` route, `wrk -t1 -c16`, Envoy's CPU from `/proc`).
//! Rounds alternate host-sim and Envoy per module; figures are medians over rounds.
//!
//! Options: `--rounds 5`, `--duration 2` (seconds of wrk per round), `--sim-cpu-ms 1500`,
//! `--connections 16`, `--only noop,rate_limit`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use host_sim::{HeaderMap, Module};
use meshguard_tests::bench::{self, Row};
use meshguard_tests::envoy::process_cpu_time;
use meshguard_tests::{Envoy, Filter, paths};

use crate::Opts;

/// (config name, module in `dist/`).
const MODULES: [&str; 5] = [
    "noop",
    "load_shed",
    "circuit_breaker",
    "rate_limit",
    "sandbox_router",
];

/// Requests between two CPU-time reads (the clock has 10 ms ticks; reading it is a syscall).
const BATCH: u64 = 2000;

struct Subject {
    name: &'static str,
    sim: host_sim::Envoy,
    envoy: Envoy,
    sim_rps: Vec<f64>,
    envoy_rps: Vec<f64>,
}

fn filter(name: &str) -> Result<Filter> {
    if name == "noop" {
        Filter::noop()
    } else {
        Filter::meshguard(name)
    }
}

/// A simulated Envoy configured like the real one (same module, `vm_id`, `root_id`, empty
/// plugin configuration).
fn simulated(f: &Filter) -> Result<host_sim::Envoy> {
    let module = Module::from_file(&f.wasm).with_context(|| format!("loading {}", f.name))?;
    host_sim::Envoy::builder(module)
        .workers(1)
        .vm_id(&f.vm_id)
        .root_id(&f.name)
        .plugin_name(&f.name)
        .plugin_config(f.config.as_bytes().to_vec())
        .tracing(false)
        .build()
        .with_context(|| format!("starting host-sim with {}", f.name))
}

fn request() -> HeaderMap {
    // What Envoy's HTTP/1 codec makes of wrk's request head.
    HeaderMap::from_pairs([
        (":authority", "127.0.0.1:10000"),
        (":path", "/"),
        (":method", "GET"),
    ])
}

fn response() -> HeaderMap {
    HeaderMap::from_pairs([
        (":status", "200"),
        ("content-length", "2"),
        ("content-type", "text/plain"),
    ])
}

/// One full simulated request; errors unless it completed with a 200 from the upstream.
fn one(sim: &mut host_sim::Envoy, req: &HeaderMap, resp: &HeaderMap) -> Result<()> {
    let s = sim.new_stream();
    sim.send_request_headers(s, req.clone(), true)?;
    sim.send_response_headers(s, resp.clone(), true)?;
    Ok(())
}

/// Runs simulated requests until `cpu_target` of this process's CPU is spent; returns
/// requests per CPU-second.
fn measure_sim(sim: &mut host_sim::Envoy, cpu_target: Duration) -> Result<f64> {
    let (req, resp) = (request(), response());
    // Check the path once: the request reached the upstream and the client got the 200.
    let s = sim.new_stream();
    sim.send_request_headers(s, req.clone(), true)?;
    sim.send_response_headers(s, resp.clone(), true)?;
    match sim.stream(s) {
        Some(r) if r.complete && r.downstream.status() == Some(200) => {}
        other => bail!("a simulated request did not complete with 200: {other:?}"),
    }
    sim.take_finished();
    let me = std::process::id();
    let start = process_cpu_time(me)?;
    let mut n = 0u64;
    loop {
        for _ in 0..BATCH {
            one(sim, &req, &resp)?;
        }
        n += BATCH;
        // Finished stream records would pile up; the load driver drains them the same way.
        sim.take_finished();
        let cpu = process_cpu_time(me)?.saturating_sub(start);
        if cpu >= cpu_target {
            return Ok(n as f64 / cpu.as_secs_f64());
        }
    }
}

pub fn run(opts: &Opts) -> Result<()> {
    let rounds: usize = opts.get("rounds", 5)?;
    let secs: u64 = opts.get("duration", 2)?;
    let sim_cpu_ms: u64 = opts.get("sim-cpu-ms", 1500)?;
    let connections: u32 = opts.get("connections", 16)?;
    let only: String = opts.get("only", String::new())?;
    let duration = Duration::from_secs(secs);
    let cpu_target = Duration::from_millis(sim_cpu_ms);
    // Fail early with the build hint when the modules are missing.
    paths::wasm("noop")?;

    let mut subjects = Vec::new();
    for name in MODULES {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        let f = filter(name)?;
        subjects.push(Subject {
            name,
            sim: simulated(&f)?,
            envoy: bench::start_direct_response_envoy(vec![f])?,
            sim_rps: Vec::new(),
            envoy_rps: Vec::new(),
        });
    }
    eprintln!(
        "host-sim: {} modules x {rounds} rounds; host-sim {sim_cpu_ms} ms CPU per round, \
         Envoy --concurrency 1 wrk -t1 -c{connections} {secs}s per round",
        subjects.len()
    );
    // Warm-up: V8 tiers up hot Wasm functions; host-sim's first requests fault pages in.
    for s in &mut subjects {
        bench::measure_envoy_cpu(&s.envoy, connections, Duration::from_secs(1))
            .with_context(|| format!("{}: Envoy warm-up", s.name))?;
        measure_sim(&mut s.sim, Duration::from_millis(200))
            .with_context(|| format!("{}: host-sim warm-up", s.name))?;
    }
    for round in 0..rounds {
        let count = subjects.len();
        for k in 0..count {
            let s = &mut subjects[(k + round) % count];
            let sim = measure_sim(&mut s.sim, cpu_target).with_context(|| s.name.to_owned())?;
            let envoy = bench::measure_envoy_cpu(&s.envoy, connections, duration)
                .with_context(|| s.name.to_owned())?;
            s.sim_rps.push(sim);
            s.envoy_rps.push(envoy.rps_per_cpu_s());
        }
        eprintln!("  round {}/{rounds} done", round + 1);
    }
    let rows: Vec<Row> = subjects
        .iter()
        .map(|s| {
            let (sim, sim_min, sim_max) = bench::median_min_max(&s.sim_rps);
            let (envoy, _, _) = bench::median_min_max(&s.envoy_rps);
            Row::new("host-sim", s.name)
                .field("hostsim_rps_per_core", format!("{sim:.0}"))
                .field("envoy_rps_per_cpu_s", format!("{envoy:.0}"))
                .field("ratio", format!("{:.2}", sim / envoy))
                .field("hostsim_us_per_req", format!("{:.2}", 1e6 / sim))
                .field("hostsim_min", format!("{sim_min:.0}"))
                .field("hostsim_max", format!("{sim_max:.0}"))
                .field("rounds", rounds)
        })
        .collect();
    bench::print_rows(&rows);
    Ok(())
}
