//! load_shed in stock Envoy: rejection under overload (HTTP and gRPC), dry run, metrics.

use std::time::Duration;

use meshguard_tests::h2::RequestBody;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, h1, h2};
use meshguard_upstream::{Capacity, Latency, Queue, Upstream, UpstreamConfig};

/// A service that can do 2 requests at a time, 200 ms each, and a limit of at most 4.
const SMALL: &str = r#"{
    "concurrency_limit_params": {"initial_concurrency_limit": 2, "min_concurrency_limit": 1,
                                 "max_concurrency_limit": 4},
    "response_body": "try later"
}"#;

async fn rig(mode: &str) -> (Upstream, Envoy) {
    let upstream = Upstream::start(UpstreamConfig {
        latency: Latency::Fixed { ms: 200 },
        capacity: Some(Capacity {
            concurrency: 2,
            queue: Queue::Unbounded,
        }),
        ..UpstreamConfig::default()
    })
    .await
    .unwrap();
    let config = SMALL.replace(
        "\"response_body\"",
        &format!("\"mode\": \"{mode}\", \"response_body\""),
    );
    let cfg = EnvoyConfig::new(Some(upstream.addr())).listener(
        Listener::new("ls").filter(Filter::meshguard("load_shed").unwrap().config(config)),
    );
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    (upstream, envoy)
}

async fn burst(envoy: &Envoy, n: usize) -> Vec<meshguard_tests::Response> {
    let addr = envoy.listener("ls");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                h1::exchange(addr, &h1::head("GET", "/", &[(b"host", b"t")]))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_rejected_early_with_503() {
    let (upstream, envoy) = rig("enforce").await;
    let responses = burst(&envoy, 16).await;
    let rejected: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    let ok = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok + rejected.len(), 16, "{responses:?}");
    assert!(
        rejected.len() >= 8,
        "only {} of 16 rejected",
        rejected.len()
    );
    for r in &rejected {
        assert_eq!(r.text(), "try later");
        assert!(r.header("x-envoy-upstream-service-time").is_none(), "{r:?}");
    }
    // Everything admitted reached the upstream; nothing rejected did.
    assert_eq!(upstream.stats().received, ok as u64);
    let stats = envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.load_shed.rejected.critical")
                .copied()
                .unwrap_or(0)
                == rejected.len() as u64
        })
        .unwrap();
    assert_eq!(
        stats.get("wasmcustom.meshguard.load_shed.admitted.critical"),
        Some(&(ok as u64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_clients_get_unavailable() {
    let (_upstream, envoy) = rig("enforce").await;
    let addr = envoy.listener("ls");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                h2::request(
                    addr,
                    "POST",
                    "/meshguard.test.v1.Echo/Unary",
                    &[("content-type", b"application/grpc"), ("te", b"trailers")],
                    RequestBody {
                        chunks: vec![vec![0, 0, 0, 0, 0]],
                        trailers: vec![],
                    },
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut unavailable = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        if r.header_str("grpc-status").as_deref() == Some("14") {
            assert_eq!(r.header_str("grpc-message").as_deref(), Some("try later"));
            unavailable += 1;
        }
    }
    assert!(unavailable >= 8, "only {unavailable} of 16 shed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_counts_but_never_rejects() {
    let (upstream, envoy) = rig("dry_run").await;
    let responses = burst(&envoy, 16).await;
    assert!(responses.iter().all(|r| r.status == 200), "{responses:?}");
    assert_eq!(upstream.stats().received, 16);
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.load_shed.rejected.critical")
                .copied()
                .unwrap_or(0)
                >= 8
        })
        .unwrap();
}
