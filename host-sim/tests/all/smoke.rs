//! The simplest flows with the no-op filter and the probe.

use crate::support::*;

#[test]
fn noop_request_round_trip() -> Result {
    let mut envoy = noop()?.workers(2).build()?;
    let s = envoy.new_stream();
    let v = envoy.send_request_headers(s, get(""), true)?;
    assert!(v.is_forwarded(), "{v:?}");
    let v = envoy.send_response_headers(s, [(":status", "200")], true)?;
    assert!(v.is_forwarded(), "{v:?}");
    let rec = envoy.stream(s).unwrap();
    assert!(rec.complete);
    assert_eq!(rec.downstream.status(), Some(200));
    assert_eq!(rec.upstream.header(":path"), Some("/p?q=1"));
    Ok(())
}

#[test]
fn probe_starts_and_logs() -> Result {
    let mut envoy = probe()?.plugin_config("hello").build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("headers"), true)?;
    envoy.send_response_headers(s, [(":status", "200")], true)?;
    for l in envoy.logs() {
        eprintln!("{} {} {}", l.vm, l.level, l.message);
    }
    let names = envoy.callback_names();
    eprintln!("{names:?}");
    Ok(())
}
