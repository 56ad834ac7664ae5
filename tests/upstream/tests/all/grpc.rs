//! gRPC `meshguard.test.v1.Echo` on the same port, with the tonic client and raw h2.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use meshguard_upstream::grpc::{EchoClient, EchoRequest, UNARY_PATH};
use meshguard_upstream::{Failure, FailureKind, UpstreamConfig, knob};
use prost::Message;
use tokio::time::Instant;
use tonic::Code;

use crate::support::*;

fn with_metadata(
    request: EchoRequest,
    metadata: &[(&'static str, &'static str)],
) -> tonic::Request<EchoRequest> {
    let mut request = tonic::Request::new(request);
    for (name, value) in metadata {
        request.metadata_mut().append(*name, value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn unary_ok_echoes_message_payload_and_metadata() {
    let up = start(UpstreamConfig::default()).await;
    let mut client = EchoClient::connect(up.addr()).await.unwrap();
    let request = EchoRequest {
        message: "hello".into(),
        payload: vec![0, 1, 2, 255],
        ..EchoRequest::default()
    };
    let response = client
        .unary(with_metadata(
            request,
            &[("x-test", "v1"), ("x-test", "v2")],
        ))
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get("content-type").unwrap(),
        "application/grpc"
    );
    let response = response.into_inner();
    assert_eq!(response.message, "hello");
    assert_eq!(response.seq, 0);
    assert_eq!(response.payload, [0, 1, 2, 255]);
    let values: Vec<&str> = response
        .metadata
        .iter()
        .filter(|kv| kv.key == "x-test")
        .map(|kv| kv.value.as_str())
        .collect();
    assert_eq!(values, ["v1", "v2"]);
    assert!(
        response
            .metadata
            .iter()
            .any(|kv| kv.key == "te" && kv.value == "trailers")
    );
    let stats = drained(&up).await;
    assert_eq!(stats.statuses[&200], 1);
}

#[tokio::test]
async fn unary_error_is_sent_in_trailers_after_200() {
    let up = start(UpstreamConfig::default()).await;
    let mut client = EchoClient::connect(up.addr()).await.unwrap();
    let request = EchoRequest {
        grpc_status: 14,
        grpc_message: "try later, 100%".into(),
        ..EchoRequest::default()
    };
    let status = client.unary(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "try later, 100%");

    // The wire shape: 200 + headers without grpc-status, no message, then trailers.
    let message = request.encode_to_vec();
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(u32::try_from(message.len()).unwrap());
    body.put_slice(&message);
    let raw = request_raw(&up, UNARY_PATH, body.freeze()).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("application/grpc"));
    assert_eq!(raw.header("grpc-status"), None);
    assert!(raw.body.is_empty());
    let trailers = raw.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "14");
    assert_eq!(trailers["grpc-message"], "try later, 100%25");
}

async fn request_raw(up: &meshguard_upstream::Upstream, path: &str, body: bytes::Bytes) -> Reply {
    let request = request(Proto::H2, up.addr(), http::Method::POST, path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(body))
        .unwrap();
    exchange(Proto::H2, up.addr(), request).await
}

#[tokio::test]
async fn unknown_method_and_garbage_are_grpc_errors() {
    let up = start(UpstreamConfig::default()).await;
    let raw = request_raw(&up, "/meshguard.test.v1.Echo/Nope", bytes::Bytes::new()).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.trailers.unwrap()["grpc-status"], "12");
    let raw = request_raw(&up, UNARY_PATH, bytes::Bytes::from_static(b"\0\0\0\0\x09x")).await;
    assert_eq!(raw.trailers.unwrap()["grpc-status"], "13");
}

#[tokio::test]
async fn server_stream_counts_and_fail_after() {
    let up = start(UpstreamConfig::default()).await;
    let mut client = EchoClient::connect(up.addr()).await.unwrap();
    let (messages, end) = client
        .server_stream_all(EchoRequest {
            message: "m".into(),
            count: 5,
            ..EchoRequest::default()
        })
        .await;
    end.unwrap();
    let seqs: Vec<u32> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert!(messages.iter().all(|m| m.message == "m"));

    let begun = Instant::now();
    let (messages, end) = client
        .server_stream_all(EchoRequest {
            count: 5,
            fail_after: Some(2),
            delay_ms: 30,
            grpc_status: 14,
            grpc_message: "gone".into(),
            ..EchoRequest::default()
        })
        .await;
    assert_eq!(messages.len(), 2);
    assert!(begun.elapsed() >= Duration::from_millis(60));
    let status = end.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "gone")
    );

    let (messages, end) = client
        .server_stream_all(EchoRequest {
            count: 3,
            fail_after: Some(0),
            grpc_status: 8,
            ..EchoRequest::default()
        })
        .await;
    assert!(messages.is_empty());
    assert_eq!(end.unwrap_err().code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn knobs_apply_as_metadata() {
    let up = start(UpstreamConfig::default()).await;
    let mut client = EchoClient::connect(up.addr()).await.unwrap();
    let begun = Instant::now();
    let response = client
        .unary(with_metadata(
            EchoRequest::default(),
            &[
                (knob::DELAY_MS, "100"),
                (knob::HEADER, "x-h: 1"),
                (knob::TRAILER, "x-t: 2"),
            ],
        ))
        .await
        .unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(100));
    assert_eq!(response.metadata().get("x-h").unwrap(), "1");

    let status = client
        .unary(with_metadata(
            EchoRequest::default(),
            &[(knob::STATUS, "503")],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    for point in ["before-headers", "after-headers"] {
        let result = client
            .unary(with_metadata(
                EchoRequest::default(),
                &[(knob::RESET, point)],
            ))
            .await;
        assert!(result.is_err(), "{point}");
    }
    // mid-body on a stream: half of the messages (rounded up), then the reset.
    let mut client = EchoClient::connect(up.addr()).await.unwrap();
    let (messages, end) = client
        .server_stream_all(with_metadata(
            EchoRequest {
                count: 4,
                ..EchoRequest::default()
            },
            &[(knob::RESET, "mid-body")],
        ))
        .await;
    assert_eq!(messages.len(), 2);
    assert!(end.is_err());
    let stats = drained(&up).await;
    assert_eq!(stats.resets_injected, 3);
}

#[tokio::test]
async fn injected_grpc_failure() {
    let up = start(UpstreamConfig {
        failure: Some(Failure {
            rate: 1.0,
            kind: FailureKind::Grpc(14),
            windows: Vec::new(),
        }),
        ..UpstreamConfig::default()
    })
    .await;
    let mut client = EchoClient::connect(up.addr()).await.unwrap();
    let status = client.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "injected failure");
}
