//! Local replies: deferred until the callback returns, through the filter's own response
//! callbacks, gRPC-aware, and a reset once the response started.

use crate::support::*;

#[test]
fn local_reply_from_request_headers() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    let v = envoy.send_request_headers(s, get("local_reply"), true)?;
    let lr = v.local_reply().expect("local reply").clone();
    assert_eq!(lr.status, 403);
    assert_eq!(
        lr.details, "probe_denied",
        "whitespace in details becomes _"
    );
    assert_eq!(lr.body, b"denied");
    assert_eq!(
        probe_line(&envoy, "local_reply").as_deref(),
        Some("status=0")
    );
    let rec = envoy.stream(s).unwrap();
    assert!(
        rec.upstream.headers.is_none(),
        "never forwarded: the return value is overridden to stop"
    );
    let d = &rec.downstream;
    assert_eq!(d.status(), Some(403));
    assert_eq!(d.header("x-probe"), Some("denied"));
    assert_eq!(
        d.header("x-upper"),
        Some("v"),
        "local reply header keys are lower-cased"
    );
    assert_eq!(d.header("content-type"), Some("text/plain"));
    assert_eq!(
        d.header("x-probe-response"),
        Some("seen"),
        "the filter's own on_response_headers ran for its reply"
    );
    assert_eq!(d.body, b"denied");
    assert!(rec.complete);
    let log = probe_line(&envoy, "log").unwrap();
    assert_eq!(field(&log, "code").as_deref(), Some("403"));
    assert_eq!(field(&log, "details").as_deref(), Some("probe_denied"));
    Ok(())
}

#[test]
fn grpc_local_reply_is_trailers_only() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    let mut h = get("grpc_reply");
    h.set("content-type", "application/grpc");
    let v = envoy.send_request_headers(s, h, true)?;
    let lr = v.local_reply().unwrap();
    assert_eq!(lr.grpc_status, Some(14));
    let d = &envoy.stream(s).unwrap().downstream;
    assert_eq!(d.status(), Some(200));
    assert_eq!(d.header("grpc-status"), Some("14"));
    assert_eq!(d.header("grpc-message"), Some("shed"));
    assert_eq!(d.header("content-type"), Some("application/grpc"));
    assert!(d.body.is_empty());
    Ok(())
}

#[test]
fn local_reply_from_response_headers_replaces_the_response() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("late_reply"), true)?;
    let v = envoy.send_response_headers(s, [(":status", "200")], false)?;
    assert_eq!(v.local_reply().map(|l| l.status), Some(500));
    let d = &envoy.stream(s).unwrap().downstream;
    assert_eq!(d.status(), Some(500));
    assert_eq!(d.body, b"late");
    assert_eq!(
        d.header("x-probe-response"),
        None,
        "sent directly, not through the filter again"
    );
    Ok(())
}

#[test]
fn local_reply_after_response_headers_were_sent_resets_the_stream() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("late_reply_body"), true)?;
    envoy.send_response_headers(s, [(":status", "200")], false)?;
    envoy.send_response_body(s, "partial", true)?;
    let rec = envoy.stream(s).unwrap();
    assert_eq!(
        rec.downstream.status(),
        Some(200),
        "headers were already downstream"
    );
    assert!(rec.reset.is_some(), "all Envoy can do is reset");
    assert!(rec.complete);
    Ok(())
}

#[test]
fn close_stream_resets_with_wasm_close_stream() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("close"), true)?;
    let rec = envoy.stream(s).unwrap();
    assert_eq!(rec.reset.as_deref(), Some("wasm_close_stream"));
    assert!(
        rec.upstream.headers.is_none(),
        "the deferred reset runs when the VM call returns, before Envoy acts on Continue"
    );
    assert_eq!(probe_line(&envoy, "close").as_deref(), Some("status=0"));
    Ok(())
}
