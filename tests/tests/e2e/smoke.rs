//! Every meshguard module loads into stock Envoy and serves traffic.

use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, h1};

const FILTERS: [&str; 4] = [
    "load_shed",
    "circuit_breaker",
    "rate_limit",
    "sandbox_router",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_and_the_chain_serve_a_direct_response() {
    let mut cfg = EnvoyConfig::new(None);
    for f in FILTERS {
        cfg = cfg.listener(
            Listener::new(f)
                .filter(Filter::meshguard(f).unwrap())
                .direct_response(200, "hello"),
        );
    }
    let mut all = Listener::new("all").direct_response(200, "hello");
    for f in FILTERS {
        all = all.filter(Filter::meshguard(f).unwrap());
    }
    let envoy = Envoy::start(&cfg.listener(all)).unwrap();
    for name in FILTERS.iter().chain(&["all"]) {
        let r = h1::exchange(
            envoy.listener(name),
            &h1::head("GET", "/", &[(b"host", b"x")]),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert_eq!(r.text(), "hello", "{name}");
    }
    let stats = envoy.stats().unwrap();
    assert_eq!(
        stats.get("http.all.downstream_rq_2xx"),
        Some(&1),
        "{stats:?}"
    );
}
