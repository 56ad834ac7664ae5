//! Properties: Envoy names, encodings, phase availability, set_property as filter state.

use host_sim::RouteSpec;

use crate::support::*;

#[test]
fn request_xds_and_plugin_properties() -> Result {
    let mut route = RouteSpec::new("r1", "upstream");
    route.metadata = serde_json::json!({"probe": {"k": "v"}});
    let mut envoy = probe()?
        .plugin_name("probe-plugin")
        .root_id("rid")
        .vm_id("vid")
        .routes(vec![route])
        .build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("property"), true)?;
    let props = probe_lines(&envoy, "property");
    let get = |name: &str| {
        props
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    assert_eq!(get("request.path").as_deref(), Some("0//p?q=1"));
    assert_eq!(get("request.method").as_deref(), Some("0/GET"));
    assert_eq!(get("request.protocol").as_deref(), Some("0/HTTP/1.1"));
    assert_eq!(get("xds.cluster_name").as_deref(), Some("0/upstream"));
    assert_eq!(get("xds.route_name").as_deref(), Some("0/r1"));
    assert_eq!(get("plugin_name").as_deref(), Some("0/probe-plugin"));
    assert_eq!(get("plugin_root_id").as_deref(), Some("0/rid"));
    assert_eq!(get("plugin_vm_id").as_deref(), Some("0/vid"));
    assert_eq!(get("source.address").as_deref(), Some("0/10.0.0.2:40000"));
    assert_eq!(
        get("nonexistent").as_deref(),
        Some("1/"),
        "unknown names are filter state: NOT_FOUND"
    );
    assert_eq!(
        get("xds.route_metadata.filter_metadata.probe.k").as_deref(),
        Some("0/v"),
        "navigation into route metadata"
    );
    assert_eq!(
        get("request.time").as_deref(),
        Some("0/len8"),
        "timestamps are 8-byte ns"
    );
    Ok(())
}

#[test]
fn set_property_is_filter_state_readable_back() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("set_property"), true)?;
    assert_eq!(
        probe_line(&envoy, "set_property").as_deref(),
        Some("set=0 get=0/probe_value")
    );
    Ok(())
}

#[test]
fn response_and_request_properties_in_on_log() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("log_properties"), false)?;
    envoy.send_request_body(s, "12345", true)?;
    envoy.advance(std::time::Duration::from_millis(7));
    envoy.send_response_headers(s, [(":status", "200")], true)?;
    let props = probe_lines(&envoy, "log_property");
    let get = |name: &str| {
        props
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let le = |v: i64| {
        format!(
            "0/{}",
            v.to_le_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    assert_eq!(
        get("request.duration"),
        Some(le(7_000_000)),
        "duration in ns, 8 bytes LE"
    );
    assert_eq!(
        get("response.grpc_status"),
        Some(le(2)),
        "derived from HTTP 200 even for plain HTTP (UNKNOWN)"
    );
    assert_eq!(get("request.size"), Some(le(5)));
    let addr: String = "127.0.0.1:8080"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(get("upstream.address"), Some(format!("0/{addr}")));
    Ok(())
}
