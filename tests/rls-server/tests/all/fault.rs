//! Fault modes: what an RLS client sees when the service is slow, hangs, errs or talks
//! nonsense. Faulted calls count no hits.

use std::time::{Duration, Instant};

use meshguard_rls::FaultMode;

use crate::support::*;

const ONE: &str = "- {namespace: d, max_value: 1, seconds: 60, conditions: [], variables: []}";

#[tokio::test]
async fn delay_answers_correctly_after_the_delay() {
    let server = server(ONE, &Backing::memory()).await;
    let mut c = client(&server).await;
    server.set_fault(FaultMode::Delay(Duration::from_millis(300)));
    assert_eq!(server.fault(), FaultMode::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    assert_eq!(codes(&mut c, "d", &[&[("k", "v")]], 1).await, [OK]);
    assert!(start.elapsed() >= Duration::from_millis(300));
    server.set_fault(FaultMode::None);
    let start = Instant::now();
    assert_eq!(codes(&mut c, "d", &[&[("k", "v")]], 1).await, [OVER]);
    assert!(start.elapsed() < Duration::from_millis(300));
    let stats = server.stats();
    assert_eq!((stats.requests, stats.faulted, stats.ok), (2, 1, 1));
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() {
    let server = server(ONE, &Backing::memory()).await;
    let mut c = client(&server).await;
    server.set_fault(FaultMode::Hang);
    let mut request = tonic::Request::new(meshguard_rls::request("d", &[&[("k", "v")]], 1));
    request.set_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let status = tokio::time::timeout(WAIT, c.should_rate_limit(request))
        .await
        .expect("the client's own deadline did not fire")
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    // Calls arriving after the mode is lifted are answered (the hung one counted no hit).
    server.set_fault(FaultMode::None);
    assert_eq!(codes(&mut c, "d", &[&[("k", "v")]], 2).await, [OK, OVER]);
    assert_eq!(server.stats().faulted, 1);
}

#[tokio::test]
async fn error_modes_reach_the_client_as_errors_and_count_nothing() {
    let server = server(ONE, &Backing::memory()).await;
    let mut c = client(&server).await;
    let d: &[&[(&str, &str)]] = &[&[("k", "v")]];
    let cases = [
        (
            FaultMode::Status(tonic::Code::Unavailable),
            tonic::Code::Unavailable,
        ),
        (
            FaultMode::Status(tonic::Code::ResourceExhausted),
            tonic::Code::ResourceExhausted,
        ),
        // A body that does not decode.
        (FaultMode::Garbage, tonic::Code::Internal),
        // A non-gRPC 503: tonic tries the text body as gRPC frames and fails.
        (FaultMode::Http(503), tonic::Code::Internal),
        // RST_STREAM(INTERNAL_ERROR): tonic reports a transport error.
        (FaultMode::Reset, tonic::Code::Unknown),
    ];
    for (mode, want) in cases {
        server.set_fault(mode.clone());
        let status =
            tokio::time::timeout(WAIT, c.should_rate_limit(meshguard_rls::request("d", d, 1)))
                .await
                .unwrap()
                .unwrap_err();
        assert_eq!(status.code(), want, "{mode:?}: {status:?}");
    }
    server.set_fault(FaultMode::None);
    // No fault consumed the single hit.
    assert_eq!(codes(&mut c, "d", d, 2).await, [OK, OVER]);
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.faulted, stats.ok, stats.over_limit),
        (7, 5, 1, 1)
    );
}

#[tokio::test]
async fn other_paths_are_unimplemented() {
    let server = server(ONE, &Backing::memory()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.ratelimit.v2.RateLimitService/ShouldRateLimit",
    );
    let status = grpc
        .unary::<_, meshguard_rls::proto::rls::RateLimitResponse, _>(
            tonic::Request::new(meshguard_rls::request("d", &[], 1)),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(server.stats().requests, 0);
}
