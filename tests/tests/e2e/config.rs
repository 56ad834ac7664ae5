//! A bad filter config is refused by Envoy with one log line that names the field.

use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener};

#[test]
fn unknown_field_is_rejected_at_startup_with_the_field_named() {
    let cfg = EnvoyConfig::new(None).listener(
        Listener::new("bad")
            .filter(
                Filter::meshguard("load_shed")
                    .unwrap()
                    .config(r#"{"mode": "enforce", "limitt": 3}"#),
            )
            .direct_response(200, "x"),
    );
    let err = Envoy::start(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("meshguard load_shed: invalid configuration: limitt: unknown field `limitt`"),
        "{err}"
    );
}

#[test]
fn bad_mode_is_rejected_and_good_config_accepted() {
    let bad = EnvoyConfig::new(None).listener(
        Listener::new("bad")
            .filter(
                Filter::meshguard("rate_limit")
                    .unwrap()
                    .config(r#"{"mode": "off"}"#),
            )
            .direct_response(200, "x"),
    );
    let err = Envoy::start(&bad).unwrap_err().to_string();
    assert!(
        err.contains("meshguard rate_limit: invalid configuration: mode: unknown variant `off`"),
        "{err}"
    );

    let good = EnvoyConfig::new(None).listener(
        Listener::new("good")
            .filter(
                Filter::meshguard("rate_limit")
                    .unwrap()
                    .config(r#"{"mode": "dry_run"}"#),
            )
            .direct_response(200, "x"),
    );
    let envoy = Envoy::start(&good).unwrap();
    assert!(
        envoy
            .log()
            .contains("meshguard rate_limit: configured (mode dry_run"),
        "{}",
        envoy.log()
    );
}

/// Every config in `envoy-configs/` passes `envoy --mode validate` once its placeholders are
/// filled in.
#[test]
fn shipped_envoy_configs_validate() {
    use meshguard_tests::{paths, template};
    let dir = paths::workspace_root().join("envoy-configs");
    let dist = paths::wasm("load_shed")
        .unwrap()
        .parent()
        .unwrap()
        .display()
        .to_string();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Only Envoy bootstraps (Istio / Envoy Gateway resources are checked elsewhere).
        if !text.contains("static_resources:") {
            continue;
        }
        // Fill every placeholder the shipped configs use (validate mode neither binds nor fetches).
        let sha = "a".repeat(64);
        let rendered = template::render(
            &text,
            &[
                ("MESHGUARD_DIST", &dist),
                ("UPSTREAM_PORT", "18080"),
                ("MODULES_PORT", "18081"),
                ("RATE_LIMIT_SHA256", &sha),
                ("LOAD_SHED_SHA256", &sha),
                ("SANDBOX_ROUTER_SHA256", &sha),
                ("CIRCUIT_BREAKER_SHA256", &sha),
            ],
        )
        .unwrap();
        let tmp = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(tmp.path(), rendered).unwrap();
        let out = std::process::Command::new(paths::envoy_binary().unwrap())
            .args(["--mode", "validate", "-c"])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no Envoy bootstrap found in {}",
        dir.display()
    );
}
