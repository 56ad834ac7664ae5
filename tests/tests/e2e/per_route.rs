//! One filter instance, different behaviour per route, from route metadata
//! (`filter_metadata.meshguard.<filter>`): a tighter rate limit on `/checkout`, none on
//! `/healthz`, and a circuit breaker on one dependency only.

use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, h1};
use meshguard_upstream::{Upstream, UpstreamConfig};
use serde_json::{Value, json};

fn route(prefix: &str, meshguard: Value) -> Value {
    json!({
        "match": {"prefix": prefix},
        "route": {"cluster": "upstream"},
        "metadata": {"filter_metadata": {"meshguard": meshguard}},
    })
}

async fn status(envoy: &Envoy, path: &str, extra: &[(&[u8], &[u8])]) -> u16 {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"svc")];
    headers.extend_from_slice(extra);
    h1::exchange(envoy.listener("l"), &h1::head("GET", path, &headers))
        .await
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_profiles_and_off_per_route() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let config = r#"{"token_bucket": {"max_tokens": 5, "fill_interval": "1h"},
                     "profiles": {"checkout": {"token_bucket": {"max_tokens": 2, "fill_interval": "1h"}}}}"#;
    let mut l = Listener::new("l").filter(Filter::meshguard("rate_limit").unwrap().config(config));
    l.route_config = json!({"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        route("/checkout", json!({"rate_limit": "checkout"})),
        route("/healthz", json!({"rate_limit": "off"})),
        route("/", json!({})),
    ]}]});
    let cfg = EnvoyConfig::new(Some(upstream.addr())).listener(l);
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    let mut checkout = Vec::new();
    for _ in 0..3 {
        checkout.push(status(&envoy, "/checkout", &[]).await);
    }
    assert_eq!(checkout, [200, 200, 429], "the checkout profile allows 2");
    for _ in 0..10 {
        assert_eq!(
            status(&envoy, "/healthz", &[]).await,
            200,
            "off on /healthz"
        );
    }
    let mut rest = Vec::new();
    for _ in 0..6 {
        rest.push(status(&envoy, "/other", &[]).await);
    }
    assert_eq!(
        rest,
        [200, 200, 200, 200, 200, 429],
        "the top level allows 5, untouched by the others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_on_one_route_only() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let config = r#"{"per_route": {"default": "off"}, "open": {"base_duration": "60s"}}"#;
    let mut l =
        Listener::new("l").filter(Filter::meshguard("circuit_breaker").unwrap().config(config));
    l.route_config = json!({"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        route("/orders", json!({"circuit_breaker": "on"})),
        route("/", json!({})),
    ]}]});
    let cfg = EnvoyConfig::new(Some(upstream.addr())).listener(l);
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    // Failures on the unprotected route never trip anything.
    for _ in 0..8 {
        assert_eq!(
            status(&envoy, "/other", &[(b"x-upstream-status", b"503")]).await,
            503
        );
    }
    assert_eq!(upstream.stats().received, 8);
    // The protected route trips after 5 and then fails fast.
    for _ in 0..5 {
        assert_eq!(
            status(&envoy, "/orders", &[(b"x-upstream-status", b"503")]).await,
            503
        );
    }
    assert_eq!(status(&envoy, "/orders", &[]).await, 503);
    assert_eq!(
        upstream.stats().received,
        13,
        "the 14th never reached the upstream"
    );
}
