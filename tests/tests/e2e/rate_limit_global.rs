//! rate_limit's global limits over RLS v3 in stock Envoy, against meshguard's reference RLS:
//! the limit holds, OVER_LIMIT is cached, the request never hangs when the RLS is slow, broken or
//! unreachable (per the failure mode), and two Envoys share one limit through Redis.

use std::time::{Duration, Instant};

use meshguard_rls::{FaultMode, Limits, RedisServer, RlsServer, Storage};
use meshguard_tests::envoy::grpc_cluster;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, Response, h1};
use meshguard_upstream::{Upstream, UpstreamConfig};

/// Three `checkout` calls per minute in domain `shop` (also used by the bundle tests).
pub(crate) const LIMITS: &str = r#"
- namespace: shop
  max_value: 3
  seconds: 60
  conditions: ["descriptors[0]['generic_key'] == 'checkout'"]
  variables: []
"#;

fn filter_config(extra: &str) -> String {
    format!(
        r#"{{"global": {{"cluster": "rls", "domain": "shop", "timeout": "50ms"{extra}}},
            "descriptors": [{{"name": "checkout", "entries": [{{"generic_key": {{"value": "checkout"}}}}],
                             "global": true}}]}}"#
    )
}

async fn envoy(upstream: &Upstream, rls: std::net::SocketAddr, extra: &str) -> Envoy {
    let mut cfg = EnvoyConfig::new(Some(upstream.addr())).listener(
        Listener::new("rl").filter(
            Filter::meshguard("rate_limit")
                .unwrap()
                .config(filter_config(extra)),
        ),
    );
    cfg.clusters.push(grpc_cluster("rls", rls));
    tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap()
}

async fn get(envoy: &Envoy) -> (Response, Duration) {
    let start = Instant::now();
    let r = h1::exchange(
        envoy.listener("rl"),
        &h1::head("GET", "/", &[(b"host", b"shop")]),
    )
    .await
    .unwrap();
    (r, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_holds_and_over_limit_answers_are_cached() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let rls = RlsServer::start(Limits::from_yaml(LIMITS).unwrap(), Storage::memory())
        .await
        .unwrap();
    let envoy = envoy(&upstream, rls.addr(), "").await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(get(&envoy).await.0.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
    assert_eq!(upstream.stats().received, 3);
    // After the first OVER_LIMIT each worker answers from its cache until the window resets.
    assert!(rls.stats().requests <= 4 + 2, "{:?}", rls.stats());
    let r = get(&envoy).await.0;
    assert_eq!(r.text(), "rate limited");
    assert!(
        r.header_str("retry-after")
            .is_some_and(|s| s.parse::<u64>().unwrap() > 1)
    );
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.rate_limit.rls.over_limit")
                .copied()
                .unwrap_or(0)
                >= 1
                && s.get("wasmcustom.meshguard.rate_limit.rls.cached_over_limit")
                    .copied()
                    .unwrap_or(0)
                    >= 5
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_never_rejects_even_from_the_over_limit_cache() {
    // Regression: the OVER_LIMIT cache used to answer 429 in dry run.
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let rls = RlsServer::start(Limits::from_yaml(LIMITS).unwrap(), Storage::memory())
        .await
        .unwrap();
    let mut cfg = EnvoyConfig::new(Some(upstream.addr())).listener(
        Listener::new("rl").filter(
            Filter::meshguard("rate_limit")
                .unwrap()
                .config(filter_config("").replacen('{', r#"{"mode": "dry_run", "#, 1)),
        ),
    );
    cfg.clusters.push(grpc_cluster("rls", rls.addr()));
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(get(&envoy).await.0.status, 200);
    }
    assert_eq!(upstream.stats().received, 10);
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.rate_limit.rls.cached_over_limit")
                .copied()
                .unwrap_or(0)
                >= 1
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rls_never_hangs_a_request() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let rls = RlsServer::start(Limits::from_yaml(LIMITS).unwrap(), Storage::memory())
        .await
        .unwrap();
    let allow = envoy(&upstream, rls.addr(), "").await;
    let deny = envoy(&upstream, rls.addr(), r#", "failure_mode": "deny""#).await;
    for fault in [
        FaultMode::Hang,
        FaultMode::Garbage,
        FaultMode::Status(tonic::Code::Internal),
    ] {
        rls.set_fault(fault.clone());
        let (r, took) = get(&allow).await;
        assert_eq!(r.status, 200, "{fault:?}: {r:?}");
        // Bounded by the 50 ms RLS timeout, not by the client's patience.
        assert!(took < Duration::from_secs(2), "{fault:?}: {took:?}");
        let (r, took) = get(&deny).await;
        assert_eq!(r.status, 500, "{fault:?}: {r:?}");
        assert!(took < Duration::from_secs(2), "{fault:?}: {took:?}");
    }
    allow
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.rate_limit.rls.failure_mode_allowed") == Some(&3)
                && s.get("wasmcustom.meshguard.rate_limit.rls.timeouts") == Some(&1)
        })
        .unwrap_or_else(|e| {
            let s = allow.stats().unwrap();
            panic!(
                "{e}: {:?}",
                s.iter()
                    .filter(|(k, _)| k.contains("rate_limit"))
                    .collect::<Vec<_>>()
            )
        });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_rls_fails_fast() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    // A port nobody listens on: the cluster has no healthy host.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let allow = envoy(&upstream, closed, "").await;
    let deny = envoy(
        &upstream,
        closed,
        r#", "failure_mode": "deny", "failure_status": 503"#,
    )
    .await;
    let (r, took) = get(&allow).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (r, _) = get(&deny).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (503, "rate limit service unavailable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_share_one_limit_through_redis() {
    let redis = RedisServer::start().expect("redis-server (./build.sh setup installs it)");
    let limits = Limits::from_yaml(LIMITS).unwrap();
    let a = RlsServer::start(limits.clone(), Storage::redis(redis.url()))
        .await
        .unwrap();
    let b = RlsServer::start(limits, Storage::redis(redis.url()))
        .await
        .unwrap();
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let (ea, eb) = (
        envoy(&upstream, a.addr(), "").await,
        envoy(&upstream, b.addr(), "").await,
    );
    let mut ok = 0;
    for i in 0..12 {
        let e = if i % 2 == 0 { &ea } else { &eb };
        if get(e).await.0.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(upstream.stats().received, 3);
}
