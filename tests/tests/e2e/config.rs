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
            .contains("meshguard rate_limit: configured (mode dry_run)"),
        "{}",
        envoy.log()
    );
}
