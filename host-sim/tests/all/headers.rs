//! Header maps: lower-cased keys, first value only, availability after Continue, sizes, pairs
//! limits.

use host_sim::HeaderMap;

use crate::support::*;

#[test]
fn keys_are_lower_cased_and_changes_reach_the_upstream() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    let mut h = get("headers");
    h.add("x-replace", "old");
    h.add("x-remove", "gone");
    envoy.send_request_headers(s, h, true)?;
    let up = envoy.stream(s).unwrap().upstream.headers.clone().unwrap();
    assert_eq!(
        up.get("x-probe-added"),
        Some("1"),
        "added as X-Probe-Added, stored lower-case"
    );
    assert!(up.iter().all(|(k, _)| k == k.to_ascii_lowercase()));
    assert_eq!(up.get("x-replace"), Some("new"));
    assert!(!up.contains("x-remove"));
    Ok(())
}

#[test]
fn single_value_get_returns_the_first_of_repeated_headers() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    let mut h = get("headers");
    h.add("x-multi", "first");
    h.add("x-multi", "second");
    envoy.send_request_headers(s, h, true)?;
    let line = probe_line(&envoy, "headers").unwrap();
    assert_eq!(field(&line, "multi_status").as_deref(), Some("0"));
    assert_eq!(field(&line, "first").as_deref(), Some("first"));
    Ok(())
}

#[test]
fn header_map_size_is_envoy_byte_size() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    let h = get("headers");
    envoy.send_request_headers(s, h, true)?;
    let lines = probe_lines(&envoy, "headers");
    let size_line = lines.iter().find(|l| l.starts_with("size_status")).unwrap();
    // Measured inside the callback after the probe's own changes.
    let up = envoy.stream(s).unwrap().upstream.headers.clone().unwrap();
    assert_eq!(field(size_line, "size"), Some(up.byte_size().to_string()));
    Ok(())
}

#[test]
fn request_headers_are_gone_after_continue_but_readable_in_on_log() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get(""), true)?;
    envoy.send_response_headers(s, [(":status", "200")], true)?;
    let resp = probe_line(&envoy, "response_headers").unwrap();
    assert_eq!(
        field(&resp, "req_get").as_deref(),
        Some("2"),
        "BAD_ARGUMENT after Continue"
    );
    assert_eq!(
        field(&resp, "req_pairs").as_deref(),
        Some("0/0"),
        "pairs read as an empty map"
    );
    let log = probe_line(&envoy, "log").unwrap();
    assert_eq!(
        field(&log, "path_status").as_deref(),
        Some("0"),
        "the access-log phase sees them"
    );
    assert_eq!(field(&log, "path").as_deref(), Some("/p?q=1"));
    Ok(())
}

#[test]
fn set_pairs_replaces_the_whole_map() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("set_pairs"), true)?;
    let up = envoy.stream(s).unwrap().upstream.headers.clone().unwrap();
    assert_eq!(up.get(":path"), Some("/rewritten"));
    assert_eq!(up.get("x-new"), Some("1"), "keys lower-cased");
    assert!(!up.contains("x-probe"));
    Ok(())
}

#[test]
fn pairs_over_the_limit_read_as_empty() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("oversized_pairs"), true)?;
    let line = probe_line(&envoy, "oversized_pairs").unwrap();
    assert_eq!(field(&line, "status").as_deref(), Some("0"));
    assert_eq!(
        field(&line, "pairs_len").as_deref(),
        Some("0"),
        "1100 pairs > 1024: the map is cleared"
    );
    Ok(())
}

#[test]
fn response_headers_can_be_modified_by_the_filter() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get(""), true)?;
    envoy.send_response_headers(s, HeaderMap::from([(":status", "201")]), true)?;
    let d = &envoy.stream(s).unwrap().downstream;
    assert_eq!(d.status(), Some(201));
    assert_eq!(d.header("x-probe-response"), Some("seen"));
    Ok(())
}
