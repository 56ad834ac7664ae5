//! Bodies: Pause buffers with cumulative sizes, set_buffer_bytes rules, Pause on headers holds
//! the body, buffer limit, trailers added at end of stream.

use host_sim::{TraceKind, Verdict};

use crate::support::*;

#[test]
fn body_pause_buffers_and_sizes_are_cumulative() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("body_pause"), false)?;
    assert!(envoy.send_request_body(s, "abc", false)?.is_paused());
    assert!(envoy.send_request_body(s, "de", false)?.is_paused());
    assert!(envoy.send_request_body(s, "f", true)?.is_forwarded());
    let sizes: Vec<String> = probe_lines(&envoy, "request_body")
        .iter()
        .filter_map(|l| field(l, "size"))
        .collect();
    assert_eq!(sizes, ["3", "5", "6"], "each call sees the whole buffer");
    let full = probe_lines(&envoy, "request_body")
        .into_iter()
        .find(|l| l.starts_with("full="))
        .unwrap();
    assert_eq!(full, "full=abcdef");
    let rec = envoy.stream(s).unwrap();
    assert_eq!(
        rec.upstream.body, b"<abcdef>",
        "prepend and append are applied"
    );
    assert!(rec.upstream.end_stream);
    Ok(())
}

#[test]
fn set_buffer_bytes_only_prepends_or_appends() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("body_pause"), false)?;
    envoy.send_request_body(s, "xyz", true)?;
    let set = probe_lines(&envoy, "request_body")
        .into_iter()
        .find(|l| l.starts_with("set "))
        .unwrap();
    assert_eq!(
        field(&set, "mid").as_deref(),
        Some("2"),
        "a write in the middle is BAD_ARGUMENT"
    );
    assert_eq!(field(&set, "prepend").as_deref(), Some("0"));
    assert_eq!(field(&set, "append").as_deref(), Some("0"));
    Ok(())
}

#[test]
fn pause_on_headers_holds_the_body_away_from_the_filter() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    assert!(
        envoy
            .send_request_headers(s, get("pause"), false)?
            .is_paused()
    );
    envoy.take_trace();
    assert!(envoy.send_request_body(s, "data", true)?.is_paused());
    let called_body = envoy.trace().iter().any(
        |e| matches!(&e.kind, TraceKind::Callback { name, .. } if name == "proxy_on_request_body"),
    );
    assert!(
        !called_body,
        "StopAllIteration: the filter does not see data until it continues"
    );
    assert!(envoy.stream(s).unwrap().upstream.headers.is_none());
    Ok(())
}

#[test]
fn buffered_body_over_the_limit_is_a_413() -> Result {
    let mut envoy = probe()?.buffer_limit(8).build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("body_pause"), false)?;
    envoy.send_request_body(s, "12345", false)?;
    let v = envoy.send_request_body(s, "67890", false)?;
    let lr = v.local_reply().expect("local reply");
    assert_eq!(lr.status, 413);
    assert_eq!(lr.details, "request_payload_too_large");
    assert!(envoy.stream(s).unwrap().complete);
    Ok(())
}

#[test]
fn trailers_can_be_added_from_the_last_body_callback() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("trailers_add"), false)?;
    envoy.send_request_body(s, "x", true)?;
    let line = probe_lines(&envoy, "request_body")
        .into_iter()
        .find(|l| l.starts_with("add_trailer"))
        .unwrap();
    assert_eq!(field(&line, "add_trailer status").as_deref(), None);
    assert!(line.ends_with("status=0"), "{line}");
    let up = &envoy.stream(s).unwrap().upstream;
    assert_eq!(
        up.trailers.as_ref().and_then(|t| t.get("x-added-trailer")),
        Some("yes")
    );
    assert_eq!(up.body, b"x");
    assert!(up.end_stream);
    Ok(())
}

#[test]
fn request_trailers_reach_the_filter_and_the_upstream() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get(""), false)?;
    envoy.send_request_body(s, "b", false)?;
    let v = envoy.send_request_trailers(s, [("grpc-timeout", "1S")])?;
    assert_eq!(v, Verdict::Forwarded);
    assert_eq!(
        probe_line(&envoy, "request_trailers").as_deref(),
        Some("n=1")
    );
    let up = &envoy.stream(s).unwrap().upstream;
    assert_eq!(
        up.trailers.as_ref().and_then(|t| t.get("grpc-timeout")),
        Some("1S")
    );
    Ok(())
}

#[test]
fn buffer_status_reports_the_body_length() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("buffer_status"), false)?;
    envoy.send_request_body(s, "hello", true)?;
    let line = probe_line(&envoy, "buffer_status").unwrap();
    assert_eq!(line, "status=0 len=5 flags=0");
    Ok(())
}
