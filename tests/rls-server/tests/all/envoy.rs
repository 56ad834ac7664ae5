//! Interop with stock Envoy 1.40: its native `envoy.filters.http.ratelimit` filter, as the RLS
//! client, enforces the limits this server answers.

use std::net::SocketAddr;

use meshguard_rls::{Limits, RlsServer, Storage};
use meshguard_tests::{Envoy, EnvoyConfig, Listener, Response, h1};
use meshguard_upstream::{Upstream, UpstreamConfig};
use serde_json::{Value, json};

use crate::support::*;

/// The RLS cluster: h2c to the server.
fn rls_cluster(addr: SocketAddr) -> Value {
    json!({
        "name": "rls",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "rls", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}
        }}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
    })
}

/// A listener with the native ratelimit filter for `domain`, routing to `upstream` with two
/// rate-limit actions: descriptor 0 `generic_key=e2e`, descriptor 1 `user=<x-user>` (absent
/// without the header).
fn listener(domain: &str) -> Listener {
    let mut listener = Listener::new("rl");
    listener.native_filters.push(json!({
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": domain,
            // Generous: a debug-build server on a shared 2-core machine; and an error must
            // show (500), not pass as allowed.
            "timeout": "5s",
            "failure_mode_deny": true,
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": "rls"}},
                "transport_api_version": "V3",
            },
        },
    }));
    listener.route_config = json!({
        "name": "local",
        "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {
                "cluster": "upstream", "timeout": "30s",
                "rate_limits": [
                    {"actions": [{"generic_key": {"descriptor_value": "e2e"}}]},
                    {"actions": [{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}]},
                ],
            }}],
        }],
    });
    listener
}

async fn start_envoy(upstream: SocketAddr, rls: SocketAddr, domain: &str) -> Envoy {
    let mut config = EnvoyConfig::new(Some(upstream))
        .concurrency(1)
        .listener(listener(domain));
    config.clusters.push(rls_cluster(rls));
    tokio::task::spawn_blocking(move || Envoy::start(&config))
        .await
        .unwrap()
        .unwrap()
}

async fn get(envoy: &Envoy, user: Option<&str>) -> Response {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"x")];
    if let Some(user) = user {
        headers.push((b"x-user", user.as_bytes()));
    }
    tokio::time::timeout(
        WAIT,
        h1::exchange(envoy.listener("rl"), &h1::head("GET", "/", &headers)),
    )
    .await
    .unwrap()
    .unwrap()
}

const PER_USER: &str = r#"
- namespace: e2e
  name: per-user
  max_value: 2
  seconds: 60
  conditions: ["descriptors[0]['generic_key'] == 'e2e'"]
  variables: ["descriptors[1]['user']"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ratelimit_filter_enforces_per_user_limits() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let rls = RlsServer::start(Limits::from_yaml(PER_USER).unwrap(), Storage::memory())
        .await
        .unwrap();
    let envoy = start_envoy(upstream.addr(), rls.addr(), "e2e").await;

    let mut alice = Vec::new();
    for _ in 0..3 {
        let r = get(&envoy, Some("alice")).await;
        alice.push((
            r.status,
            r.header_str("x-ratelimit-remaining"),
            r.header_str("x-envoy-ratelimited"),
        ));
        // Envoy builds the draft-03 headers from the descriptor statuses.
        let limit = r.header_str("x-ratelimit-limit").unwrap_or_default();
        assert!(limit.starts_with("2, 2;w=60"), "{limit:?}");
        let reset: u64 = r.header_str("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
    }
    assert_eq!(
        alice,
        [
            (200, Some("1".into()), None),
            (200, Some("0".into()), None),
            (429, Some("0".into()), Some("true".into())),
        ]
    );
    // Bob has his own counter.
    assert_eq!(get(&envoy, Some("bob")).await.status, 200);
    // Without x-user Envoy sends only descriptor 0, the limit does not apply.
    for _ in 0..3 {
        assert_eq!(get(&envoy, None).await.status, 200);
    }

    let stats = envoy.stats().unwrap();
    let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
    assert_eq!(stat("cluster.upstream.ratelimit.ok"), 6, "{stats:?}");
    assert_eq!(stat("cluster.upstream.ratelimit.over_limit"), 1);
    assert_eq!(stat("cluster.upstream.ratelimit.error"), 0);
    let s = rls.stats();
    assert_eq!((s.requests, s.ok, s.over_limit), (7, 6, 1), "{s:?}");
    assert_eq!(upstream.stats().received, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_share_one_limit_through_two_servers_on_redis() {
    let shared = "- {namespace: fleet, max_value: 5, seconds: 60, conditions: [\"descriptors[0].generic_key == 'e2e'\"], variables: []}";
    let redis = Backing::redis();
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let rls_a = server(shared, &redis).await;
    let rls_b = server(shared, &redis).await;
    let envoy_a = start_envoy(upstream.addr(), rls_a.addr(), "fleet").await;
    let envoy_b = start_envoy(upstream.addr(), rls_b.addr(), "fleet").await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let envoy = if i % 2 == 0 { &envoy_a } else { &envoy_b };
        statuses.push(get(envoy, None).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
    let (a, b) = (rls_a.stats(), rls_b.stats());
    assert_eq!((a.ok, a.over_limit, b.ok, b.over_limit), (3, 2, 2, 3));
    assert_eq!(upstream.stats().received, 5);
}
