//! Benchmark plumbing shared by `meshguard-bench`: load generators, CPU accounting (Envoy's
//! CPU per request with `direct_response`, used by `overhead` and `host-sim`), rows.
//!
//! Every benchmark prints a human table and, per row, one machine-readable line
//! `bench=<name> config=<config> key=value ...` (DESIGN.md "Benchmark output"). Anchors are rows
//! of the same run; only ratios within one run mean anything on a shared, noisy machine.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Envoy, EnvoyConfig, Filter, Listener};

/// What one `wrk` run reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    /// Responses that were not 2xx/3xx.
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub errors: u64,
    /// Wall time of the run.
    pub seconds: f64,
}

/// Runs `wrk -t1 -c<connections> -d<duration>` against `http://addr/`, pinned to `cpu` when
/// given (so the load generator and Envoy do not share a core).
pub fn wrk(
    addr: SocketAddr,
    connections: u32,
    duration: Duration,
    cpu: Option<u32>,
) -> Result<WrkResult> {
    wrk_with_headers(addr, connections, duration, cpu, &[])
}

/// [`wrk`] sending extra request headers (`"name: value"`, each passed as `-H`).
pub fn wrk_with_headers(
    addr: SocketAddr,
    connections: u32,
    duration: Duration,
    cpu: Option<u32>,
    headers: &[String],
) -> Result<WrkResult> {
    let mut cmd = match cpu {
        Some(c) if which("taskset") => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string(), "wrk"]);
            cmd
        }
        _ => Command::new("wrk"),
    };
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{}s", duration.as_secs().max(1)),
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("http://{addr}/"));
    let out = cmd
        .output()
        .context("running wrk (install: ./build.sh setup)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// Parses wrk's summary.
pub fn parse_wrk(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some((n, rest)) = line.split_once(" requests in ") {
            r.requests = n.trim().parse()?;
            let secs = rest.split(',').next().unwrap_or("").trim();
            r.seconds = parse_wrk_duration(secs).unwrap_or(0.0);
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = n.trim().parse()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            r.errors = rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    if r.requests == 0 {
        bail!("wrk reported no requests:\n{text}");
    }
    Ok(r)
}

fn parse_wrk_duration(s: &str) -> Option<f64> {
    if let Some(v) = s.strip_suffix("ms") {
        return v.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    if let Some(v) = s.strip_suffix("us") {
        return v.parse::<f64>().ok().map(|v| v / 1e6);
    }
    if let Some(v) = s.strip_suffix('m') {
        return v.parse::<f64>().ok().map(|v| v * 60.0);
    }
    s.strip_suffix('s')?.parse().ok()
}

/// One Envoy for a CPU-per-request measurement (baselines.md §1): `--concurrency 1`, a route
/// with `direct_response` 200 `ok` (no upstream), `filters` before the router; pinned to core 0
/// (wrk runs on core 1) when `taskset` exists.
///
/// # Errors
/// When Envoy does not start.
pub fn start_direct_response_envoy(filters: Vec<Filter>) -> Result<Envoy> {
    let mut l = Listener::new("bench").direct_response(200, "ok");
    for f in filters {
        l = l.filter(f);
    }
    let cfg = EnvoyConfig::new(None).concurrency(1).listener(l);
    let envoy = Envoy::start(&cfg)?;
    pin(envoy.pid(), 0);
    Ok(envoy)
}

/// Pins a process (all its threads) to one CPU when `taskset` exists; best effort.
pub fn pin(pid: u32, cpu: u32) {
    if which("taskset") {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .output();
    }
}

/// What one measured `wrk` run cost Envoy.
#[derive(Clone, Copy, Debug)]
pub struct EnvoyCpuSample {
    /// Envoy process CPU (user + system) per request served, in microseconds.
    pub cpu_us_per_req: f64,
    /// Requests per wall-clock second.
    pub rps: f64,
}

impl EnvoyCpuSample {
    /// Requests per CPU-second of Envoy.
    pub fn rps_per_cpu_s(&self) -> f64 {
        1e6 / self.cpu_us_per_req
    }
}

/// Runs `wrk -t1 -c<connections>` (pinned to core 1) against the `bench` listener of an Envoy
/// started by [`start_direct_response_envoy`] and divides Envoy's CPU time by the requests.
///
/// # Errors
/// When wrk fails, or any response was not 2xx or any socket error happened.
pub fn measure_envoy_cpu(
    envoy: &Envoy,
    connections: u32,
    duration: Duration,
) -> Result<EnvoyCpuSample> {
    measure_envoy_cpu_with_headers(envoy, connections, duration, &[])
}

/// [`measure_envoy_cpu`] with extra request headers (`"name: value"`).
///
/// # Errors
/// As [`measure_envoy_cpu`].
pub fn measure_envoy_cpu_with_headers(
    envoy: &Envoy,
    connections: u32,
    duration: Duration,
    headers: &[String],
) -> Result<EnvoyCpuSample> {
    let before = envoy.cpu_time()?;
    let r = wrk_with_headers(
        envoy.listener("bench"),
        connections,
        duration,
        Some(1),
        headers,
    )?;
    let cpu = envoy.cpu_time()?.saturating_sub(before);
    if r.non_2xx > 0 || r.errors > 0 {
        bail!("{} non-2xx, {} socket errors", r.non_2xx, r.errors);
    }
    Ok(EnvoyCpuSample {
        cpu_us_per_req: cpu.as_secs_f64() * 1e6 / r.requests as f64,
        rps: r.requests as f64 / r.seconds.max(1e-9),
    })
}

/// True when `prog` is on PATH.
pub fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(prog).is_file()))
}

/// Median, min and max of a sample (sorted copy; NaN-free input expected).
pub fn median_min_max(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (median, v[0], v[v.len() - 1])
}

/// One result row: `bench=<bench> config=<config> k=v ...`.
#[derive(Clone, Debug)]
pub struct Row {
    /// Benchmark name.
    pub bench: String,
    /// Configuration name (anchors included).
    pub config: String,
    /// Ordered key/value pairs (values without spaces).
    pub fields: Vec<(String, String)>,
}

impl Row {
    /// A new row.
    pub fn new(bench: &str, config: &str) -> Self {
        Self {
            bench: bench.into(),
            config: config.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    #[must_use]
    pub fn field(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let v = value.to_string().replace(' ', "_");
        self.fields.push((key.into(), v));
        self
    }

    /// The machine-readable line.
    pub fn line(&self) -> String {
        let mut s = format!("bench={} config={}", self.bench, self.config);
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={v}");
        }
        s
    }
}

/// Prints rows as an aligned table, then their machine-readable lines.
pub fn print_rows(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    let mut headers = vec!["config".to_owned()];
    for r in rows {
        for (k, _) in &r.fields {
            if !headers.contains(k) {
                headers.push(k.clone());
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            headers
                .iter()
                .map(|h| {
                    if h == "config" {
                        r.config.clone()
                    } else {
                        r.fields
                            .iter()
                            .find(|(k, _)| k == h)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt_row = |cols: &[String]| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", fmt_row(&headers));
    for c in &cells {
        println!("{}", fmt_row(c));
    }
    println!();
    for r in rows {
        println!("{}", r.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_is_parsed() {
        let text = "Running 3s test @ http://127.0.0.1:1/\n  1 threads and 16 connections\n\
                    Latency Distribution\n  50%  1.00ms\n  120544 requests in 3.00s, 14.37MB read\n\
                    Socket errors: connect 0, read 2, write 0, timeout 1\n\
                    Non-2xx or 3xx responses: 5\nRequests/sec:  40181.33\n";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 120_544);
        assert_eq!(r.non_2xx, 5);
        assert_eq!(r.errors, 3);
        assert!((r.seconds - 3.0).abs() < 1e-9);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median_min_max(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_min_max(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn rows_have_no_spaces_in_values() {
        let r = Row::new("overhead", "noop_wasm").field("note", "a b");
        assert_eq!(r.line(), "bench=overhead config=noop_wasm note=a_b");
    }
}
