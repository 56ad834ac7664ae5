//! rate_limit in stock Envoy: one bucket for the whole Envoy (2 workers), gRPC status,
//! rate-limit headers, per-client buckets, dry run.

use std::time::{Duration, Instant};

use meshguard_tests::h2::RequestBody;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, h1, h2};
use meshguard_upstream::{Upstream, UpstreamConfig};

async fn rig(config: &str) -> (Upstream, Envoy) {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let cfg = EnvoyConfig::new(Some(upstream.addr()))
        .concurrency(2)
        .listener(
            Listener::new("rl").filter(Filter::meshguard("rate_limit").unwrap().config(config)),
        );
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    (upstream, envoy)
}

fn get(extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"svc")];
    headers.extend_from_slice(extra);
    h1::head("GET", "/", &headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bucket_for_the_whole_envoy() {
    let (upstream, envoy) = rig(
        r#"{"token_bucket": {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1s"},
            "x_ratelimit_headers": true}"#,
    )
    .await;
    let addr = envoy.listener("rl");
    // 40 rps for 3 s on separate connections (spread over both workers).
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..120u64 {
        tokio::time::sleep_until((start + Duration::from_millis(25 * i)).into()).await;
        tasks.push(tokio::spawn(async move {
            h1::exchange(addr, &get(&[])).await.unwrap()
        }));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(r.header_str("x-ratelimit-limit").as_deref(), Some("10"));
            }
            429 => {
                assert_eq!(r.text(), "rate limited");
                assert!(r.header("retry-after").is_some());
                assert_eq!(r.header_str("x-ratelimit-remaining").as_deref(), Some("0"));
            }
            s => panic!("unexpected {s}"),
        }
    }
    // Burst of 10, then 10 per second.
    let expected = 10.0 + 10.0 * elapsed;
    assert!(
        (ok as f64) <= expected + 1.0 && (ok as f64) >= expected - 3.0,
        "{ok} admitted, expected {expected:.1}"
    );
    assert_eq!(upstream.stats().received, ok);
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.rate_limit.allowed") == Some(&ok)
                && s.get("wasmcustom.meshguard.rate_limit.limited.default") == Some(&(120 - ok))
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gets_resource_exhausted_and_clients_get_their_own_buckets() {
    let (_upstream, envoy) = rig(
        r#"{"descriptors": [{"name": "per_client", "entries": [{"header": {"name": "x-client"}}],
                              "token_bucket": {"max_tokens": 2, "fill_interval": "1h"}}]}"#,
    )
    .await;
    let addr = envoy.listener("rl");
    for client in [b"a".as_slice(), b"b"] {
        for _ in 0..2 {
            assert_eq!(
                h1::exchange(addr, &get(&[(b"x-client", client)]))
                    .await
                    .unwrap()
                    .status,
                200
            );
        }
        assert_eq!(
            h1::exchange(addr, &get(&[(b"x-client", client)]))
                .await
                .unwrap()
                .status,
            429
        );
    }
    // Requests without the header match no rule and pass.
    assert_eq!(h1::exchange(addr, &get(&[])).await.unwrap().status, 200);
    let r = h2::request(
        addr,
        "POST",
        "/meshguard.test.v1.Echo/Unary",
        &[
            ("content-type", b"application/grpc"),
            ("te", b"trailers"),
            ("x-client", b"a"),
        ],
        RequestBody {
            chunks: vec![vec![0, 0, 0, 0, 0]],
            trailers: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status, r.header_str("grpc-status").as_deref()),
        (200, Some("8")),
        "{r:?}"
    );
    assert_eq!(
        r.header_str("grpc-message").as_deref(),
        Some("rate limited")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_marks_but_never_limits() {
    let (upstream, envoy) = rig(r#"{"mode": "dry_run", "dry_run_header": "x-would-limit",
            "token_bucket": {"max_tokens": 1, "fill_interval": "1h"}}"#)
    .await;
    let addr = envoy.listener("rl");
    let first = h1::exchange(addr, &get(&[])).await.unwrap();
    assert!(!first.text().contains("x-would-limit"));
    for _ in 0..3 {
        let r = h1::exchange(addr, &get(&[])).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.text().contains(r#"["x-would-limit","1"]"#),
            "{}",
            r.text()
        );
    }
    assert_eq!(upstream.stats().received, 4);
}
