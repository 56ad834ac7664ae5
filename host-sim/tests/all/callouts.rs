//! HTTP and gRPC callouts: responders with latency, failures, Envoy's statuses, call ids,
//! records.

use std::time::Duration;

use host_sim::{CalloutKind, GrpcDelivery, GrpcEvent, GrpcReply, HeaderMap, HttpCallReply, Status};

use crate::support::*;

fn with_auth() -> Result<host_sim::EnvoyBuilder> {
    Ok(probe()?.cluster("auth").cluster("grpc"))
}

#[test]
fn callout_pauses_until_the_response_then_resumes() -> Result {
    let mut envoy = with_auth()?.build()?;
    envoy.on_http_call("auth", |_| {
        HttpCallReply::ok()
            .body("fine")
            .after(Duration::from_millis(30))
    });
    let s = envoy.new_stream();
    assert!(
        envoy
            .send_request_headers(s, get("callout"), true)?
            .is_paused()
    );
    envoy.advance(Duration::from_millis(29));
    assert!(envoy.stream(s).unwrap().upstream.headers.is_none());
    envoy.advance(Duration::from_millis(1));
    assert!(
        envoy.stream(s).unwrap().upstream.headers.is_some(),
        "resumed at 30 ms"
    );
    let line = probe_line(&envoy, "http_call_response").unwrap();
    assert_eq!(
        field(&line, "token").as_deref(),
        Some("4"),
        "http call ids step by 4 from 4"
    );
    assert_eq!(field(&line, "status").as_deref(), Some("200"));
    assert!(line.ends_with("body=fine"), "{line}");
    let calls = envoy.callouts();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(
        (c.kind, c.cluster.as_str(), c.status),
        (CalloutKind::Http, "auth", Status::Ok)
    );
    assert_eq!(c.path(), Some("/check"));
    assert_eq!(
        c.headers.get("content-length"),
        Some("1"),
        "content-length set from the body"
    );
    assert_eq!(c.timeout, Some(Duration::from_millis(500)));
    assert_eq!(c.outcome.as_deref(), Some("response 200"));
    assert_eq!(c.root_ctx, 1, "callouts belong to the root context");
    Ok(())
}

#[test]
fn callout_response_can_deny_the_request() -> Result {
    let mut envoy = with_auth()?.build()?;
    envoy.on_http_call("auth", |_| HttpCallReply::status(401));
    let s = envoy.new_stream();
    let v = envoy.send_request_headers(s, get("callout_deny"), true)?;
    assert_eq!(
        v.local_reply().map(|l| l.status),
        Some(403),
        "zero latency: answered before the call returns"
    );
    Ok(())
}

#[test]
fn reset_is_delivered_as_zero_headers_and_broken_connection() -> Result {
    let mut envoy = with_auth()?.build()?;
    envoy.on_http_call("auth", |_| {
        HttpCallReply::reset().after(Duration::from_millis(5))
    });
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("callout"), true)?;
    envoy.advance(Duration::from_millis(5));
    let line = probe_line(&envoy, "http_call_response").unwrap();
    assert!(line.contains("headers=0 body=0 trailers=0"), "{line}");
    assert_eq!(field(&line, "get_status").as_deref(), Some("11/reset"));
    Ok(())
}

#[test]
fn timeout_is_a_504_from_the_async_client() -> Result {
    let mut envoy = with_auth()?.build()?;
    envoy.on_http_call("auth", |_| HttpCallReply::never());
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("callout"), true)?;
    envoy.advance(Duration::from_millis(499));
    assert!(probe_line(&envoy, "http_call_response").is_none());
    envoy.advance(Duration::from_millis(1));
    let line = probe_line(&envoy, "http_call_response").unwrap();
    assert_eq!(field(&line, "status").as_deref(), Some("504"));
    assert_eq!(envoy.callouts()[0].outcome.as_deref(), Some("timeout"));
    Ok(())
}

#[test]
fn calls_without_a_responder_wait_for_a_manual_reply() -> Result {
    let mut envoy = with_auth()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("callout"), true)?;
    let pending = envoy.pending_callouts();
    assert_eq!(pending.len(), 1);
    envoy.reply_http(pending[0], HttpCallReply::ok().header("x-a", "b"));
    assert!(envoy.stream(s).unwrap().upstream.headers.is_some());
    assert!(envoy.pending_callouts().is_empty());
    Ok(())
}

#[test]
fn invalid_calls_get_envoy_statuses() -> Result {
    let mut envoy = with_auth()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("callout_errors"), true)?;
    let line = probe_line(&envoy, "callout_errors").unwrap();
    assert_eq!(
        line,
        "unknown=2 missing_path=2 negative_timeout=2 grpc_unknown=4"
    );
    let statuses: Vec<Status> = envoy.callouts().iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [
            Status::BadArgument,
            Status::BadArgument,
            Status::BadArgument,
            Status::ParseFailure
        ],
        "failed attempts are recorded too"
    );
    Ok(())
}

#[test]
fn grpc_unary_success_and_failure() -> Result {
    let mut envoy = with_auth()?.build()?;
    envoy.on_grpc("grpc", |ev| match ev {
        GrpcEvent::Open(rec) if rec.body == b"ping" => {
            GrpcReply::ok("pong").after(Duration::from_millis(10))
        }
        _ => GrpcReply::none(),
    });
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("grpc_call"), true)?;
    envoy.advance(Duration::from_millis(10));
    let line = probe_line(&envoy, "grpc_call_response").unwrap();
    assert_eq!(
        field(&line, "token").as_deref(),
        Some("5"),
        "gRPC call ids have kind bits 1"
    );
    assert_eq!(field(&line, "status").as_deref(), Some("0"));
    assert_eq!(field(&line, "body").as_deref(), Some("pong"));
    let c = &envoy.callouts()[0];
    assert_eq!((c.service.as_str(), c.method.as_str()), ("svc.Echo", "Say"));
    assert_eq!(c.headers.get("x-md"), Some("1"));

    let mut envoy = with_auth()?.build()?;
    envoy.on_grpc("grpc", |_| GrpcReply::error(7, "denied"));
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("grpc_call"), true)?;
    let line = probe_line(&envoy, "grpc_call_response").unwrap();
    assert_eq!(field(&line, "status").as_deref(), Some("7"));
    assert_eq!(field(&line, "get_status").as_deref(), Some("7/denied"));
    Ok(())
}

#[test]
fn grpc_stream_metadata_messages_and_close() -> Result {
    let mut envoy = with_auth()?.build()?;
    envoy.on_grpc("grpc", |ev| match ev {
        GrpcEvent::Open(_) => GrpcReply::none().then(
            Duration::from_millis(1),
            GrpcDelivery::InitialMetadata(HeaderMap::from([("x-md", "srv")])),
        ),
        GrpcEvent::Message(_, m) => GrpcReply::none()
            .then(
                Duration::from_millis(2),
                GrpcDelivery::Message([b"echo:".as_slice(), m].concat()),
            )
            .then(
                Duration::from_millis(3),
                GrpcDelivery::TrailingMetadata(HeaderMap::from([("t", "1")])),
            )
            .then(
                Duration::from_millis(3),
                GrpcDelivery::Close {
                    status: 0,
                    message: String::new(),
                },
            ),
        GrpcEvent::ClientClose(_) => GrpcReply::none(),
    });
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("grpc_stream"), true)?;
    let sends = probe_line(&envoy, "grpc_stream").unwrap();
    assert!(
        sends.contains("result=Ok(6)"),
        "stream ids have kind bits 2: {sends}"
    );
    let errs = probe_lines(&envoy, "grpc_stream")
        .into_iter()
        .find(|l| l.starts_with("send_unknown"))
        .unwrap();
    assert_eq!(
        errs, "send_unknown=1 send_wrong_kind=2",
        "NOT_FOUND for an unknown stream, BAD_ARGUMENT for a non-stream id"
    );
    envoy.advance(Duration::from_millis(5));
    assert_eq!(
        probe_line(&envoy, "grpc_stream_initial").as_deref(),
        Some("token=6 n=1 x-md=srv")
    );
    assert_eq!(
        probe_line(&envoy, "grpc_stream_message").as_deref(),
        Some("token=6 size=10 body=echo:hello")
    );
    assert_eq!(
        probe_line(&envoy, "grpc_stream_trailing").as_deref(),
        Some("token=6 n=1")
    );
    assert_eq!(
        probe_line(&envoy, "grpc_stream_close").as_deref(),
        Some("token=6 status=0")
    );
    assert!(
        envoy.stream(s).unwrap().upstream.headers.is_some(),
        "resumed on close"
    );
    assert_eq!(envoy.callouts()[0].stream_messages, vec![b"hello".to_vec()]);
    Ok(())
}
