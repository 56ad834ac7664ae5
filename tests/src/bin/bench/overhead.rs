//! `overhead`: Envoy CPU per request for each meshguard module, next to no filter and a no-op
//! Rust proxy-wasm filter.
//!
//! Method (baselines.md §1): one Envoy per config, `--concurrency 1`, a route with
//! `direct_response` (no upstream), HTTP/1.1 load from `wrk -t1 -c16` for a few seconds per
//! round, rounds interleaved across configs (so drift in machine load hits every config alike),
//! figure = Envoy process CPU (utime + stime) / requests served, median over rounds with min–max;
//! `ratio_vs_noop` divides medians, `paired_ratio` is the median over rounds of each round's
//! ratio to its anchor (the steadier figure on a noisy machine).
//! Envoy and wrk are pinned to different cores when `taskset` is available.
//!
//! `meshguard` / `meshguard_active`: the bundle with all four policies, idle (each policy's
//! default config, as in the single rows; `meshguard_lean` with the sandbox router's lean
//! config, as the shipped sidecar configs run it) and active (a rate-limit rule every request
//! matches, a routed sandbox key), next to `all_four[_active]` (four single filters alike),
//! `noop_wasm_x4` (four no-op filters) and `noop_trimmed` (the no-op filter with its unused
//! callback exports removed, as every meshguard module is: what trimming alone saves).
//! `noop_bundle_callbacks` is the no-op with the bundle's callbacks (what entering the VM for
//! them costs), and `calls_floor` adds the host calls the idle bundle makes per request,
//! without any logic (`tests/fixtures/calls-floor`): `meshguard` minus `calls_floor` is
//! meshguard's own guest work, `calls_floor` minus `noop_bundle_callbacks` what Envoy charges
//! for the calls.
//!
//! `sandbox_router[_lean]_key` / `_no_key`: sandbox_router with a 1,000-entry table, wrk
//! sending `baggage: sandbox=dev-500` (a table hit) or no key; `_lean` is the config of
//! `envoy-configs/sandbox-outbound.yaml` (the listener strips client routing headers, no
//! `clear_route_cache` call). `noop_wasm_key` is the anchor for the `_key` rows: the no-op
//! filter with the same request headers.

use std::time::Duration;

use anyhow::Result;
use meshguard_tests::Filter;
use meshguard_tests::bench::{self, Row};

use crate::Opts;

/// The single filters (also the footprint benchmark's).
pub(crate) const FILTERS: [&str; 4] = [
    "load_shed",
    "circuit_breaker",
    "rate_limit",
    "sandbox_router",
];

/// A config: its name, its filters, and the request headers wrk sends.
type Config = (String, Vec<Filter>, Vec<String>);

/// sandbox_router with a 1,000-entry table (keys `dev-0` .. `dev-999` for service `svc`, the
/// `:authority` host: a `direct_response` route has no cluster to name the service).
fn sandbox_router_1000(extra: &str) -> Result<Filter> {
    let routes: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"key": "dev-{i}", "service": "svc", "cluster": "svc-dev-{i}"}}"#))
        .collect();
    Ok(Filter::meshguard("sandbox_router")?.config(format!(
        r#"{{"service_from": "authority", "routes": [{}]{extra}}}"#,
        routes.join(",")
    )))
}

/// rate_limit with one rule every request matches: a service-wide bucket (never empty) that
/// every request takes a token from (workers lease tokens in batches; a per-value bucket,
/// e.g. per client, costs a shared-data read and write per request instead).
const RATE_LIMIT_ACTIVE: &str = r#"{"descriptors": [{"name": "api", "entries": [{"generic_key": {"value": "api"}}],
    "token_bucket": {"max_tokens": 1000000, "tokens_per_fill": 1000000, "fill_interval": "1s"}}]}"#;

/// The bundle with every policy's section: the single filters' default configs (`idle`), or
/// the active ones of the `_active` rows (a rate-limit rule that matches, a routed key).
pub fn bundle(active: bool) -> Result<Filter> {
    let config = if active {
        let routes: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"key": "dev-{i}", "service": "svc", "cluster": "svc-dev-{i}"}}"#))
            .collect();
        format!(
            r#"{{"rate_limit": {RATE_LIMIT_ACTIVE}, "load_shed": {{}}, "sandbox_router": {{"service_from": "authority", "routes": [{}]}}, "circuit_breaker": {{}}}}"#,
            routes.join(",")
        )
    } else {
        r#"{"rate_limit": {}, "load_shed": {}, "sandbox_router": {}, "circuit_breaker": {}}"#
            .to_owned()
    };
    Ok(Filter::meshguard("meshguard")?.config(config))
}

/// The four single filters in one chain, default configs.
pub fn all_four() -> Result<Vec<Filter>> {
    FILTERS.iter().map(|f| Filter::meshguard(f)).collect()
}

fn configs() -> Result<Vec<Config>> {
    let mut out = vec![
        ("no_filter".to_owned(), vec![], vec![]),
        ("noop_wasm".to_owned(), vec![Filter::noop()?], vec![]),
        (
            "noop_wasm_key".to_owned(),
            vec![Filter::noop()?],
            key_headers(),
        ),
        // What trimming unused callback exports alone saves (tools/wasm-trim), and the cost
        // of four filters in a chain: the anchors of the bundle.
        (
            "noop_trimmed".to_owned(),
            vec![Filter::fixture("noop_trimmed")?],
            vec![],
        ),
        // The bundle's floor: the no-op trimmed to the bundle's callbacks, and the same plus
        // the idle bundle's host calls without its logic (tests/fixtures/calls-floor).
        (
            "noop_bundle_callbacks".to_owned(),
            vec![Filter::fixture("noop_bundle_callbacks")?],
            vec![],
        ),
        (
            "calls_floor".to_owned(),
            vec![Filter::fixture("calls_floor")?],
            vec![],
        ),
        (
            "noop_wasm_x4".to_owned(),
            (0..4)
                .map(|i| Ok(Filter::noop()?.named(&format!("noop{i}"))))
                .collect::<Result<_>>()?,
            vec![],
        ),
    ];
    for f in FILTERS {
        out.push((f.to_owned(), vec![Filter::meshguard(f)?], vec![]));
    }
    // sandbox_router on the request path that matters: a key that hits the table (the routing
    // header is set), and a request without a key; with the default config and with the lean
    // one of envoy-configs/sandbox-outbound.yaml (client routing headers stripped by the
    // listener, no clear_route_cache call).
    let key = key_headers();
    let no_key = vec!["Host: svc".to_owned()];
    for (variant, extra) in [
        ("", ""),
        (
            "_lean",
            r#", "strip_client_routing_headers": false, "clear_route_cache": false"#,
        ),
    ] {
        out.push((
            format!("sandbox_router{variant}_key"),
            vec![sandbox_router_1000(extra)?],
            key.clone(),
        ));
        out.push((
            format!("sandbox_router{variant}_no_key"),
            vec![sandbox_router_1000(extra)?],
            no_key.clone(),
        ));
    }
    out.push(("all_four".to_owned(), all_four()?, vec![]));
    // The bundle: all four policies in one filter, idle (default configs, as the single rows)
    // and active (a rate-limit rule that matches, a routed key), each next to four single
    // filters configured alike.
    out.push(("meshguard".to_owned(), vec![bundle(false)?], vec![]));
    // Idle with the sandbox router's lean config of envoy-configs/sandbox-outbound.yaml (the
    // listener strips client routing headers): two host calls fewer per request.
    out.push((
        "meshguard_lean".to_owned(),
        vec![Filter::meshguard("meshguard")?.config(
            r#"{"rate_limit": {}, "load_shed": {}, "circuit_breaker": {},
                "sandbox_router": {"strip_client_routing_headers": false, "clear_route_cache": false}}"#,
        )],
        vec![],
    ));
    out.push((
        "all_four_active".to_owned(),
        vec![
            Filter::meshguard("rate_limit")?.config(RATE_LIMIT_ACTIVE),
            Filter::meshguard("load_shed")?,
            sandbox_router_1000("")?,
            Filter::meshguard("circuit_breaker")?,
        ],
        key_headers(),
    ));
    out.push((
        "meshguard_active".to_owned(),
        vec![bundle(true)?],
        key_headers(),
    ));
    Ok(out)
}

/// Request headers of the rows that send a routing key (and a user for the rate limit).
fn key_headers() -> Vec<String> {
    vec![
        "Host: svc".to_owned(),
        "baggage: sandbox=dev-500".to_owned(),
        "x-user: u1".to_owned(),
    ]
}

pub fn run(opts: &Opts) -> Result<()> {
    let rounds: usize = opts.get("rounds", 7)?;
    let secs: u64 = opts.get("duration", 3)?;
    let connections: u32 = opts.get("connections", 16)?;
    let only: String = opts.get("only", String::new())?;
    let duration = Duration::from_secs(secs);

    let mut envoys = Vec::new();
    for (name, filters, headers) in configs()? {
        // `--only a,b`: those rows, with their anchors.
        let anchor = matches!(name.as_str(), "no_filter" | "noop_wasm" | "noop_wasm_key");
        if !only.is_empty() && !anchor && !only.split(',').any(|o| o == name) {
            continue;
        }
        // Envoy pinned to core 0; wrk runs on core 1.
        envoys.push((name, bench::start_direct_response_envoy(filters)?, headers));
    }
    eprintln!(
        "overhead: {} configs x {rounds} rounds x {secs}s, wrk -t1 -c{connections}, Envoy --concurrency 1",
        envoys.len()
    );
    // Warm-up: V8 tiers up hot Wasm functions; measure steady state.
    for (_, envoy, headers) in &envoys {
        bench::measure_envoy_cpu_with_headers(envoy, connections, Duration::from_secs(1), headers)?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); envoys.len()];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); envoys.len()];
    for round in 0..rounds {
        // Rotate the order each round so no config always runs first or last.
        for k in 0..envoys.len() {
            let i = (k + round) % envoys.len();
            let (name, envoy, headers) = &envoys[i];
            let sample =
                bench::measure_envoy_cpu_with_headers(envoy, connections, duration, headers)
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            samples[i].push(sample.cpu_us_per_req);
            rps[i].push(sample.rps);
        }
        eprintln!("  round {}/{rounds} done", round + 1);
    }
    // The key rows must have measured the routed path (a table hit), not a fallback.
    for (name, envoy, _) in &envoys {
        if (name.starts_with("sandbox_router")
            && name.ends_with("_key")
            && !name.ends_with("_no_key"))
            || name.ends_with("_active")
        {
            let routed = envoy.stat("wasmcustom.meshguard.sandbox_router.routed")?;
            let fallbacks: u64 = envoy
                .stats()?
                .iter()
                .filter(|(k, _)| k.starts_with("wasmcustom.meshguard.sandbox_router.fallback."))
                .map(|(_, v)| v)
                .sum();
            anyhow::ensure!(
                routed > 0 && fallbacks == 0,
                "{name}: {routed} routed, {fallbacks} fallbacks"
            );
        }
    }
    // Each row next to its anchor from the same run: the no-op Wasm filter with the same
    // request headers (`noop_wasm_key` for rows sending a routing key).
    let index_of = |wanted: &str| envoys.iter().position(|(n, _, _)| n == wanted);
    let noop_i = index_of("noop_wasm").unwrap_or(0);
    let noop_key_i = index_of("noop_wasm_key").unwrap_or(noop_i);
    let noop = bench::median_min_max(&samples[noop_i]).0;
    let noop_key = bench::median_min_max(&samples[noop_key_i]).0;
    let rows: Vec<Row> = envoys
        .iter()
        .enumerate()
        .map(|(i, (name, _, headers))| {
            let (med, min, max) = bench::median_min_max(&samples[i]);
            let (rps_med, _, _) = bench::median_min_max(&rps[i]);
            let (anchor, anchor_i) = if headers.iter().any(|h| h.starts_with("baggage")) {
                (noop_key, noop_key_i)
            } else {
                (noop, noop_i)
            };
            // Paired: the ratio to the anchor within each round (measured seconds apart),
            // then the median over rounds; machine load that drifts between rounds cancels.
            let paired: Vec<f64> = samples[i]
                .iter()
                .zip(&samples[anchor_i])
                .map(|(s, a)| s / a)
                .collect();
            let (paired, _, _) = bench::median_min_max(&paired);
            Row::new("overhead", name)
                .field("cpu_us_per_req", format!("{med:.2}"))
                .field("min", format!("{min:.2}"))
                .field("max", format!("{max:.2}"))
                .field("added_us_vs_noop", format!("{:.2}", med - anchor))
                .field("ratio_vs_noop", format!("{:.3}", med / anchor))
                .field("paired_ratio", format!("{paired:.3}"))
                .field("rps", format!("{rps_med:.0}"))
                .field("rounds", rounds)
        })
        .collect();
    bench::print_rows(&rows);
    Ok(())
}
