//! VM start-up (canary, main, workers), config rejection, stream lifecycle order.

use host_sim::{Error, Slot};

use crate::support::*;

#[test]
fn canary_then_main_then_workers_each_start_and_configure() -> Result {
    let envoy = probe()?.workers(3).plugin_config("x").build()?;
    let vms: Vec<String> = probe_lines(&envoy, "configure")
        .iter()
        .map(|_| String::new())
        .collect();
    assert_eq!(
        vms.len(),
        5,
        "canary + main + 3 workers configure once each"
    );
    let order: Vec<String> = envoy
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("probe:configure:"))
        .map(|l| l.vm.clone())
        .collect();
    assert_eq!(order, ["canary", "main", "worker0", "worker1", "worker2"]);
    assert_eq!(envoy.workers(), 3);
    assert_eq!(Slot::Worker(2).name(), "worker2");
    Ok(())
}

#[test]
fn rejected_config_fails_build_with_module_logs() -> Result {
    let err = probe()?.plugin_config("reject").build().unwrap_err();
    match &err {
        Error::ConfigRejected { vm, logs } => {
            assert_eq!(vm, "canary", "the canary decides");
            assert!(
                logs.iter()
                    .any(|l| l.message.contains("rejected: config says reject")),
                "{logs:?}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        err.to_string().contains("config says reject"),
        "the error message carries the logs: {err}"
    );
    Ok(())
}

#[test]
fn plugin_and_vm_config_are_readable_in_their_callbacks() -> Result {
    let envoy = probe()?.plugin_config("abc").vm_config("vmcfg").build()?;
    let start = probe_line(&envoy, "vm_start").unwrap();
    assert_eq!(field(&start, "size").as_deref(), Some("5"));
    assert_eq!(field(&start, "config").as_deref(), Some("vmcfg"));
    let cfg = probe_line(&envoy, "configure").unwrap();
    assert_eq!(field(&cfg, "size").as_deref(), Some("3"));
    assert_eq!(field(&cfg, "config").as_deref(), Some("abc"));
    Ok(())
}

#[test]
fn stream_callbacks_run_in_envoy_order_with_fresh_context_ids() -> Result {
    let mut envoy = probe()?.workers(1).build()?;
    envoy.take_trace();
    let a = envoy.new_stream();
    envoy.send_request_headers(a, get(""), true)?;
    envoy.send_response_headers(a, [(":status", "200")], true)?;
    let names = envoy.callback_names();
    assert_eq!(
        names,
        [
            "proxy_on_context_create",
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_log",
            "proxy_on_done",
            "proxy_on_delete"
        ]
    );
    let b = envoy.new_stream();
    envoy.send_request_headers(b, get(""), true)?;
    let ctxs: Vec<String> = probe_lines(&envoy, "request_headers")
        .iter()
        .filter_map(|l| field(l, "ctx"))
        .collect();
    assert_eq!(
        ctxs,
        ["2", "3"],
        "root context is 1, streams count up from 2"
    );
    Ok(())
}

#[test]
fn streams_go_round_robin_or_to_a_chosen_worker() -> Result {
    let mut envoy = noop()?.workers(3).build()?;
    let workers: Vec<usize> = (0..4)
        .map(|_| {
            let s = envoy.new_stream();
            envoy.stream(s).unwrap().worker
        })
        .collect();
    assert_eq!(workers, [0, 1, 2, 0]);
    let s = envoy.new_stream_on(2);
    assert_eq!(envoy.stream(s).unwrap().worker, 2);
    Ok(())
}

#[test]
fn client_reset_still_logs_and_deletes() -> Result {
    let mut envoy = probe()?.workers(1).build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get(""), false)?;
    envoy.take_trace();
    envoy.reset_stream(s)?;
    assert_eq!(
        envoy.callback_names(),
        ["proxy_on_log", "proxy_on_done", "proxy_on_delete"]
    );
    let rec = envoy.stream(s).unwrap();
    assert!(rec.complete);
    assert_eq!(rec.reset.as_deref(), Some("downstream_remote_disconnect"));
    Ok(())
}

#[test]
fn response_before_forwarding_is_a_usage_error() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("pause"), true)?;
    let err = envoy
        .send_response_headers(s, [(":status", "200")], true)
        .unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err}");
    Ok(())
}

#[test]
fn only_logging_and_wasi_may_be_called_during_vm_start() -> Result {
    let err = probe()?
        .env("PROBE_INIT", "restricted")
        .build()
        .unwrap_err();
    match &err {
        Error::StartFailed { vm, reason, logs } => {
            assert_eq!(vm, "canary");
            assert!(reason.contains("restricted_callback"), "{reason}");
            assert!(
                logs.iter().any(|l| l.message.contains("probe:init:")),
                "logging is allowed: {logs:?}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    Ok(())
}
