//! `footprint`: what each module costs in memory, start-up time and bytes.
//!
//! For the no-op anchor, each single filter, the four single filters in one chain and the
//! `meshguard` bundle (all four policies), at `--concurrency 2` and `8` (one Wasm VM per worker,
//! plus the main thread's): Envoy's RSS after serving traffic on every worker, and the cold
//! start — time from spawning Envoy to the first request served. Rounds alternate configs;
//! figures are medians. Module sizes come from `dist/`.
//!
//! What the RSS is made of, from Envoy's admin `/memory` (its allocator, tcmalloc) in the same
//! Envoy: `live` is what the process has allocated and not freed (V8's module metadata,
//! Envoy's copies of the module, meshguard's state is not here: a VM's linear memory is mapped
//! by V8 itself); `kept` is memory tcmalloc holds freed in its caches and free lists (after
//! loading a module, mostly the compiler's working memory, parked in the caches of V8's
//! compile threads); `other` is the rest of the RSS (V8's own mappings: compiled code, the
//! VMs' linear memories and JS heaps; Envoy's binary and stacks).
//!
//! Goal (issue 9): the bundle's RSS at `--concurrency 8` ≤ the no-op module's + 10 MiB.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meshguard_tests::bench::{self, Row};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, admin, paths};

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

/// Envoy's heap, from admin `/memory`: (allocated and not freed, held free by tcmalloc), in
/// bytes. tcmalloc's `total_physical_bytes` counts both plus its metadata.
fn heap(envoy: &Envoy) -> Result<(u64, u64)> {
    let (code, body) = admin::get(envoy.admin(), "/memory")?;
    if code != 200 {
        bail!("admin /memory answered {code}: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("admin /memory JSON")?;
    // Envoy prints the counters as JSON strings.
    let field = |name: &str| -> Result<u64> {
        v.get(name)
            .and_then(serde_json::Value::as_str)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("admin /memory has no {name}: {body}"))
    };
    let live = field("allocated")?;
    let physical = field("total_physical_bytes")?;
    Ok((live, physical.saturating_sub(live)))
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
        // The parts of the RSS, per config: live, kept, other (see the module doc).
        let mut parts: [Vec<Vec<f64>>; 3] =
            std::array::from_fn(|_| vec![Vec::new(); configs.len()]);
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
                let rss_bytes = envoy.rss_bytes()?;
                let (live, kept) = heap(&envoy)?;
                #[allow(clippy::cast_precision_loss)]
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                rss[i].push(mib(rss_bytes));
                let other = rss_bytes.saturating_sub(live.saturating_add(kept));
                for (part, bytes) in parts.iter_mut().zip([live, kept, other]) {
                    part[i].push(mib(bytes));
                }
                cold[i].push(took.as_secs_f64() * 1e3);
            }
            eprintln!(
                "  --concurrency {concurrency}: round {}/{rounds} done",
                round + 1
            );
        }
        let noop_at = configs.iter().position(|(n, _)| n == "noop_wasm");
        let noop_of = |v: &[Vec<f64>]| noop_at.map_or(0.0, |i| bench::median_min_max(&v[i]).0);
        let noop = noop_of(&rss);
        for (i, (name, _)) in configs.iter().enumerate() {
            let (r, rmin, rmax) = bench::median_min_max(&rss[i]);
            let (c, cmin, cmax) = bench::median_min_max(&cold[i]);
            let mut row = Row::new("footprint", name)
                .field("concurrency", concurrency)
                .field("rss_mib", format!("{r:.1}"))
                .field("rss_min", format!("{rmin:.1}"))
                .field("rss_max", format!("{rmax:.1}"))
                .field("rss_vs_noop_mib", format!("{:+.1}", r - noop));
            // Each part's median minus the no-op's: the parts of rss_vs_noop_mib (the medians
            // of parts need not add up to the median of the whole exactly).
            for (label, part) in ["live_vs_noop", "kept_vs_noop", "other_vs_noop"]
                .into_iter()
                .zip(&parts)
            {
                let m = bench::median_min_max(&part[i]).0;
                row = row.field(label, format!("{:+.1}", m - noop_of(part)));
            }
            rows.push(
                row.field("cold_start_ms", format!("{c:.0}"))
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
