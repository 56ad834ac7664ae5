//! Foreign functions (recorded) and route re-evaluation after clear_route_cache.

use host_sim::RouteSpec;

use crate::support::*;

#[test]
fn foreign_functions_are_recorded() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("foreign"), true)?;
    assert_eq!(
        probe_line(&envoy, "foreign").as_deref(),
        // `k.ey` has no filter-state object factory in Envoy: NOT_FOUND.
        Some("clear_route_cache=0 set_envoy_filter_state=1 unknown=1")
    );
    let names: Vec<String> = envoy.foreign_calls().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "clear_route_cache",
            "set_envoy_filter_state",
            "no_such_function"
        ]
    );
    assert_eq!(envoy.foreign_calls()[0].stream, Some(s.0));
    Ok(())
}

#[test]
fn filter_state_needs_a_registered_factory_that_parses_the_value() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("filter_state_keys"), true)?;
    let lines = probe_lines(&envoy, "filter_state");
    for (line, status) in [
        ("k.ey=v", 1),
        ("envoy.string=v", 0),
        ("envoy.upstream.dynamic_port=8080", 0),
        ("envoy.upstream.dynamic_port=not-a-port", 2),
        (
            "envoy.network.transport_socket.original_dst_address=nope",
            2,
        ),
    ] {
        assert!(
            lines.contains(&format!("{line}:{status}")),
            "{line}: {lines:?}"
        );
    }
    Ok(())
}

#[test]
fn clear_route_cache_makes_the_router_pick_again() -> Result {
    let mut canary = RouteSpec::new("canary", "canary-cluster");
    canary.header = Some(("x-route".into(), "canary".into()));
    let routes = vec![canary, RouteSpec::new("default", "upstream")];
    let mut envoy = probe()?.routes(routes).build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("reroute"), true)?;
    assert_eq!(
        envoy.stream(s).unwrap().cluster.as_deref(),
        Some("canary-cluster")
    );
    let s2 = envoy.new_stream();
    envoy.send_request_headers(s2, get(""), true)?;
    assert_eq!(
        envoy.stream(s2).unwrap().cluster.as_deref(),
        Some("upstream")
    );
    Ok(())
}

#[test]
fn no_matching_route_is_a_404() -> Result {
    let mut only = RouteSpec::new("api", "upstream");
    only.prefix = "/api".into();
    let mut envoy = probe()?.routes(vec![only]).build()?;
    let s = envoy.new_stream();
    let v = envoy.send_request_headers(s, get(""), true)?;
    assert_eq!(
        v.local_reply().map(|l| (l.status, l.details.as_str())),
        Some((404, "route_not_found"))
    );
    Ok(())
}
