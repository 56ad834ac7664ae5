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

#[test]
fn every_abi_and_wasi_function_is_provided() {
    let provided = host_sim::provided_imports();
    let proxy: Vec<_> = provided
        .iter()
        .filter(|(m, n)| *m == "env" && n.starts_with("proxy_"))
        .collect();
    // 39 from ABI 0.2.1 plus the 4 v0.1 names.
    assert_eq!(proxy.len(), 43, "{proxy:?}");
    let wasi = provided
        .iter()
        .filter(|(m, _)| *m == "wasi_snapshot_preview1")
        .count();
    assert_eq!(wasi, 45, "cpp-host's WASI set");
    assert_eq!(
        provided
            .iter()
            .filter(|(m, _)| *m == "wasi_unstable")
            .count(),
        45
    );
    for f in [
        "proxy_get_buffer_status",
        "proxy_get_header_map_size",
        "proxy_continue_request",
        "proxy_get_configuration",
    ] {
        assert!(proxy.iter().any(|(_, n)| *n == f), "{f}");
    }
}

#[test]
fn missing_module_error_says_to_build() {
    let err = host_sim::Module::load("no_such_module").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("./build.sh") && msg.contains("no_such_module.wasm"),
        "{msg}"
    );
}

#[test]
fn non_proxy_wasm_modules_are_rejected() {
    // A valid module with no imports, no exports: not proxy-wasm (no ABI version export).
    let empty = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    let err = host_sim::Module::from_bytes(&empty).unwrap_err();
    assert!(err.to_string().contains("ABI version"), "{err}");
    let err = host_sim::Module::from_bytes(b"not wasm").unwrap_err();
    assert!(matches!(err, host_sim::Error::Compile(_)), "{err}");
}
