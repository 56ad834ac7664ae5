//! `footprint`: what each module costs in memory, start-up time and bytes.
//!
//! For the no-op anchor, each single filter, the four single filters in one chain and the
//! `meshguard` bundle (all four policies), at `--concurrency 2` and `8` (one Wasm VM per worker,
//! plus the main thread's): Envoy's RSS after serving traffic on every worker, and the cold
//! start — time from spawning Envoy to the first request served. Rounds alternate configs;
//! figures are medians. Module sizes come from `dist/`.
//!
//! Goal (issue 9): the bundle's RSS at `--concurrency 8` ≤ the no-op module's + 10 MiB.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meshguard_tests::bench::{self, Row};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, paths};

use crate::Opts;
use crate::overhead::{self, FILTERS};

fn configs() -> Result<Vec<(String, Vec<Filter>)>> {
    let mut out = vec![
        ("no_filter".to_owned(), vec![]),
        ("noop_wasm".to_owned(), vec![Filter::noop()?]),
    ];
    for f in FILTERS {
        out.push((f.to_owned(), vec![Filter::meshguard(f)?]));
    }
    out.push(("all_four".to_owned(), overhead::all_four()?));
    out.push(("meshguard".to_owned(), vec![overhead::bundle(false)?]));
    Ok(out)
}

/// One plain GET on a new connection; true when answered 200.
fn get_ok(addr: SocketAddr) -> Result<bool> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(buf.starts_with(b"HTTP/1.1 200"))
}

/// Starts Envoy with `filters`, returns it with the time to the first request served.
fn cold_start(filters: &[Filter], concurrency: u32) -> Result<(Envoy, Duration)> {
    let mut l = Listener::new("bench").direct_response(200, "ok");
    for f in filters {
        l = l.filter(f.clone());
    }
    let cfg = EnvoyConfig::new(None).concurrency(concurrency).listener(l);
    let t0 = Instant::now();
    let envoy = Envoy::start(&cfg)?;
    let addr = envoy.listener("bench");
    if !get_ok(addr)? {
        bail!("first request not answered 200:\n{}", envoy.log_tail(4000));
    }
    Ok((envoy, t0.elapsed()))
}

pub fn run(opts: &Opts) -> Result<()> {
    let rounds: usize = opts.get("rounds", 3)?;
    let warm_secs: u64 = opts.get("duration", 2)?;
    let configs = configs()?;
    let mut rows = Vec::new();
    for concurrency in [2u32, 8] {
        let mut rss: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
        let mut cold: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
        for round in 0..rounds {
            for k in 0..configs.len() {
                let i = (k + round) % configs.len();
                let (name, filters) = &configs[i];
                let (envoy, took) = cold_start(filters, concurrency)
                    .with_context(|| format!("{name} at --concurrency {concurrency}"))?;
                // Traffic on many connections, so every worker creates its stream contexts
                // and touches its state.
                let c = concurrency.saturating_mul(4).max(16);
                bench::wrk(
                    envoy.listener("bench"),
                    c,
                    Duration::from_secs(warm_secs),
                    Some(1),
                )?;
                #[allow(clippy::cast_precision_loss)]
                rss[i].push(envoy.rss_bytes()? as f64 / (1024.0 * 1024.0));
                cold[i].push(took.as_secs_f64() * 1e3);
            }
            eprintln!(
                "  --concurrency {concurrency}: round {}/{rounds} done",
                round + 1
            );
        }
        let noop = configs
            .iter()
            .position(|(n, _)| n == "noop_wasm")
            .map_or(0.0, |i| bench::median_min_max(&rss[i]).0);
        for (i, (name, _)) in configs.iter().enumerate() {
            let (r, rmin, rmax) = bench::median_min_max(&rss[i]);
            let (c, cmin, cmax) = bench::median_min_max(&cold[i]);
            rows.push(
                Row::new("footprint", name)
                    .field("concurrency", concurrency)
                    .field("rss_mib", format!("{r:.1}"))
                    .field("rss_min", format!("{rmin:.1}"))
                    .field("rss_max", format!("{rmax:.1}"))
                    .field("rss_vs_noop_mib", format!("{:+.1}", r - noop))
                    .field("cold_start_ms", format!("{c:.0}"))
                    .field("cold_min", format!("{cmin:.0}"))
                    .field("cold_max", format!("{cmax:.0}"))
                    .field("rounds", rounds),
            );
        }
    }
    for name in ["noop", "noop_trimmed"]
        .into_iter()
        .chain(FILTERS)
        .chain(["meshguard"])
    {
        let path = paths::wasm(name)?;
        let bytes = std::fs::metadata(&path)?.len();
        rows.push(Row::new("footprint", name).field("module_bytes", bytes));
    }
    bench::print_rows(&rows);
    Ok(())
}
