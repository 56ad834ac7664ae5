//! Injected failures: seeded random rate, kinds, and time windows.

use std::time::Duration;

use meshguard_upstream::{Failure, FailureKind, FailureWindow, Upstream, UpstreamConfig, knob};
use tokio::time::Instant;

use crate::support::*;

fn failing(seed: u64, rate: f64, kind: FailureKind) -> UpstreamConfig {
    UpstreamConfig {
        seed,
        failure: Some(Failure {
            rate,
            kind,
            windows: Vec::new(),
        }),
        ..UpstreamConfig::default()
    }
}

async fn count_failures(up: &Upstream, n: usize) -> usize {
    let mut failures = 0;
    for _ in 0..n {
        let reply = get(Proto::H1, up.addr(), "/", &[]).await;
        match reply.status.as_u16() {
            200 => {}
            500 => {
                assert_eq!(reply.header(knob::FAILURE), Some("injected"));
                assert_eq!(&reply.body[..], b"injected failure\n");
                failures += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    failures
}

#[tokio::test]
async fn seeded_rate_repeats_exactly() {
    let config = failing(42, 0.3, FailureKind::Status(500));
    let first = start(config.clone()).await;
    let a = count_failures(&first, 200).await;
    let second = start(config.clone()).await;
    let b = count_failures(&second, 200).await;
    assert_eq!(a, b);
    assert!((20..=100).contains(&a), "{a} of 200 at rate 0.3");
    // set_config reseeds: the same sequence again.
    first.set_config(config).unwrap();
    assert_eq!(count_failures(&first, 200).await, a);
    let stats = drained(&first).await;
    assert_eq!(stats.failures_injected, u64::try_from(2 * a).unwrap());
    assert_eq!(stats.statuses[&500], u64::try_from(2 * a).unwrap());
}

#[tokio::test]
async fn failure_kinds() {
    let up = start(failing(1, 1.0, FailureKind::Reset)).await;
    for proto in BOTH {
        let result = send(
            proto,
            up.addr(),
            request(proto, up.addr(), http::Method::GET, "/")
                .body(empty())
                .unwrap(),
        )
        .await;
        assert!(result.is_err(), "{proto:?}");
    }
    up.set_config(failing(1, 1.0, FailureKind::Status(503)))
        .unwrap();
    assert_eq!(get(Proto::H2, up.addr(), "/", &[]).await.status, 503);
    up.set_config(failing(1, 1.0, FailureKind::Grpc(14)))
        .unwrap();
    for proto in BOTH {
        let reply = get(proto, up.addr(), "/", &[("te", "trailers")]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/grpc"));
        assert!(reply.body.is_empty());
        let trailers = reply.trailers.expect("grpc trailers");
        assert_eq!(trailers["grpc-status"], "14");
        assert_eq!(trailers["grpc-message"], "injected failure");
    }
    let stats = drained(&up).await;
    assert_eq!(stats.failures_injected, 5);
    assert_eq!(stats.resets_injected, 2);
}

#[tokio::test]
async fn windows_fail_every_request_inside_them() {
    let up = start(UpstreamConfig::default()).await;
    let window = FailureWindow {
        from_ms: 300,
        to_ms: 600,
        kind: FailureKind::Status(500),
    };
    let before_config = Instant::now();
    up.set_config(UpstreamConfig {
        failure: Some(Failure {
            rate: 0.0,
            windows: vec![window],
            ..Failure::default()
        }),
        ..UpstreamConfig::default()
    })
    .unwrap();
    let after_config = Instant::now();
    let ms = Duration::from_millis;
    let (mut failed, mut recovered) = (0, false);
    // Poll until a success after at least one failure, bounded by WAIT.
    while !recovered {
        assert!(
            before_config.elapsed() < WAIT,
            "window never opened and closed"
        );
        let sent = Instant::now();
        let status = get(Proto::H1, up.addr(), "/", &[]).await.status;
        let received = Instant::now();
        if status == 500 {
            // Arrived inside [300, 600) ms after set_config.
            assert!(received >= before_config + ms(300), "failed too early");
            assert!(sent < after_config + ms(600), "failed too late");
            failed += 1;
        } else {
            assert_eq!(status, 200);
            assert!(
                sent < after_config + ms(300) || received >= before_config + ms(600),
                "succeeded inside the window"
            );
            recovered = failed > 0;
        }
        tokio::time::sleep(ms(20)).await;
    }
    assert!(failed >= 1);
    assert_eq!(drained(&up).await.failures_injected, failed);
}
