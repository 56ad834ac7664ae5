//! Failure policy: traps fail the VM; FAIL_CLOSED, FAIL_OPEN, FAIL_RELOAD; fuel stops runaway
//! guests; bad pointers and bad enum values get statuses, never a host panic.

use std::time::Duration;

use host_sim::FailurePolicy;

use crate::support::*;

#[test]
fn a_trap_fails_closed_with_503_wasm_fail_stream() -> Result {
    let mut envoy = probe()?.workers(2).build()?;
    let s = envoy.new_stream_on(0);
    let v = envoy.send_request_headers(s, get("panic"), true)?;
    let lr = v.local_reply().expect("fail closed");
    assert_eq!((lr.status, lr.details.as_str()), (503, "wasm_fail_stream"));
    assert!(envoy.stream(s).unwrap().downstream.body.is_empty());
    assert!(
        envoy
            .worker_failure(0)
            .unwrap()
            .contains("proxy_on_request_headers")
    );
    // Later streams on the failed worker fail too; the other worker is fine.
    let s2 = envoy.new_stream_on(0);
    assert_eq!(
        envoy
            .send_request_headers(s2, get(""), true)?
            .local_reply()
            .map(|l| l.status),
        Some(503)
    );
    let s3 = envoy.new_stream_on(1);
    assert!(
        envoy
            .send_request_headers(s3, get(""), true)?
            .is_forwarded()
    );
    Ok(())
}

#[test]
fn grpc_requests_fail_with_unavailable() -> Result {
    let mut envoy = probe()?.workers(1).build()?;
    let s = envoy.new_stream();
    let mut h = get("panic");
    h.set("content-type", "application/grpc");
    envoy.send_request_headers(s, h, true)?;
    let d = &envoy.stream(s).unwrap().downstream;
    assert_eq!(d.status(), Some(200));
    assert_eq!(d.header("grpc-status"), Some("14"));
    Ok(())
}

#[test]
fn fail_open_bypasses_the_filter() -> Result {
    let mut envoy = probe()?
        .workers(1)
        .failure_policy(FailurePolicy::FailOpen)
        .build()?;
    let s = envoy.new_stream();
    let v = envoy.send_request_headers(s, get("panic"), true)?;
    // Envoy 1.40 (checked by the differential suite): FAIL_OPEN only spares *new* streams;
    // the stream whose callback trapped fails closed.
    assert_eq!(
        v.local_reply().map(|l| (l.status, l.details.as_str())),
        Some((503, "wasm_fail_stream")),
        "{v:?}"
    );
    let s2 = envoy.new_stream();
    envoy.send_request_headers(s2, get("headers"), true)?;
    let rec = envoy.stream(s2).unwrap();
    assert!(rec.bypassed);
    assert!(
        !rec.upstream
            .headers
            .as_ref()
            .unwrap()
            .contains("x-probe-added"),
        "the filter did not run"
    );
    Ok(())
}

#[test]
fn fail_reload_starts_a_new_vm_after_the_backoff() -> Result {
    let mut envoy = probe()?
        .workers(1)
        .failure_policy(FailurePolicy::FailReload)
        .reload_backoff(Duration::from_secs(1))
        .build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("panic"), true)?;
    envoy.advance(Duration::from_millis(500));
    let s2 = envoy.new_stream();
    assert_eq!(
        envoy
            .send_request_headers(s2, get(""), true)?
            .local_reply()
            .map(|l| l.status),
        Some(503),
        "within the backoff"
    );
    envoy.advance(Duration::from_secs(1));
    let s3 = envoy.new_stream();
    assert!(
        envoy
            .send_request_headers(s3, get(""), true)?
            .is_forwarded(),
        "reloaded"
    );
    assert_eq!(envoy.worker_generations(0), 2);
    assert!(envoy.worker_failure(0).is_none());
    let cfg_count = envoy
        .logs()
        .iter()
        .filter(|l| l.vm == "worker0#1" && l.message.starts_with("probe:configure:"))
        .count();
    assert_eq!(cfg_count, 1, "the new VM is started and configured");
    Ok(())
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_and_traps() -> Result {
    let mut envoy = probe()?.workers(1).fuel_per_call(5_000_000).build()?;
    let s = envoy.new_stream();
    let v = envoy.send_request_headers(s, get("loop"), true)?;
    assert_eq!(
        v.local_reply().map(|l| l.details.as_str()),
        Some("wasm_fail_stream")
    );
    let msg = envoy.worker_failure(0).unwrap();
    assert!(msg.contains("fuel"), "{msg}");
    Ok(())
}

#[test]
fn bad_pointers_are_invalid_memory_access() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("bad_pointer"), true)?;
    let line = probe_line(&envoy, "bad_pointer").unwrap();
    assert_eq!(
        line, "6,6,6,6,6,6,6,6,6,6 wasi=21",
        "INVALID_MEMORY_ACCESS everywhere, EFAULT for WASI"
    );
    assert!(envoy.worker_failure(0).is_none());
    Ok(())
}

#[test]
fn bad_enum_values_get_statuses() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("bad_enum"), true)?;
    let line = probe_line(&envoy, "bad_enum").unwrap();
    // log level 9, map 42, buffer 42, continue 9, close 9, continue(UPSTREAM), effective ctx
    // 9999, done, plugin config outside on_configure, set on the read-only VM config.
    assert_eq!(line, "2,2,2,2,2,12,2,1,1,2");
    Ok(())
}
