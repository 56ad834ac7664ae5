//! The `meshguard` bundle (issue 9): every policy in one filter pass, one config; and what each
//! module costs in host calls per request (the Wasm tax is paid per host call).

use std::time::Duration;

use host_sim::{Envoy, Error, HeaderMap, HostCalls, Module, RouteSpec, StreamRecord};

use crate::support::Result;

const ROUTING: &str = "x-meshguard-sandbox-cluster";

/// Each policy's section, as the single filter takes it.
const RATE_LIMIT: &str = r#"{"descriptors": [{"name": "per_user", "entries": [{"header": {"name": "x-user"}}],
    "token_bucket": {"max_tokens": 3, "fill_interval": "10s"}}]}"#;
const LOAD_SHED: &str = r#"{"concurrency_limit_params": {"min_concurrency_limit": 5, "initial_concurrency_limit": 20}}"#;
const SANDBOX_ROUTER: &str =
    r#"{"routes": [{"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"}]}"#;
const CIRCUIT_BREAKER: &str = r#"{"trip": {"consecutive_failures": 3}}"#;

/// A rate limit every request matches but never hits (host-call counts in steady state).
const RATE_LIMIT_WIDE: &str = r#"{"descriptors": [{"name": "per_user", "entries": [{"header": {"name": "x-user"}}],
    "token_bucket": {"max_tokens": 1000000, "tokens_per_fill": 1000000, "fill_interval": "1s"}}]}"#;

fn bundle_of(rate_limit: &str) -> String {
    format!(
        r#"{{"rate_limit": {rate_limit}, "load_shed": {LOAD_SHED}, "sandbox_router": {SANDBOX_ROUTER}, "circuit_breaker": {CIRCUIT_BREAKER}}}"#
    )
}

fn all_four() -> String {
    bundle_of(RATE_LIMIT)
}

fn envoy(module: &str, config: &str) -> std::result::Result<Envoy, Error> {
    let mut sandbox = RouteSpec::new("to-dev-1", "reviews-dev-1");
    sandbox.header = Some((ROUTING.into(), "reviews-dev-1".into()));
    Envoy::builder(Module::load(module)?)
        .workers(2)
        .plugin_config(config)
        .routes(vec![sandbox, RouteSpec::new("reviews", "reviews")])
        .cluster("reviews")
        .cluster("reviews-dev-1")
        .tracing(false)
        .build()
}

/// One request answered `status` by the upstream (if it gets there).
fn send(e: &mut Envoy, extra: &[(&str, &str)], status: &str) -> Result<StreamRecord> {
    let s = e.new_stream();
    let mut h = HeaderMap::from([
        (":method", "GET"),
        (":path", "/r"),
        (":authority", "reviews"),
        (":scheme", "http"),
    ]);
    for (k, v) in extra {
        h.add(k, v);
    }
    let v = e.send_request_headers(s, h, true)?;
    if v.is_forwarded() {
        e.send_response_headers(s, [(":status", status)], false)?;
        e.send_response_body(s, b"ok", true)?;
    }
    Ok(e.stream(s).cloned().expect("stream"))
}

fn status(r: &StreamRecord) -> Option<&str> {
    r.downstream.header(":status")
}

#[test]
fn all_four_policies_run_in_one_pass_in_the_documented_order() -> Result {
    let mut e = envoy("meshguard", &all_four())?;
    // sandbox_router reroutes, then circuit_breaker keys by the cluster actually used.
    for _ in 0..3 {
        let r = send(
            &mut e,
            &[("baggage", "sandbox=dev-1"), ("x-user", "a")],
            "503",
        )?;
        assert_eq!(r.cluster.as_deref(), Some("reviews-dev-1"));
    }
    // Three failures from reviews-dev-1 opened its breaker; the baseline is unaffected.
    let r = send(
        &mut e,
        &[("baggage", "sandbox=dev-1"), ("x-user", "b")],
        "200",
    )?;
    assert_eq!(status(&r), Some("503"), "{r:?}");
    assert!(
        r.local_reply
            .as_ref()
            .is_some_and(|l| l.details.starts_with("meshguard_circuit_open"))
    );
    let r = send(&mut e, &[("x-user", "b")], "200")?;
    assert_eq!(status(&r), Some("200"));
    assert_eq!(r.cluster.as_deref(), Some("reviews"));
    // rate_limit runs first: user a's fourth request is limited before anything else sees it.
    let r = send(&mut e, &[("x-user", "a")], "200")?;
    assert_eq!(status(&r), Some("429"));
    e.advance(Duration::from_secs(1));
    let m = "meshguard.";
    assert_eq!(e.counter(&format!("{m}rate_limit.limited.per_user")), 1);
    assert_eq!(e.counter(&format!("{m}sandbox_router.routed")), 4);
    assert_eq!(e.counter(&format!("{m}circuit_breaker.rejected")), 1);
    assert_eq!(e.counter(&format!("{m}circuit_breaker.outcome.failure")), 3);
    // load_shed admitted what the rate limit let through (5 of 6), and none is in flight.
    let admitted: u64 = ["critical_plus", "critical", "sheddable_plus", "sheddable"]
        .iter()
        .map(|c| e.counter(&format!("{m}load_shed.admitted.{c}")))
        .sum();
    assert_eq!(admitted, 5);
    assert_eq!(e.gauge(&format!("{m}load_shed.inflight")), 0);
    Ok(())
}

#[test]
fn a_bundle_with_one_policy_behaves_like_its_single_filter() -> Result {
    let mut single = envoy("rate_limit", RATE_LIMIT)?;
    let mut bundle = envoy("meshguard", &format!(r#"{{"rate_limit": {RATE_LIMIT}}}"#))?;
    for e in [&mut single, &mut bundle] {
        let statuses: Vec<String> = (0..5)
            .map(|_| send(e, &[("x-user", "a")], "200"))
            .map(|r| r.map(|r| status(&r).unwrap_or("-").to_owned()))
            .collect::<Result<_>>()?;
        assert_eq!(statuses, ["200", "200", "200", "429", "429"]);
    }
    Ok(())
}

#[test]
fn bad_bundle_configs_are_refused_with_the_reason() -> Result {
    for (config, says) in [
        ("{}", "no policy enabled"),
        (r#"{"load_shedding": {}}"#, "load_shedding"),
        (r#"{"load_shed": {"mode": "x"}}"#, "meshguard load_shed"),
        (
            r#"{"rate_limit": {}, "circuit_breaker": {"trip": {"consecutive_failures": 0}}}"#,
            "meshguard circuit_breaker",
        ),
    ] {
        match envoy("meshguard", config) {
            Err(Error::ConfigRejected { logs, .. }) => assert!(
                logs.iter().any(|l| l.message.contains(says)),
                "{config}: {logs:?}"
            ),
            other => panic!("{config}: expected a rejected config, got {other:?}"),
        }
    }
    Ok(())
}

/// Host calls per request for a module and config, over `n` plain requests (no keys, no
/// limits hit): what every request pays.
fn calls_per_request(module: &str, config: &str, n: u64) -> Result<(f64, HostCalls)> {
    let mut e = envoy(module, config)?;
    send(&mut e, &[], "200")?; // warm-up: lazily defined metrics, first shared-data reads
    e.reset_host_calls();
    for _ in 0..n {
        let r = send(&mut e, &[("x-user", "u")], "200")?;
        assert_eq!(status(&r), Some("200"), "{module}");
    }
    let calls = e.host_calls();
    #[allow(clippy::cast_precision_loss)]
    Ok((calls.stream_total() as f64 / n as f64, calls))
}

#[test]
fn host_calls_per_request_no_dumps_and_the_bundle_pays_less_than_the_sum() -> Result {
    let mut sum = 0.0;
    for (module, config) in [
        ("rate_limit", RATE_LIMIT_WIDE),
        ("load_shed", LOAD_SHED),
        ("sandbox_router", SANDBOX_ROUTER),
        ("circuit_breaker", CIRCUIT_BREAKER),
    ] {
        let (per, calls) = calls_per_request(module, config, 50)?;
        println!(
            "{module}: {per:.1} host calls/request ({}); callbacks: {}; guest fuel/request: {}",
            calls.stream_summary(),
            callbacks(&calls, 50),
            calls.request_fuel() / 50
        );
        assert!(
            !calls.stream.contains_key("proxy_get_header_map_pairs"),
            "{module} dumps a header map on every request: {calls:?}"
        );
        if module == "circuit_breaker" {
            // A healthy breaker is read from shared data once per 10 ms, not per request
            // (these 50 requests take no virtual time).
            let reads = calls.stream.get("proxy_get_shared_data").copied();
            assert!(reads.unwrap_or(0) <= 1, "{reads:?} shared-data reads");
            // The clock once per healthy request (admission): recording a healthy outcome
            // writes nothing, so `on_log` does not ask the time.
            let clock = calls.stream.get("clock_time_get").copied();
            assert_eq!(clock, Some(50), "clock reads for 50 requests");
        }
        sum += per;
    }
    let (bundle, calls) = calls_per_request("meshguard", &bundle_of(RATE_LIMIT_WIDE), 50)?;
    println!(
        "meshguard (all four): {bundle:.1} host calls/request ({}); four single filters: {sum:.1}; callbacks: {}; guest fuel/request: {}",
        calls.stream_summary(),
        callbacks(&calls, 50),
        calls.request_fuel() / 50
    );
    assert!(!calls.stream.contains_key("proxy_get_header_map_pairs"));
    // Policies share the clock (and any header or property they both read) within a pass.
    assert!(bundle < sum, "bundle {bundle} >= sum of singles {sum}");
    Ok(())
}

/// Callbacks into the module per request, by name (`request_headers=1 log=1 ...`).
fn callbacks(calls: &HostCalls, n: u64) -> String {
    calls
        .callbacks
        .iter()
        .filter(|(k, _)| !k.starts_with("proxy_on_tick"))
        .map(|(k, v)| {
            #[allow(clippy::cast_precision_loss)]
            let per = *v as f64 / n as f64;
            format!("{}={per:.0}", k.trim_start_matches("proxy_on_"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Envoy enters a module only for the callbacks it exports; the build trims each module to
/// the callbacks its filter implements (tools/wasm-trim).
#[test]
fn modules_are_entered_only_for_the_callbacks_they_implement() -> Result {
    let (_, calls) = calls_per_request("load_shed", LOAD_SHED, 10)?;
    let entered: Vec<&str> = calls.callbacks.keys().copied().collect();
    for skipped in [
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_done",
    ] {
        assert!(!entered.contains(&skipped), "{skipped}: {entered:?}");
    }
    assert!(entered.contains(&"proxy_on_request_headers") && entered.contains(&"proxy_on_log"));
    let (_, calls) = calls_per_request("meshguard", &bundle_of(RATE_LIMIT_WIDE), 10)?;
    assert!(calls.callbacks.contains_key("proxy_on_response_headers"));
    assert!(!calls.callbacks.contains_key("proxy_on_response_body"));
    Ok(())
}

/// What a request routed to a sandbox costs (the `sandbox_router_key` and `meshguard_active`
/// rows of `bench overhead`): host calls and guest fuel per request.
fn routed_calls(module: &str, config: &str, n: u64) -> Result<HostCalls> {
    let mut e = envoy(module, config)?;
    let key = [("baggage", "sandbox=dev-1"), ("x-user", "u")];
    send(&mut e, &key, "200")?;
    e.reset_host_calls();
    for _ in 0..n {
        let r = send(&mut e, &key, "200")?;
        assert_eq!(r.cluster.as_deref(), Some("reviews-dev-1"), "{module}");
    }
    Ok(e.host_calls())
}

#[test]
fn a_routed_request_costs() -> Result {
    for (module, config) in [
        ("sandbox_router", SANDBOX_ROUTER.to_owned()),
        ("meshguard", bundle_of(RATE_LIMIT_WIDE)),
    ] {
        let calls = routed_calls(module, &config, 50)?;
        println!(
            "{module} routed: {:.1} host calls/request ({}); callbacks: {}; guest fuel/request: {}",
            calls.stream_total() as f64 / 50.0,
            calls.stream_summary(),
            callbacks(&calls, 50),
            calls.request_fuel() / 50
        );
        // One property per request: the route's cluster (`service_from: cluster`). The key is
        // in the first `baggage` header, so repeated ones are not joined (a second property).
        assert_eq!(
            calls.stream.get("proxy_get_property"),
            Some(&50),
            "{module}: {calls:?}"
        );
        assert!(!calls.stream.contains_key("proxy_get_header_map_pairs"));
    }
    Ok(())
}

/// `calls_floor` (an anchor of `bench overhead`) makes the idle bundle's host calls and no
/// more: if the bundle's calls change, the anchor must change with it.
#[test]
fn the_calls_floor_anchor_makes_the_idle_bundles_host_calls() -> Result {
    let idle =
        r#"{"rate_limit": {}, "load_shed": {}, "sandbox_router": {}, "circuit_breaker": {}}"#;
    let (_, bundle) = calls_per_request("meshguard", idle, 20)?;
    let (_, floor) = calls_per_request("calls_floor", "", 20)?;
    let mut expected = bundle.stream.clone();
    // The breaker's shared-data read is once per 10 ms, not per request.
    expected.remove("proxy_get_shared_data");
    assert_eq!(floor.stream, expected);
    assert_eq!(
        floor.callbacks.keys().collect::<Vec<_>>(),
        bundle.callbacks.keys().collect::<Vec<_>>()
    );
    Ok(())
}

/// A busy worker of the idle bundle times one request in N (the load shedder's latency
/// sampling), and the breaker admits on the worker's last clock read: an untimed request makes
/// no clock read at all. `calls_floor` (above) is the bundle's cost when every request is
/// timed, as at low traffic.
#[test]
fn a_busy_bundle_reads_the_clock_only_for_the_requests_it_times() -> Result {
    let idle =
        r#"{"rate_limit": {}, "load_shed": {}, "sandbox_router": {}, "circuit_breaker": {}}"#;
    let mut e = envoy("meshguard", idle)?;
    // One update interval (100 ms) with 2,000 requests on the two workers: each wants
    // 4 x min_samples (50) = 200 timed requests per interval, so it times one in 5.
    for _ in 0..2000 {
        send(&mut e, &[], "200")?;
    }
    e.advance(Duration::from_millis(100));
    e.reset_host_calls();
    let n = 500;
    for _ in 0..n {
        let r = send(&mut e, &[], "200")?;
        assert_eq!(status(&r), Some("200"));
    }
    let calls = e.host_calls();
    let clock = calls.stream.get("clock_time_get").copied().unwrap_or(0);
    println!(
        "busy idle bundle: {:.2} host calls/request ({})",
        calls.stream_total() as f64 / n as f64,
        calls.stream_summary()
    );
    // Two reads (admission, completion) per timed request: one in 5, not every one.
    assert!(
        clock > 0 && clock <= 2 * n / 5 + 4,
        "{clock} clock reads for {n} requests"
    );
    // The rest is what every request needs: 3 request-header misses, the route's cluster,
    // `:status` and `grpc-status`.
    let per_request: u64 = calls
        .stream
        .iter()
        .filter(|(k, _)| !matches!(**k, "clock_time_get" | "proxy_get_shared_data"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(per_request, 6 * n, "{calls:?}");
    Ok(())
}
