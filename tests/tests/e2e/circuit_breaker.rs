//! circuit_breaker in stock Envoy: trips on 5xx, gRPC errors in trailers and resets; fails fast
//! without touching the upstream; probes and closes; dry run; metrics.

use std::time::{Duration, Instant};

use meshguard_tests::h2::RequestBody;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, Response, h1, h2};
use meshguard_upstream::grpc::EchoRequest;
use meshguard_upstream::{Upstream, UpstreamConfig};
use prost::Message;

const FAST: &str = r#"{"open": {"base_duration": "1s", "jitter_percent": 0},
                       "half_open": {"permitted_calls": 2}}"#;

async fn rig(config: &str) -> (Upstream, Envoy) {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let cfg = EnvoyConfig::new(Some(upstream.addr())).listener(
        Listener::new("cb").filter(Filter::meshguard("circuit_breaker").unwrap().config(config)),
    );
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    (upstream, envoy)
}

async fn get(envoy: &Envoy, extra: &[(&[u8], &[u8])]) -> Response {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"svc")];
    headers.extend_from_slice(extra);
    h1::exchange(envoy.listener("cb"), &h1::head("GET", "/", &headers))
        .await
        .unwrap()
}

async fn grpc(envoy: &Envoy, status: i32) -> Response {
    let msg = EchoRequest {
        message: "x".into(),
        grpc_status: status,
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    h2::request(
        envoy.listener("cb"),
        "POST",
        "/meshguard.test.v1.Echo/Unary",
        &[("content-type", b"application/grpc"), ("te", b"trailers")],
        RequestBody {
            chunks: vec![frame],
            trailers: vec![],
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_open_it_and_nothing_more_reaches_the_upstream() {
    let (upstream, envoy) = rig(FAST).await;
    for _ in 0..5 {
        assert_eq!(
            get(&envoy, &[(b"x-upstream-status", b"503")]).await.status,
            503
        );
    }
    assert_eq!(upstream.stats().received, 5);
    // Open: rejected at once, the upstream sees nothing, retry-after says when to come back.
    for _ in 0..10 {
        let r = get(&envoy, &[]).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.text(), "upstream unavailable: circuit open");
        assert_eq!(r.header_str("retry-after").as_deref(), Some("1"));
    }
    assert_eq!(upstream.stats().received, 5);
    // After the open time, two probes succeed and it closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&envoy, &[]).await;
        if r.status == 200 && upstream.stats().received >= 7 {
            break;
        }
        assert!(Instant::now() < deadline, "never closed: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        assert_eq!(get(&envoy, &[]).await.status, 200);
    }
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.circuit_breaker.opened.consecutive_failures") == Some(&1)
                && s.get("wasmcustom.meshguard.circuit_breaker.closed") == Some(&1)
                && s.get("wasmcustom.meshguard.circuit_breaker.rejected")
                    .copied()
                    .unwrap_or(0)
                    >= 10
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_in_trailers_trip_it_and_grpc_clients_get_unavailable() {
    let (upstream, envoy) = rig(FAST).await;
    for _ in 0..5 {
        let r = grpc(&envoy, 14).await;
        assert_eq!(
            (r.status, r.trailer_str("grpc-status").as_deref()),
            (200, Some("14")),
            "{r:?}"
        );
    }
    let r = grpc(&envoy, 0).await;
    assert_eq!(r.header_str("grpc-status").as_deref(), Some("14"), "{r:?}");
    assert_eq!(
        r.header_str("grpc-message").as_deref(),
        Some("upstream unavailable: circuit open")
    );
    assert_eq!(upstream.stats().received, 5);
    // NOT_FOUND is the caller's problem, not the upstream's: it never trips.
    let (upstream, envoy) = rig(FAST).await;
    for _ in 0..8 {
        assert_eq!(
            grpc(&envoy, 5).await.trailer_str("grpc-status").as_deref(),
            Some("5")
        );
    }
    assert_eq!(upstream.stats().received, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_are_failures() {
    let (upstream, envoy) = rig(FAST).await;
    for _ in 0..5 {
        let r = get(&envoy, &[(b"x-upstream-reset", b"before-headers")]).await;
        assert_eq!(r.status, 503, "{r:?}");
    }
    let r = get(&envoy, &[]).await;
    assert_eq!(r.text(), "upstream unavailable: circuit open");
    assert_eq!(upstream.stats().received, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_but_lets_everything_through() {
    let (upstream, envoy) = rig(r#"{"mode": "dry_run"}"#).await;
    for _ in 0..5 {
        get(&envoy, &[(b"x-upstream-status", b"500")]).await;
    }
    for _ in 0..5 {
        assert_eq!(get(&envoy, &[]).await.status, 200);
    }
    assert_eq!(upstream.stats().received, 10);
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.circuit_breaker.rejected") == Some(&5)
                && s.get("wasmcustom.meshguard.circuit_breaker.opened.consecutive_failures")
                    == Some(&1)
        })
        .unwrap();
}
