//! The `meshguard` bundle in stock Envoy: all four policies in one filter, a global rate limit
//! pausing the request for its RLS call and the rest of the policies running when the answer
//! lets it go, and the same metrics names as the single filters.

use std::time::Duration;

use meshguard_rls::{Limits, RlsServer, Storage};
use meshguard_tests::envoy::grpc_cluster;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, h1};
use meshguard_upstream::{Upstream, UpstreamConfig};

use crate::rate_limit_global::LIMITS;

const BUNDLE: &str = r#"{
  "rate_limit": {"global": {"cluster": "rls", "domain": "shop", "timeout": "1s"},
                 "descriptors": [{"name": "checkout", "entries": [{"generic_key": {"value": "checkout"}}],
                                  "global": true}]},
  "load_shed": {},
  "sandbox_router": {"routes": [{"key": "dev-1", "service": "shop", "cluster": "missing"}]},
  "circuit_breaker": {"trip": {"consecutive_failures": 50}}
}"#;

fn stat(s: &std::collections::BTreeMap<String, u64>, name: &str) -> u64 {
    s.get(&format!("wasmcustom.meshguard.{name}"))
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_runs_after_the_rls_lets_a_request_go() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let rls = RlsServer::start(Limits::from_yaml(LIMITS).unwrap(), Storage::memory())
        .await
        .unwrap();
    let mut cfg = EnvoyConfig::new(Some(upstream.addr())).listener(
        Listener::new("mg").filter(Filter::meshguard("meshguard").unwrap().config(BUNDLE)),
    );
    cfg.clusters.push(grpc_cluster("rls", rls.addr()));
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = h1::exchange(
            envoy.listener("mg"),
            &h1::head("GET", "/", &[(b"host", b"shop")]),
        )
        .await
        .unwrap();
        statuses.push(r.status);
    }
    // The RLS allowed three: those went on through load_shed and circuit_breaker to the
    // upstream (so the paused requests were resumed); the other two were limited first.
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(upstream.stats().received, 3);
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            stat(s, "load_shed.admitted.critical") == 3
                && stat(s, "circuit_breaker.outcome.success") == 3
                && stat(s, "rate_limit.rls.over_limit") >= 1
        })
        .unwrap();
    let s = envoy.stats().unwrap();
    assert_eq!(stat(&s, "load_shed.inflight"), 0, "{s:?}");
    assert_eq!(stat(&s, "sandbox_router.routed"), 0);
}

/// Outbound: requests with the routing header go to that cluster (the sandbox), others to
/// `shop`.
fn outbound_routes() -> serde_json::Value {
    serde_json::json!({"name": "outbound", "virtual_hosts": [{"name": "shop", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "x-meshguard-sandbox-cluster", "present_match": true}]},
         "route": {"cluster_header": "x-meshguard-sandbox-cluster", "timeout": "5s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "shop", "timeout": "5s"}},
    ]}]})
}

/// A sandbox that refuses connections must open its own breaker, never the baseline's — with
/// the bundle, and with the single filters when the breaker reads the routing header (Envoy
/// keeps answering `xds.cluster_name` with the pre-reroute cluster until the router runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sandbox_opens_its_own_breaker_not_the_baselines() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    // A port nothing listens on: every call to the sandbox fails to connect.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let sr = r#"{"service_from": "authority", "routes": [{"key": "dev-1", "service": "shop", "cluster": "shop_dev_1"}]}"#;
    let cb = r#"{"trip": {"consecutive_failures": 3}"#;
    let mut bundle =
        Listener::new("bundle").filter(Filter::meshguard("meshguard").unwrap().config(format!(
            r#"{{"sandbox_router": {sr}, "circuit_breaker": {cb}}}}}"#
        )));
    bundle.route_config = outbound_routes();
    let mut singles = Listener::new("singles")
        .filter(Filter::meshguard("sandbox_router").unwrap().config(sr))
        .filter(
            Filter::meshguard("circuit_breaker")
                .unwrap()
                .config(format!(
                    r#"{cb}, "cluster_header": "x-meshguard-sandbox-cluster"}}"#
                )),
        );
    singles.route_config = outbound_routes();
    let mut cfg = EnvoyConfig::new(None)
        .concurrency(1)
        .listener(bundle)
        .listener(singles);
    cfg.clusters = vec![
        meshguard_tests::envoy::cluster("shop", upstream.addr()),
        meshguard_tests::envoy::cluster("shop_dev_1", dead_addr),
    ];
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    for listener in ["bundle", "singles"] {
        let addr = envoy.listener(listener);
        let get = |sandbox: bool| {
            let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"shop")];
            if sandbox {
                headers.push((b"baggage", b"sandbox=dev-1"));
            }
            h1::head("GET", "/", &headers)
        };
        for _ in 0..4 {
            let r = h1::exchange(addr, &get(true)).await.unwrap();
            assert_eq!(r.status, 503, "{listener}");
        }
        // The fourth sandbox call was rejected by the sandbox's open breaker...
        let r = h1::exchange(addr, &get(true)).await.unwrap();
        assert_eq!(r.text(), "upstream unavailable: circuit open", "{listener}");
        // ...while the baseline still answers.
        let r = h1::exchange(addr, &get(false)).await.unwrap();
        assert_eq!(r.status, 200, "{listener}: the baseline's breaker opened");
    }
    let s = envoy.stats().unwrap();
    assert!(
        s.contains_key("wasmcustom.meshguard.circuit_breaker.state.shop_dev_1")
            && !s.contains_key("wasmcustom.meshguard.circuit_breaker.state.shop"),
        "{s:?}"
    );
}
