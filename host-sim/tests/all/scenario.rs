//! Scenario files and the `host-sim` CLI.

use std::process::Command;

use host_sim::scenario::Scenario;
use host_sim::{Module, find_wasm};

use crate::support::*;

const SCENARIO: &str = r#"{
  "workers": 2,
  "plugin_config": "tick=100",
  "clusters": [{"name": "auth"}],
  "http_responders": {"auth": {"status": 200, "body": "ok", "delay": "20ms"}},
  "steps": [
    {"request": {"id": "a", "headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"], ["x-probe", "callout"]]}},
    {"expect": {"stream": "a", "forwarded": false}},
    {"advance": "50ms"},
    {"expect": {"stream": "a", "forwarded": true, "upstream_header": ["x-probe", "callout"]}},
    {"response": {"id": "a", "headers": [[":status", "200"]], "body": ["hi"]}},
    {"expect": {"stream": "a", "status": 200, "complete": true, "body": "hi", "header": ["x-probe-response", "seen"]}},
    {"expect": {"callouts": 1, "cluster": "auth"}},
    {"advance": "100ms"},
    {"expect": {"log_contains": "probe:tick:n=1"}},
    {"request": {"id": "b", "headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"], ["x-probe", "local_reply"]]}},
    {"expect": {"stream": "b", "status": 403, "local_reply": true, "details": "probe_denied"}}
  ]
}"#;

#[test]
fn scenario_runs_and_checks_expectations() -> Result {
    let scenario = Scenario::from_json(SCENARIO)?;
    let mut lines = Vec::new();
    let outcome = scenario.run(Module::load("abi_probe")?, None, &mut |v| lines.push(v))?;
    assert_eq!((outcome.passed, outcome.failed), (6, 0), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l["ev"] == "callout" && l["cluster"] == "auth")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["ev"] == "local_reply" && l["status"] == 403)
    );
    assert_eq!(lines.last().unwrap()["ev"], "summary");
    Ok(())
}

#[test]
fn failed_expectations_are_reported() -> Result {
    let text = SCENARIO.replace("\"status\": 403", "\"status\": 418");
    let scenario = Scenario::from_json(&text)?;
    let mut lines = Vec::new();
    let outcome = scenario.run(Module::load("abi_probe")?, None, &mut |v| lines.push(v))?;
    assert_eq!(outcome.failed, 1);
    let failed = lines
        .iter()
        .find(|l| l["ev"] == "expect" && l["ok"] == false)
        .unwrap();
    assert!(failed["failures"][0].as_str().unwrap().contains("want 418"));
    Ok(())
}

#[test]
fn unknown_fields_are_rejected() {
    let err = Scenario::from_json(r#"{"steps": [], "wokers": 2}"#).unwrap_err();
    assert!(err.to_string().contains("wokers"), "{err}");
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_host-sim"))
}

#[test]
fn cli_imports_lists_what_is_provided() -> Result {
    let wasm = find_wasm("abi_probe")?;
    let out = cli().arg("imports").arg(&wasm).output()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.contains("env.proxy_get_buffer_status\tprovided"),
        "{text}"
    );
    assert!(text.contains("wasi_snapshot_preview1.fd_write\tprovided"));
    assert!(text.trim_end().ends_with("0 missing"));
    Ok(())
}

#[test]
fn cli_run_prints_json_lines_and_fails_on_a_failed_expectation() -> Result {
    let dir = std::env::temp_dir().join(format!("host-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let good = dir.join("good.json");
    std::fs::write(&good, SCENARIO)?;
    let bad = dir.join("bad.json");
    std::fs::write(&bad, SCENARIO.replace("\"status\": 403", "\"status\": 418"))?;
    let wasm = find_wasm("abi_probe")?;
    let out = cli()
        .arg("run")
        .arg(&wasm)
        .arg("--scenario")
        .arg(&good)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert!(v.get("ev").is_some(), "{line}");
    }
    let out = cli()
        .arg("run")
        .arg(&wasm)
        .arg("--scenario")
        .arg(&bad)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let cfg = dir.join("reject.cfg");
    std::fs::write(&cfg, "reject")?;
    let out = cli()
        .arg("run")
        .arg(&wasm)
        .arg("--scenario")
        .arg(&good)
        .arg("--config")
        .arg(&cfg)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config says reject"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn same_script_same_trace() -> Result {
    let run = || -> Result<Vec<serde_json::Value>> {
        let mut lines = Vec::new();
        Scenario::from_json(SCENARIO)?
            .run(Module::load("abi_probe")?, None, &mut |v| lines.push(v))?;
        Ok(lines)
    };
    assert_eq!(run()?, run()?);
    Ok(())
}
