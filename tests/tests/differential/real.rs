//! The Envoy runner: a group of scenarios in one stock Envoy 1.40 (one listener, plugin and
//! `vm_id` per scenario; the clusters of all of them), real h2c clients and endpoints on
//! loopback ports. Each scenario also runs in host-sim ([`crate::sim`]) and the two
//! observations must be equal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, paths};
use serde_json::{Value, json};

use crate::observe::{Observed, Received, compare, log_selected, mask};
use crate::scenario::{Compare, Policy, Scenario, Server, Step};
use crate::server;
use crate::sim;

/// Bound on waiting for Envoy to catch up with what host-sim observed (log lines written by
/// worker threads, stats, ticks).
const SETTLE: Duration = Duration::from_secs(5);

/// Runs every scenario in host-sim and in one shared Envoy; panics with every disagreement.
pub fn run_group(scenarios: &[Scenario]) {
    let wasm = paths::wasm("abi_probe").expect("abi_probe.wasm (run ./build.sh)");
    let workers = scenarios.first().map_or(1, |s| s.workers);
    assert!(
        scenarios.iter().all(|s| s.workers == workers),
        "a group shares one Envoy: same worker count"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Clusters of every scenario; the same name must mean the same endpoint.
    let mut specs: BTreeMap<String, Server> = BTreeMap::new();
    for s in scenarios {
        for c in &s.clusters {
            if let Some(prev) = specs.insert(c.name.clone(), c.server.clone()) {
                assert_eq!(
                    prev, c.server,
                    "cluster {} defined twice differently",
                    c.name
                );
            }
        }
    }
    let mut servers = BTreeMap::new();
    let mut clusters = Vec::new();
    for (name, spec) in &specs {
        let addr = match spec {
            Server::Down => closed_port(),
            _ => {
                let srv = rt.block_on(server::Server::start(spec.clone()));
                let addr = srv.addr;
                servers.insert(name.clone(), srv);
                addr
            }
        };
        clusters.push(h2_cluster(name, addr));
    }
    let mut cfg = EnvoyConfig::new(None).concurrency(workers);
    cfg.clusters = clusters;
    for s in scenarios {
        cfg = cfg.listener(listener(s, &wasm));
    }
    let envoy = Envoy::start(&cfg).expect("starting Envoy");

    let mut failures = Vec::new();
    for s in scenarios {
        let sim = sim::run(s, &wasm);
        let real = run_one(&rt, &envoy, &servers, s, &sim);
        if std::env::var_os("DIFFERENTIAL_SHOW").is_some() {
            eprintln!(
                "=== {} (host-sim)\n{:#?}\n=== {} (envoy)\n{:#?}",
                s.name, sim.observed, s.name, real
            );
        }
        if let Err(report) = compare(s.name, &sim.observed, &real) {
            failures.push(report);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run_one(
    rt: &tokio::runtime::Runtime,
    envoy: &Envoy,
    servers: &BTreeMap<String, server::Server>,
    s: &Scenario,
    sim: &sim::SimRun,
) -> Observed {
    let c = &s.compare;
    let stats_before = envoy.stats().expect("/stats");
    for srv in servers.values() {
        srv.clear();
    }
    let addr = envoy.listener(s.name);
    let mut responses = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        match step {
            Step::Request(r) if s.http1 => {
                responses.push(rt.block_on(crate::client::send_h1(addr, r)));
            }
            Step::Request(r) => responses.push(rt.block_on(crate::client::send(addr, r))),
            Step::Ticks { rounds } => {
                let want = sim.observed.ticking_vms.unwrap_or(1);
                wait_until(|| {
                    let log = envoy.log();
                    let counts = tick_counts(&log, s.name);
                    counts
                        .values()
                        .filter(|n| **n >= u64::from(*rounds))
                        .count()
                        >= want
                });
            }
        }
        // Sync point: the request's on_log ran (Envoy logs it from the worker, possibly just
        // after the client has the response). Bounded; a disagreement shows in the comparison.
        let want = sim.log_counts.get(i).copied().unwrap_or(0);
        wait_until(|| {
            let log = envoy.log();
            module_lines(&log, s.name)
                .filter(|(_, m)| m.starts_with("probe:log:"))
                .count()
                >= want
        });
    }

    let mut metrics = BTreeMap::new();
    for name in &c.metrics {
        let key = format!("wasmcustom.{name}");
        let before = stats_before.get(&key).copied().unwrap_or(0);
        let want = sim.observed.metrics.get(*name).copied();
        let mut delta = 0;
        wait_until(|| {
            let now = envoy.stat(&key).unwrap_or(0);
            delta = now.wrapping_sub(before);
            Some(delta) == want
        });
        metrics.insert((*name).to_owned(), delta);
    }

    let mut received: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for (name, srv) in servers {
        let mut list: Vec<Received> = srv.seen().iter().map(|r| to_received(c, r)).collect();
        if !list.is_empty() {
            list.sort();
            received.insert(name.clone(), list);
        }
    }

    let log = envoy.log();
    // Every line of this scenario's plugin since Envoy started (start-up lines included).
    let mut logs: Vec<String> = module_lines(&log, s.name)
        .filter(|(_, m)| log_selected(c, m))
        .map(|(_, m)| mask(c, m))
        .collect();
    if s.workers > 1 {
        // Several VMs log concurrently: compare the lines, not their interleaving.
        logs.sort();
    }
    let ticking_vms = c.ticking_vms.then(|| tick_counts(&log, s.name).len());

    Observed {
        responses,
        received,
        metrics,
        logs,
        ticking_vms,
    }
}

fn to_received(c: &Compare, r: &server::Seen) -> Received {
    let mut headers = Vec::new();
    for name in &c.received_headers {
        for (k, v) in &r.headers {
            if k == name {
                headers.push((k.clone(), v.clone()));
            }
        }
    }
    Received {
        method: r.method.clone(),
        path: r.path.clone(),
        authority: r.authority.clone(),
        headers,
        body: crate::observe::body_text(&r.body),
        trailers: r.trailers.clone(),
    }
}

/// Polls `cond` until it holds or [`SETTLE`] passes (then the comparison reports).
fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !cond() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `(thread id, message)` of every module log line of plugin `plugin`.
///
/// Envoy's default format: `[time][thread][level][logger] [file:line] wasm log <plugin>
/// <root_id> <vm_id>: <message>`.
pub fn module_lines<'a>(
    log: &'a str,
    plugin: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    log.lines().filter_map(move |line| {
        let (_, rest) = line.split_once("wasm log ")?;
        let (prefix, message) = rest.split_once(": ")?;
        if prefix.split_whitespace().next() != Some(plugin) {
            return None;
        }
        let thread = line.split('[').nth(2)?.split(']').next()?;
        Some((thread, message))
    })
}

/// Highest tick count seen per thread for `plugin`.
fn tick_counts(log: &str, plugin: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (thread, m) in module_lines(log, plugin) {
        if let Some(rest) = m.strip_prefix("probe:tick:n=") {
            let n: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let e = out.entry(thread.to_owned()).or_insert(0);
            *e = n.max(*e);
        }
    }
    out
}

fn listener(s: &Scenario, wasm: &Path) -> Listener {
    let filter = Filter {
        name: s.name.into(),
        wasm: wasm.to_path_buf(),
        vm_id: s.name.into(),
        config: s.plugin_config.clone(),
        failure_policy: Some(
            match s.policy {
                Policy::FailClosed => "FAIL_CLOSED",
                Policy::FailOpen => "FAIL_OPEN",
            }
            .into(),
        ),
    };
    let mut l = Listener::new(s.name).filter(filter);
    let routes: Vec<Value> = s
        .routes
        .iter()
        .map(|r| {
            let mut m = json!({"prefix": r.prefix});
            if let Some((k, v)) = &r.header {
                m["headers"] = json!([{"name": k, "string_match": {"exact": v}}]);
            }
            let mut route = json!({
                "name": r.name,
                "match": m,
                "route": {"cluster": r.cluster, "timeout": format!("{}s", s.route_timeout.as_secs_f64())},
            });
            if !r.metadata.is_null() {
                route["metadata"] = json!({"filter_metadata": r.metadata});
            }
            route
        })
        .collect();
    l.route_config = json!({
        "name": "local",
        "virtual_hosts": [{"name": "local_service", "domains": ["*"], "routes": routes}],
    });
    l
}

/// A static HTTP/2 cluster with one endpoint.
fn h2_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}
        }}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
    })
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}
