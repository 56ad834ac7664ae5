//! "Why did my request get a 503?": every kind of meshguard decision can be read back from the
//! access log of a real Envoy 1.40 in the shipped format (`ACCESS_LOG_FORMAT`, used by the
//! generated sidecars and `envoy-configs/demo.yaml`).

#![allow(clippy::disallowed_methods)] // waits are bounded by wall-clock deadlines

use std::path::Path;
use std::time::{Duration, Instant};

use meshguard_config::generate::ACCESS_LOG_FORMAT;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, envoy, h1, paths};
use meshguard_upstream::{Capacity, Latency, Queue, Upstream, UpstreamConfig};
use serde_json::json;

async fn get(addr: std::net::SocketAddr, path: &str, extra: &[(&[u8], &[u8])]) -> u16 {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"svc")];
    headers.extend_from_slice(extra);
    h1::exchange(addr, &h1::head("GET", path, &headers))
        .await
        .unwrap()
        .status
}

/// The access-log lines once at least `n` are written (bounded wait).
fn lines(log: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} access-log lines:\n{text}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one line that contains every needle.
fn find<'a>(lines: &'a [String], needles: &[&str]) -> &'a str {
    lines
        .iter()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{}", lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_access_log_explains_every_kind_of_decision() {
    let fast = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let slow = Upstream::start(UpstreamConfig {
        latency: Latency::Fixed { ms: 300 },
        capacity: Some(Capacity {
            concurrency: 2,
            queue: Queue::Unbounded,
        }),
        ..UpstreamConfig::default()
    })
    .await
    .unwrap();
    // A port nobody listens on: the RLS cannot answer.
    let no_rls = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");

    let mut ls = Listener::new("ls")
        .filter(Filter::meshguard("load_shed").unwrap().config(
            r#"{"concurrency_limit_params": {"initial_concurrency_limit": 2, "min_concurrency_limit": 1,
                                             "max_concurrency_limit": 4}}"#,
        ))
        .access_log(&log, ACCESS_LOG_FORMAT);
    ls.route_config = envoy::route_to_cluster("slow");
    let cb = Listener::new("cb")
        .filter(
            Filter::meshguard("circuit_breaker")
                .unwrap()
                .config(r#"{"open": {"base_duration": "30s", "jitter_percent": 0}}"#),
        )
        .access_log(&log, ACCESS_LOG_FORMAT);
    let rl = Listener::new("rl")
        .filter(Filter::meshguard("rate_limit").unwrap().config(
            r#"{"descriptors": [
                  {"name": "local_one", "entries": [{"path": {"prefix": "/local"}}],
                   "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "60s"}},
                  {"name": "checkout", "entries": [{"path": {"prefix": "/global"}}], "global": true}],
                "global": {"cluster": "rls", "domain": "shop", "timeout": "50ms", "failure_mode": "deny"}}"#,
        ))
        .access_log(&log, ACCESS_LOG_FORMAT);
    let mut sr = Listener::new("sr")
        .filter(Filter::meshguard("sandbox_router").unwrap().config(
            r#"{"service_from": "authority",
                "routes": [{"key": "dev-1", "service": "svc", "cluster": "sandbox"}]}"#,
        ))
        .access_log(&log, ACCESS_LOG_FORMAT);
    sr.route_config = json!({"name": "sr", "virtual_hosts": [{"name": "svc", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "x-meshguard-sandbox-cluster", "present_match": true}]},
         "route": {"cluster_header": "x-meshguard-sandbox-cluster"},
         "request_headers_to_remove": ["x-meshguard-sandbox-cluster"]},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
    ]}]});
    let mut cfg = EnvoyConfig::new(Some(fast.addr()))
        .listener(ls)
        .listener(cb)
        .listener(rl)
        .listener(sr);
    cfg.clusters.push(envoy::cluster("slow", slow.addr()));
    cfg.clusters.push(envoy::cluster("sandbox", fast.addr()));
    cfg.clusters.push(envoy::grpc_cluster("rls", no_rls));
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    let mut written = 0;

    // load_shed: a burst over a service that does 2 at a time.
    let addr = envoy.listener("ls");
    let burst: Vec<_> = (0..12)
        .map(|_| tokio::spawn(async move { get(addr, "/", &[]).await }))
        .collect();
    let mut shed = 0;
    for t in burst {
        shed += usize::from(t.await.unwrap() == 503);
    }
    written += 12;
    assert!(shed > 0, "nothing shed");

    // circuit_breaker: five 503s open it, the sixth request is rejected by the breaker.
    let addr = envoy.listener("cb");
    for _ in 0..5 {
        assert_eq!(get(addr, "/", &[(b"x-upstream-status", b"503")]).await, 503);
    }
    assert_eq!(get(addr, "/", &[]).await, 503);
    written += 6;

    // rate_limit: a local bucket of one, and an RLS that cannot be reached (failure mode deny).
    let addr = envoy.listener("rl");
    assert_eq!(get(addr, "/local", &[]).await, 200);
    assert_eq!(get(addr, "/local", &[]).await, 429);
    assert_eq!(get(addr, "/global", &[]).await, 500);
    written += 3;

    // sandbox_router: a key with a table entry, a key without one.
    let addr = envoy.listener("sr");
    assert_eq!(get(addr, "/", &[(b"baggage", b"sandbox=dev-1")]).await, 200);
    assert_eq!(get(addr, "/", &[(b"baggage", b"sandbox=dev-9")]).await, 200);
    written += 2;

    let lines = lines(&log, written);
    eprintln!("access log:\n{}", lines.join("\n"));
    let shed_line = find(
        &lines,
        &[
            " 503 ",
            "details=meshguard_load_shed",
            "load_shed=\"rejected reason=overloaded class=critical worker_lease=",
        ],
    );
    assert!(shed_line.contains("worker_inflight="), "{shed_line}");
    let admitted = find(&lines, &[" 200 ", "upstream=slow"]);
    assert!(admitted.contains("load_shed=\"-\""), "{admitted}");
    find(
        &lines,
        &[
            " 503 ",
            "details=meshguard_circuit_open{open}",
            "circuit_breaker=\"rejected reason=open cluster=upstream\"",
        ],
    );
    // The 503s that opened it came from the upstream: no meshguard decision on them.
    let upstream_503 = find(
        &lines,
        &[" 503 ", "details=via_upstream", "upstream=upstream"],
    );
    assert!(
        upstream_503.contains("circuit_breaker=\"-\""),
        "{upstream_503}"
    );
    find(
        &lines,
        &[
            " 429 ",
            "details=meshguard_rate_limited{local_one}",
            "rate_limit=\"rejected reason=local_limit rule=local_one retry_after_ms=",
        ],
    );
    find(
        &lines,
        &[
            " 500 ",
            "details=meshguard_rate_limit_service_failed",
            "rate_limit=\"rejected reason=rls_failed failure_mode=deny\"",
        ],
    );
    find(
        &lines,
        &[
            " 200 ",
            "upstream=sandbox",
            "sandbox_router=\"routed key=dev-1 service=svc target=sandbox\"",
        ],
    );
    find(
        &lines,
        &[
            " 200 ",
            "upstream=upstream",
            "sandbox_router=\"baseline reason=no_entry key=dev-9\"",
        ],
    );
}

/// The demo config logs in the same format.
#[test]
fn demo_config_uses_the_shipped_format() {
    let demo =
        std::fs::read_to_string(paths::workspace_root().join("envoy-configs/demo.yaml")).unwrap();
    let line = ACCESS_LOG_FORMAT.trim_end();
    assert!(
        demo.lines().any(|l| l.trim() == line),
        "envoy-configs/demo.yaml does not log with ACCESS_LOG_FORMAT:\n{line}"
    );
}

/// The demo config carries the stats tags of `observability/stats_tags.yaml` unchanged.
#[test]
fn demo_config_carries_the_stats_tags() {
    let root = paths::workspace_root();
    let demo = std::fs::read_to_string(root.join("envoy-configs/demo.yaml")).unwrap();
    let tags = std::fs::read_to_string(root.join("observability/stats_tags.yaml")).unwrap();
    let block = &tags[tags.find("stats_config:").unwrap()..];
    assert!(
        demo.contains(block.trim_end()),
        "envoy-configs/demo.yaml lost observability/stats_tags.yaml"
    );
}
