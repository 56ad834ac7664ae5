//! Spec → Envoy bootstrap and Istio manifests, with meshguard's defaults filled in.

use serde_json::{Value, json};

use crate::spec::{Dependency, Mode, Spec};

/// Header the sandbox router sets to pick a sandbox cluster (routes use `cluster_header`); the
/// filter's default `routing_header`.
pub const SANDBOX_ROUTE_HEADER: &str = "x-meshguard-sandbox-cluster";
/// Cluster name of the sandbox registry in the Envoy bootstrap.
pub const SANDBOX_REGISTRY_CLUSTER: &str = "sandbox_registry";
/// The ORIGINAL_DST cluster for `host:port` sandbox targets.
pub const SANDBOX_ORIGINAL_DST: &str = "meshguard_sandbox_original_dst";

/// Cluster Envoy fetches remote modules through.
pub const MODULES_CLUSTER: &str = "meshguard_modules";

fn code(spec: &Spec, filter: &str) -> Value {
    match &spec.modules.remote {
        None => json!({"local": {"filename": format!("{}/{filter}.wasm", spec.modules.dir)}}),
        Some(r) => {
            let sha = r
                .sha256
                .get(filter)
                .cloned()
                .unwrap_or_else(|| format!("${{{}_SHA256}}", filter.to_ascii_uppercase()));
            json!({"remote": {
                "http_uri": {
                    "uri": format!("{}/{filter}.wasm", r.base_url.trim_end_matches('/')),
                    "cluster": MODULES_CLUSTER,
                    "timeout": "10s",
                },
                "sha256": sha,
                // Envoy's default is one retry; a sidecar starting before the module server
                // is reachable would keep a failed filter until the next config update.
                "retry_policy": {"num_retries": 10, "retry_back_off": {"base_interval": "1s", "max_interval": "30s"}},
            }})
        }
    }
}

fn modules_cluster(spec: &Spec) -> Option<Value> {
    let r = spec.modules.remote.as_ref()?;
    let hostport = r.base_url.strip_prefix("http://")?.split('/').next()?;
    let (host, port) = hostport.rsplit_once(':')?;
    let mut c = cluster(MODULES_CLUSTER, host, port.parse().unwrap_or(0), false);
    if let Some(o) = c.as_object_mut() {
        o.remove("typed_extension_protocol_options");
    }
    if port.parse::<u16>().is_err() {
        // A `${PLACEHOLDER}` port, filled in at deploy time (proto JSON accepts quoted numbers).
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["port_value"] = json!(port);
    }
    Some(c)
}

fn wasm_filter(spec: &Spec, filter: &str, config: Value) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": filter,
                "root_id": filter,
                "vm_config": {
                    "vm_id": format!("meshguard_{filter}"),
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": code(spec, filter),
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string(),
                },
                "failure_policy": failure_policy(filter),
            },
        },
    })
}

/// Recommended `failure_policy` per filter (docs/deploy.md "Failure policy", measured in
/// `tests/tests/e2e/faults.rs`): `FAIL_RELOAD` for every meshguard filter — a crash costs the
/// crashing request and comes back with a new VM and the shared state as it was, where
/// `FAIL_OPEN` would drop the protection until restart and `FAIL_CLOSED` fail every request.
pub fn failure_policy(filter: &str) -> &'static str {
    match filter {
        "load_shed" | "circuit_breaker" | "rate_limit" | "sandbox_router" | "meshguard" => {
            "FAIL_RELOAD"
        }
        _ => "FAIL_CLOSED",
    }
}

/// Filters of one direction, in chain order: (filter name, filter config).
pub type Chain = Vec<(&'static str, Value)>;

/// The filter configs the spec asks for: (inbound chain, outbound chain).
pub fn filter_configs(spec: &Spec) -> (Chain, Chain) {
    let p = &spec.policies;
    let mut inbound = Vec::new();
    if let Some(r) = &p.rate_limit {
        let mut c = json!({
            "mode": r.mode.as_str(),
            "token_bucket": {"max_tokens": r.burst.unwrap_or(r.rps), "tokens_per_fill": r.rps, "fill_interval": "1s"},
        });
        if let Some(per) = r.per_client_rps {
            c["descriptors"] = json!([{
                "name": "per_client",
                "entries": [{"client_address": {}}],
                "token_bucket": {"max_tokens": per, "tokens_per_fill": per, "fill_interval": "1s"},
            }]);
        }
        inbound.push(("rate_limit", c));
    }
    if let Some(l) = &p.load_shed {
        let exempt: Vec<Value> = l
            .exempt_paths
            .clone()
            .unwrap_or_else(|| vec!["/healthz".into(), "/ready".into()])
            .into_iter()
            .map(|path| json!({"path": {"exact": path}}))
            .collect();
        let mut c = json!({"mode": l.mode.as_str(), "exempt": exempt});
        if let Some(h) = &l.criticality_header {
            c["criticality"] = json!({"header": h});
        }
        inbound.push(("load_shed", c));
    }
    let mut outbound = Vec::new();
    if let Some(s) = &p.sandbox_router {
        let mut c = json!({"mode": s.mode.as_str()});
        if let Some(addr) = &s.registry {
            c["registry"] = json!({
                "cluster": SANDBOX_REGISTRY_CLUSTER,
                "authority": addr,
                "path": s.registry_path.as_deref().unwrap_or("/v1/sandboxes"),
                "poll_interval": s.poll_interval.as_deref().unwrap_or("10s"),
            });
        }
        outbound.push(("sandbox_router", c));
    }
    if let Some(b) = &p.circuit_breaker {
        let mut c = json!({"mode": b.mode.as_str()});
        if let Some(n) = b.consecutive_failures {
            c["trip"] = json!({"consecutive_failures": n});
        }
        if let Some(d) = &b.open_for {
            c["open"] = json!({"base_duration": d});
        }
        if p.sandbox_router.is_some() {
            // After the sandbox router reroutes, Envoy still names the old route's cluster in
            // `xds.cluster_name`; its routing header names the cluster the request goes to
            // (client copies are stripped), so a failing sandbox trips its own breaker, not
            // the baseline's.
            c["cluster_header"] = json!("x-meshguard-sandbox-cluster");
        }
        outbound.push(("circuit_breaker", c));
    }
    (inbound, outbound)
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    })
}

/// The access-log line of meshguard sidecars: Envoy's usual fields, then each meshguard filter's
/// decision for the request (filter state `wasm.meshguard.<filter>`, `-` when the filter let the
/// request through untouched) and the response code details (`meshguard_*` when a meshguard
/// filter answered). See docs/observability.md.
pub const ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% grpc=%GRPC_STATUS_NUMBER% \
upstream=%UPSTREAM_CLUSTER% %DURATION%ms \
load_shed=\"%FILTER_STATE(wasm.meshguard.load_shed:PLAIN)%\" \
circuit_breaker=\"%FILTER_STATE(wasm.meshguard.circuit_breaker:PLAIN)%\" \
rate_limit=\"%FILTER_STATE(wasm.meshguard.rate_limit:PLAIN)%\" \
sandbox_router=\"%FILTER_STATE(wasm.meshguard.sandbox_router:PLAIN)%\" \
request_id=%REQ(X-REQUEST-ID)%\n";

fn listener(name: &str, bind: &str, port: u16, route_config: Value, filters: Vec<Value>) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": bind, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "access_log": [{
                    "name": "envoy.access_loggers.stdout",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                        "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                    },
                }],
                "route_config": route_config,
                "http_filters": filters,
            },
        }]}],
    })
}

fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

fn cluster(name: &str, host: &str, port: u16, http2: bool) -> Value {
    let protocol = if http2 {
        json!({"explicit_http_config": {"http2_protocol_options": {}}})
    } else {
        json!({"use_downstream_protocol_config": {}})
    };
    let mut protocol = protocol;
    protocol["@type"] =
        json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    json!({
        "name": name,
        "type": if is_ip(host) { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": host, "port_value": port}}
        }}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": protocol,
        },
    })
}

fn split_address(d: &Dependency) -> (String, u16) {
    let (h, p) = d.address.rsplit_once(':').unwrap_or((&d.address, "80"));
    (h.to_owned(), p.parse().unwrap_or(80))
}

/// `observability/stats_tags.yaml`: Envoy's stats tags that turn meshguard's per-class,
/// per-cluster, per-rule and per-sandbox stats into Prometheus labels (docs/observability.md).
const STATS_TAGS_YAML: &str = include_str!("../../../observability/stats_tags.yaml");

/// The `stats_config` of `STATS_TAGS_YAML` (`null` if it does not parse, which the generator
/// test catches).
fn stats_config() -> Value {
    serde_norway::from_str::<Value>(STATS_TAGS_YAML)
        .ok()
        .and_then(|v| v.get("stats_config").cloned())
        .unwrap_or(Value::Null)
}

/// The complete sidecar bootstrap.
pub fn envoy_bootstrap(spec: &Spec) -> Value {
    let (inbound_filters, mut outbound_filters) = filter_configs(spec);
    let sandbox = spec.policies.sandbox_router.is_some();
    for (f, c) in &mut outbound_filters {
        if *f == "sandbox_router" {
            // The outbound listener strips client routing headers natively (below).
            c["strip_client_routing_headers"] = json!(false);
        }
    }
    let mut inbound: Vec<Value> = inbound_filters
        .into_iter()
        .map(|(f, c)| wasm_filter(spec, f, c))
        .collect();
    inbound.push(router());
    let mut outbound: Vec<Value> = outbound_filters
        .into_iter()
        .map(|(f, c)| wasm_filter(spec, f, c))
        .collect();
    outbound.push(router());

    let inbound_routes = json!({
        "name": "inbound",
        "virtual_hosts": [{"name": spec.service, "domains": ["*"],
                           "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "local_service", "timeout": "15s"}}]}],
    });
    let vhosts: Vec<Value> = spec
        .dependencies
        .iter()
        .map(|d| {
            let mut routes = Vec::new();
            if sandbox {
                // Set by the sandbox router only (it strips client-supplied copies).
                routes.push(json!({
                    "match": {"prefix": "/", "headers": [{"name": SANDBOX_ROUTE_HEADER, "present_match": true}]},
                    "route": {"cluster_header": SANDBOX_ROUTE_HEADER, "timeout": "15s"},
                    "request_headers_to_remove": [SANDBOX_ROUTE_HEADER],
                }));
            }
            routes.push(json!({"match": {"prefix": "/"}, "route": {"cluster": d.name, "timeout": "15s"}}));
            json!({"name": d.name, "domains": [d.name, format!("{}:*", d.name)], "routes": routes})
        })
        .collect();
    let outbound_routes = json!({"name": "outbound", "virtual_hosts": vhosts});

    let mut clusters = vec![cluster(
        "local_service",
        &spec.service_address,
        spec.port,
        false,
    )];
    for d in &spec.dependencies {
        let (host, port) = split_address(d);
        clusters.push(cluster(&d.name, &host, port, d.grpc));
    }
    clusters.extend(modules_cluster(spec));
    if let Some(addr) = spec
        .policies
        .sandbox_router
        .as_ref()
        .and_then(|s| s.registry.as_deref())
    {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "80"));
        clusters.push(cluster(
            SANDBOX_REGISTRY_CLUSTER,
            host,
            port.parse().unwrap_or(80),
            false,
        ));
    }
    if sandbox {
        clusters.push(json!({
            "name": SANDBOX_ORIGINAL_DST,
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "1s",
            "original_dst_lb_config": {"use_http_header": true},
        }));
    }
    let mut outbound_listener = listener(
        &format!("outbound_{}", spec.service),
        &spec.bind,
        spec.outbound_port,
        outbound_routes,
        outbound,
    );
    if sandbox
        && let Some(hcm) = outbound_listener.pointer_mut("/filter_chains/0/filters/0/typed_config")
    {
        // Client-sent routing headers never reach a route or a filter: only the sandbox router
        // (from its table) picks a sandbox cluster or address.
        hcm["early_header_mutation_extensions"] = json!([{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": SANDBOX_ROUTE_HEADER}, {"remove": "x-envoy-original-dst-host"}],
            },
        }]);
    }
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": spec.admin_port}}},
        "stats_config": stats_config(),
        "static_resources": {
            "listeners": [
                listener(&format!("inbound_{}", spec.service), &spec.bind, spec.inbound_port, inbound_routes, inbound),
                outbound_listener,
            ],
            "clusters": clusters,
        },
    })
}

/// One Istio `WasmPlugin` per policy (inbound ones on the SERVER side, outbound on CLIENT).
pub fn istio_manifests(spec: &Spec, version: &str) -> Vec<Value> {
    let (inbound, mut outbound) = filter_configs(spec);
    for (f, c) in &mut outbound {
        if let ("sandbox_router", Some(addr)) = (
            *f,
            c.pointer("/registry/authority")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ) {
            // Istio names a service's cluster `outbound|<port>||<host>`.
            let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "80"));
            c["registry"]["cluster"] = json!(format!("outbound|{port}||{host}"));
        }
    }
    let tag = spec
        .modules
        .tag
        .clone()
        .unwrap_or_else(|| version.to_owned());
    let n = inbound.len();
    inbound
        .into_iter()
        .map(|f| (f, "SERVER"))
        .chain(outbound.into_iter().map(|f| (f, "CLIENT")))
        .enumerate()
        .map(|(i, ((filter, config), mode))| {
            // Earlier in the chain = higher priority (Istio orders by descending priority).
            let priority =
                100 - i32::try_from(if mode == "SERVER" { i } else { i - n }).unwrap_or(0) * 10;
            json!({
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "WasmPlugin",
                "metadata": {"name": format!("{}-{}", spec.service, filter.replace('_', "-"))},
                "spec": {
                    "selector": {"matchLabels": {"app": spec.service}},
                    "url": format!("oci://{}/{filter}:{tag}", spec.modules.oci_repository),
                    "pluginName": filter,
                    "phase": "UNSPECIFIED_PHASE",
                    "priority": priority,
                    // Istio's WasmPlugin has FAIL_RELOAD since 1.27 (older: FAIL_OPEN / FAIL_CLOSE).
                    "failStrategy": match failure_policy(filter) {
                        "FAIL_CLOSED" => "FAIL_CLOSE",
                        other => other,
                    },
                    "match": [if mode == "SERVER" {
                        json!({"mode": mode, "ports": [{"number": spec.port}]})
                    } else {
                        json!({"mode": mode})
                    }],
                    "pluginConfig": config,
                },
            })
        })
        .collect()
}

/// `mode` of the spec's policies, for the summary.
pub fn modes(spec: &Spec) -> Vec<(&'static str, Mode)> {
    let p = &spec.policies;
    let mut out = Vec::new();
    if let Some(r) = &p.rate_limit {
        out.push(("rate_limit", r.mode));
    }
    if let Some(l) = &p.load_shed {
        out.push(("load_shed", l.mode));
    }
    if let Some(s) = &p.sandbox_router {
        out.push(("sandbox_router", s.mode));
    }
    if let Some(b) = &p.circuit_breaker {
        out.push(("circuit_breaker", b.mode));
    }
    out
}
