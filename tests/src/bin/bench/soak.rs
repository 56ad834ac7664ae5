//! `soak`: the sidecar with all four filters at 2× overload for 10 minutes (`--minutes N` or
//! `--seconds N`), sampling Envoy's RSS and every meshguard counter every `--interval` seconds
//! (10), then checking the three goals of the hardening issue: RSS growth after warm-up ≤ 5 %,
//! zero VM traps, and accounting that closes. Goals are printed next to the measurement, not
//! asserted.
//!
//! Set-up: the test upstream as its own process with `--slots` (10) concurrent slots, lognormal
//! service time (median 20 ms, σ 0.25) and an unbounded FIFO queue; its capacity is measured
//! first (closed loop, 100 concurrent, as `overload` does). One Envoy `--concurrency 2` with the
//! filter chain of a `meshguard-config` sidecar on one listener — rate_limit, load_shed (its
//! inbound chain), sandbox_router, circuit_breaker (its outbound chain), in that order, each
//! with `failure_policy: FAIL_RELOAD` (docs/deploy.md), the listener stripping client routing headers
//! natively and routing `x-meshguard-sandbox-cluster` with `cluster_header` — and the
//! generator's filter configs, with limits sized to the measured capacity C and keyed by an
//! `x-client` header (one load generator has one address):
//!
//! - rate_limit: the generator's shape (a default bucket of 4 C/s, never reached, and a
//!   `per_client` rule) with 0.25 C/s per client;
//! - load_shed: the generator's (criticality header `x-criticality`, health checks exempt);
//! - sandbox_router: one sandbox `dev` of the service (`upstream_dev`, the same upstream);
//! - circuit_breaker: the generator's (5 consecutive failures, open 5 s), one breaker per client.
//!
//! Open-loop Poisson load at `--load` (2.0) × C, client timeout 5 s, every request one of:
//! 10 normal clients (70 %; 30 % of them `x-criticality: sheddable`, 5 % with `baggage:
//! sandbox=dev`), a noisy client (25 %, twice its rate limit), a broken client (5 %, whose
//! requests the upstream answers 500, so its breaker opens).
//!
//! Accounting: every request sent must be admitted (the upstream received it) or rejected by
//! exactly one cause (meshguard counters `rate_limit.limited.*`, `load_shed.rejected.*`,
//! `circuit_breaker.rejected`); the client's own view (upstream answers carry
//! `x-envoy-upstream-service-time`, each rejection has its filter's status and body) must agree
//! cause by cause, and Envoy's `downstream_rq_total` must equal what the client sent.
//! Traps: Wasm failure lines in Envoy's log (`Uncaught`, `panicked at`, `failed:`), V8 VMs
//! created after start-up, and `wasm.<plugin>.vm_reload*`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meshguard_tests::bench::{self, Row};
use meshguard_tests::loadgen::Rng;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, envoy, loadgen};
use serde_json::json;

use crate::Opts;
use crate::upstream_proc::{self, Upstream, drain, start_upstream};

const TIMEOUT: Duration = Duration::from_secs(5);
const ROUTING: &str = "x-meshguard-sandbox-cluster";
/// The failure policy docs/deploy.md recommends for every filter; with it a trap also shows in
/// `wasm.<plugin>.vm_reload*` (under `FAIL_OPEN` only in the log).
const FAILURE_POLICY: &str = "FAIL_RELOAD";
/// Latency histogram: 1 ms buckets up to the client timeout.
const BUCKETS: usize = 5001;
const TRAP_MARKERS: &[&str] = &["Uncaught", "panicked at", "RuntimeError", "] Function: "];

fn upstream_config(slots: u64) -> String {
    json!({"seed": 42, "latency": {"lognormal": {"median_ms": 20, "sigma": 0.25}},
           "capacity": {"concurrency": slots, "queue": "unbounded"}})
    .to_string()
}

/// The four filters, in the sidecar's order, with limits sized to `capacity` (rps).
fn filters(capacity: f64) -> Result<Vec<Filter>> {
    let per_client = (0.25 * capacity).round().max(1.0) as u64;
    let default = (4.0 * capacity).round().max(1.0) as u64;
    let configs = [
        (
            "rate_limit",
            json!({
                "mode": "enforce",
                "token_bucket": {"max_tokens": default, "tokens_per_fill": default, "fill_interval": "1s"},
                "descriptors": [{
                    "name": "per_client",
                    "entries": [{"header": {"name": "x-client"}}],
                    "token_bucket": {"max_tokens": per_client, "tokens_per_fill": per_client, "fill_interval": "1s"},
                }],
            }),
        ),
        (
            "load_shed",
            json!({"mode": "enforce", "criticality": {"header": "x-criticality"},
                   "exempt": [{"path": {"exact": "/healthz"}}, {"path": {"exact": "/ready"}}]}),
        ),
        (
            "sandbox_router",
            json!({"mode": "enforce", "strip_client_routing_headers": false,
                   "routes": [{"key": "dev", "service": "upstream", "cluster": "upstream_dev"}]}),
        ),
        (
            "circuit_breaker",
            json!({"mode": "enforce", "open": {"base_duration": "5s"},
                   "trip": {"consecutive_failures": 5},
                   "key": {"header": "x-client", "max_keys": 100}}),
        ),
    ];
    configs
        .into_iter()
        .map(|(name, config)| {
            Ok(Filter::meshguard(name)?
                .config(config.to_string())
                .failure_policy(FAILURE_POLICY))
        })
        .collect()
}

fn start_envoy(upstream: std::net::SocketAddr, capacity: f64) -> Result<Envoy> {
    let mut l = Listener::new("sidecar").hcm(
        "early_header_mutation_extensions",
        json!([{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": ROUTING}, {"remove": "x-envoy-original-dst-host"}],
            },
        }]),
    );
    for f in filters(capacity)? {
        l = l.filter(f);
    }
    l.route_config = json!({"name": "sidecar", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": ROUTING, "present_match": true}]},
         "route": {"cluster_header": ROUTING, "timeout": "15s"},
         "request_headers_to_remove": [ROUTING]},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "15s"}},
    ]}]});
    let mut cfg = EnvoyConfig::new(Some(upstream)).concurrency(2).listener(l);
    cfg.clusters.push(envoy::cluster("upstream_dev", upstream));
    Envoy::start(&cfg)
}

/// What the client saw, counted as responses arrive.
#[derive(Default)]
struct ClientCounts {
    sent: AtomicU64,
    /// Answered by the upstream (`x-envoy-upstream-service-time`), any status.
    upstream: AtomicU64,
    rate_limit: AtomicU64,
    load_shed: AtomicU64,
    circuit_breaker: AtomicU64,
    /// Any other answer (an Envoy local reply that is none of meshguard's).
    other: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    /// Requests without an outcome yet.
    pending: AtomicU64,
    /// 2xx latency histogram (1 ms buckets).
    latency: Vec<AtomicU64>,
}

impl ClientCounts {
    fn new() -> Self {
        Self {
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            ..Self::default()
        }
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn quantile(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.latency.iter().map(Self::get).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return ms as f64;
            }
        }
        (BUCKETS - 1) as f64
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

/// Request headers of the next request of the traffic mix.
fn next_headers(rng: &mut Rng) -> Vec<(&'static str, String)> {
    let r = rng.unit();
    if r < 0.05 {
        return vec![
            ("x-client", "broken".into()),
            ("x-upstream-status", "500".into()),
        ];
    }
    if r < 0.30 {
        return vec![("x-client", "noisy".into())];
    }
    let mut h = vec![("x-client", format!("c{}", (rng.unit() * 10.0) as u32 % 10))];
    if rng.unit() < 0.30 {
        h.push(("x-criticality", "sheddable".into()));
    }
    if rng.unit() < 0.05 {
        h.push(("baggage", "sandbox=dev".into()));
    }
    h
}

/// Open-loop Poisson load at `rps` for `duration`; returns when every request has an outcome.
async fn generate(url: String, rps: f64, duration: Duration, c: Arc<ClientCounts>) -> Result<()> {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let uri: hyper::Uri = url.parse()?;
    let mut rng = Rng(0x5eed_50a4 | 1);
    let start = Instant::now();
    let mut next = Duration::ZERO;
    while next < duration {
        tokio::time::sleep_until((start + next).into()).await;
        let mut req = hyper::Request::get(uri.clone());
        for (k, v) in next_headers(&mut rng) {
            req = req.header(k, v);
        }
        let req = req.body(Body::default())?;
        let (client, c) = (client.clone(), Arc::clone(&c));
        c.sent.fetch_add(1, Ordering::Relaxed);
        c.pending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = tokio::time::timeout(TIMEOUT, async {
                let resp = client.request(req).await?;
                let status = resp.status().as_u16();
                let from_upstream = resp.headers().contains_key("x-envoy-upstream-service-time");
                let body = resp.into_body().collect().await?.to_bytes();
                anyhow::Ok((status, from_upstream, body))
            })
            .await;
            let counter = match &result {
                Ok(Ok((status, true, _))) => {
                    if (200..300).contains(status) {
                        let ms = (sent.elapsed().as_millis() as usize).min(BUCKETS - 1);
                        c.latency[ms].fetch_add(1, Ordering::Relaxed);
                    }
                    &c.upstream
                }
                Ok(Ok((429, false, b))) if &b[..] == b"rate limited" => &c.rate_limit,
                Ok(Ok((503, false, b))) if &b[..] == b"overloaded" => &c.load_shed,
                Ok(Ok((503, false, b))) if &b[..] == b"upstream unavailable: circuit open" => {
                    &c.circuit_breaker
                }
                Ok(Ok(_)) => &c.other,
                Ok(Err(_)) => &c.errors,
                Err(_) => &c.timeouts,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            c.pending.fetch_sub(1, Ordering::Relaxed);
        });
        next += Duration::from_secs_f64(-rng.unit().ln() / rps);
    }
    let deadline = Instant::now() + TIMEOUT + Duration::from_secs(5);
    while c.pending.load(Ordering::Relaxed) > 0 {
        if Instant::now() > deadline {
            bail!(
                "{} requests still pending",
                c.pending.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The server side of the accounting at one moment.
struct Sample {
    t_s: f64,
    rss_mib: f64,
    sent: u64,
    received: u64,
    stats: BTreeMap<String, u64>,
}

fn sum_prefix(stats: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

fn get(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

const M: &str = "wasmcustom.meshguard.";

impl Sample {
    fn take(
        envoy: &Envoy,
        upstream: &Upstream,
        base_received: u64,
        sent: u64,
        t_s: f64,
    ) -> Result<Self> {
        let stats = envoy.stats()?;
        let received = upstream_proc::stats(upstream)?["received"]
            .as_u64()
            .context("upstream received")?;
        Ok(Self {
            t_s,
            rss_mib: envoy.rss_bytes()? as f64 / (1024.0 * 1024.0),
            sent,
            received: received.saturating_sub(base_received),
            stats,
        })
    }

    fn rate_limited(&self) -> u64 {
        sum_prefix(&self.stats, &format!("{M}rate_limit.limited."))
    }
    fn shed(&self) -> u64 {
        sum_prefix(&self.stats, &format!("{M}load_shed.rejected."))
    }
    fn broken(&self) -> u64 {
        get(&self.stats, &format!("{M}circuit_breaker.rejected"))
    }

    fn row(&self) -> Row {
        let s = &self.stats;
        Row::new("soak", "meshguard")
            .field("t_s", format!("{:.0}", self.t_s))
            .field("rss_mib", format!("{:.1}", self.rss_mib))
            .field("sent", self.sent)
            .field("admitted", self.received)
            .field("rejected_rate_limit", self.rate_limited())
            .field("rejected_load_shed", self.shed())
            .field("rejected_circuit_breaker", self.broken())
            .field("rl_allowed", get(s, &format!("{M}rate_limit.allowed")))
            .field(
                "ls_admitted",
                sum_prefix(s, &format!("{M}load_shed.admitted.")),
            )
            .field("ls_limit", get(s, &format!("{M}load_shed.limit")))
            .field("sb_routed", get(s, &format!("{M}sandbox_router.routed")))
            .field(
                "sb_fallback",
                sum_prefix(s, &format!("{M}sandbox_router.fallback.")),
            )
            .field(
                "cb_opened",
                sum_prefix(s, &format!("{M}circuit_breaker.opened.")),
            )
            .field(
                "cb_failures",
                get(s, &format!("{M}circuit_breaker.outcome.failure")),
            )
            .field(
                "contended",
                get(s, &format!("{M}rate_limit.contended"))
                    + get(s, &format!("{M}circuit_breaker.contended")),
            )
    }
}

/// Wasm VM failures: trap lines in the log, VMs created after start-up, reloads.
fn traps(envoy: &Envoy, created_at_start: u64, stats: &BTreeMap<String, u64>) -> (u64, u64, u64) {
    let lines = envoy
        .log()
        .lines()
        .filter(|l| TRAP_MARKERS.iter().any(|m| l.contains(m)))
        .count() as u64;
    let created = get(stats, "wasm.envoy.wasm.runtime.v8.created").saturating_sub(created_at_start);
    let reloads = stats
        .iter()
        .filter(|(k, _)| k.starts_with("wasm.") && k.contains(".vm_reload"))
        .map(|(_, v)| v)
        .sum();
    (lines, created, reloads)
}

pub fn run(opts: &Opts) -> Result<()> {
    let minutes: f64 = opts.get("minutes", 10.0)?;
    let seconds: f64 = opts.get("seconds", minutes * 60.0)?;
    let load: f64 = opts.get("load", 2.0)?;
    let slots: u64 = opts.get("slots", 10)?;
    let interval: f64 = opts.get("interval", 10.0)?;
    if seconds < interval || interval <= 0.0 {
        bail!("--seconds ({seconds}) must be at least --interval ({interval}) > 0");
    }
    let duration = Duration::from_secs_f64(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let upstream = start_upstream(&upstream_config(slots))?;
    let capacity = rt.block_on(loadgen::saturate(
        &format!("http://{}/", upstream.addr),
        100,
        Duration::from_secs(5),
    ))?;
    drain(&upstream)?;
    let rps = load * capacity;
    eprintln!(
        "soak: upstream capacity {capacity:.0} rps ({slots} slots x lognormal 20 ms); \
         {load}x = {rps:.0} rps for {seconds:.0} s through the four-filter sidecar, a sample every {interval} s"
    );
    let envoy = start_envoy(upstream.addr, capacity)?;
    let created_at_start = envoy.stat("wasm.envoy.wasm.runtime.v8.created")?;
    let base_received = upstream_proc::stats(&upstream)?["received"]
        .as_u64()
        .unwrap_or(0);
    let url = format!("http://{}/", envoy.listener("sidecar"));
    let counts = Arc::new(ClientCounts::new());

    let mut samples: Vec<Sample> = Vec::new();
    rt.block_on(async {
        let start = Instant::now();
        let load = tokio::spawn(generate(url, rps, duration, Arc::clone(&counts)));
        let mut k = 1u32;
        while f64::from(k) * interval <= seconds + 1e-9 {
            tokio::time::sleep_until(
                (start + Duration::from_secs_f64(f64::from(k) * interval)).into(),
            )
            .await;
            let sent = ClientCounts::get(&counts.sent);
            let t = start.elapsed().as_secs_f64();
            let s = Sample::take(&envoy, &upstream, base_received, sent, t)?;
            eprintln!("{}", s.row().line());
            samples.push(s);
            k += 1;
        }
        load.await??;
        anyhow::Ok(())
    })?;
    // Every request has an outcome; let the upstream finish and Envoy log the last ones.
    drain(&upstream)?;
    let sent = ClientCounts::get(&counts.sent);
    let settled = settle(&envoy, &upstream, base_received, sent)?;

    // RSS growth after warm-up: the first sample at or after 60 s (1/5 of a shorter run).
    let warm_at = 60f64.min(seconds / 5.0);
    let warm = samples
        .iter()
        .find(|s| s.t_s >= warm_at - 0.5)
        .context("no sample after warm-up")?;
    let last = samples.last().context("no sample")?;
    let growth = 100.0 * (last.rss_mib - warm.rss_mib) / warm.rss_mib;
    let (trap_lines, vms_created, reloads) = traps(&envoy, created_at_start, &settled.stats);
    let trap_count = trap_lines + vms_created + reloads;

    // Accounting: server side, then the client's view cause by cause.
    let c = &counts;
    let g = ClientCounts::get;
    let (rl, ls, cb) = (settled.rate_limited(), settled.shed(), settled.broken());
    let downstream = get(&settled.stats, "http.sidecar.downstream_rq_total");
    let mut mismatches = Vec::new();
    let accounted = settled.received + rl + ls + cb;
    if accounted != sent {
        mismatches.push(format!("sent_{sent}_vs_admitted+rejected_{accounted}"));
    }
    if downstream != sent {
        mismatches.push(format!("envoy_downstream_rq_{downstream}_vs_sent_{sent}"));
    }
    for (cause, client, server) in [
        ("admitted", g(&c.upstream), settled.received),
        ("rate_limit", g(&c.rate_limit), rl),
        ("load_shed", g(&c.load_shed), ls),
        ("circuit_breaker", g(&c.circuit_breaker), cb),
    ] {
        if client != server {
            mismatches.push(format!("{cause}_client_{client}_vs_server_{server}"));
        }
    }
    for (what, n) in [
        ("other_replies", g(&c.other)),
        ("timeouts", g(&c.timeouts)),
        ("errors", g(&c.errors)),
    ] {
        if n > 0 {
            mismatches.push(format!("{what}_{n}"));
        }
    }
    let accounting = if mismatches.is_empty() {
        "closed".to_owned()
    } else {
        mismatches.join(",")
    };

    let mut rows: Vec<Row> = samples.iter().map(Sample::row).collect();
    rows.push(
        Row::new("soak", "meshguard_summary")
            .field("seconds", format!("{seconds:.0}"))
            .field("load", load)
            .field("capacity_rps", format!("{capacity:.0}"))
            .field("sent", sent)
            .field("admitted", settled.received)
            .field("rejected_rate_limit", rl)
            .field("rejected_load_shed", ls)
            .field("rejected_circuit_breaker", cb)
            .field(
                "goodput_rps",
                format!("{:.0}", settled.received as f64 / seconds),
            )
            .field("p50_ms", format!("{:.0}", c.quantile(0.5)))
            .field("p99_ms", format!("{:.0}", c.quantile(0.99)))
            .field("timeouts", g(&c.timeouts))
            .field("errors", g(&c.errors))
            .field("rss_warm_mib", format!("{:.1}", warm.rss_mib))
            .field("rss_warm_t_s", format!("{:.0}", warm.t_s))
            .field("rss_last_mib", format!("{:.1}", last.rss_mib))
            .field("rss_growth_pct", format!("{growth:.2}"))
            .field(
                "rss_goal",
                if growth <= 5.0 {
                    "met(<=5%)"
                } else {
                    "MISSED(<=5%)"
                },
            )
            .field("traps", trap_count)
            .field("trap_log_lines", trap_lines)
            .field("vms_created", vms_created)
            .field("vm_reloads", reloads)
            .field(
                "traps_goal",
                if trap_count == 0 {
                    "met(0)"
                } else {
                    "MISSED(0)"
                },
            )
            .field("accounting", accounting),
    );
    bench::print_rows(&rows);
    eprintln!("soak: meshguard counters at the end:");
    for (k, v) in settled.stats.iter().filter(|(k, _)| k.starts_with(M)) {
        eprintln!("  {k}: {v}");
    }
    Ok(())
}

/// The final sample, once every request has ended in Envoy and the meshguard counters have
/// stopped moving (filters add their counts on their 100 ms tick), at most 10 s.
fn settle(envoy: &Envoy, upstream: &Upstream, base_received: u64, sent: u64) -> Result<Sample> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let meshguard = |s: &Sample| -> BTreeMap<String, u64> {
        s.stats
            .iter()
            .filter(|(k, _)| k.starts_with(M))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let mut previous: Option<BTreeMap<String, u64>> = None;
    loop {
        let s = Sample::take(envoy, upstream, base_received, sent, f64::NAN)?;
        let downstream = get(&s.stats, "http.sidecar.downstream_rq_total");
        let done = get(&s.stats, "http.sidecar.downstream_rq_completed");
        let counters = meshguard(&s);
        let stable = previous.as_ref() == Some(&counters);
        if (downstream == sent && done == downstream && stable) || Instant::now() > deadline {
            return Ok(s);
        }
        previous = Some(counters);
        // Longer than two filter ticks, so an unchanged pair of samples means settled.
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_mix_has_every_client_kind() {
        let mut rng = Rng(7);
        let mut kinds = BTreeMap::new();
        for _ in 0..10_000 {
            let h = next_headers(&mut rng);
            let client = h[0].1.clone();
            let kind = if client.starts_with('c') {
                "normal"
            } else {
                client.as_str()
            }
            .to_owned();
            *kinds.entry(kind).or_insert(0u32) += 1;
        }
        assert!((400..600).contains(&kinds["broken"]), "{kinds:?}");
        assert!((2300..2700).contains(&kinds["noisy"]), "{kinds:?}");
        assert!((6800..7200).contains(&kinds["normal"]), "{kinds:?}");
    }

    #[test]
    fn quantiles_of_the_histogram() {
        let c = ClientCounts::new();
        for ms in [1usize, 2, 3, 4, 100] {
            c.latency[ms].fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(c.quantile(0.5), 3.0);
        assert_eq!(c.quantile(0.99), 100.0);
    }

    #[test]
    fn four_filters_in_sidecar_order() {
        let Ok(f) = filters(1000.0) else {
            return; // dist/ not built: nothing to check here
        };
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rate_limit",
                "load_shed",
                "sandbox_router",
                "circuit_breaker"
            ]
        );
        let v: Value = serde_json::from_str(&f[0].config).unwrap();
        assert_eq!(v["descriptors"][0]["token_bucket"]["max_tokens"], 250);
    }
}
