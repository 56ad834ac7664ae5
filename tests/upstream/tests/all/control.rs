//! Control endpoints under `/_upstream/`.

use http::Method;
use meshguard_upstream::control::{CONFIG_PATH, STATS_PATH};
use meshguard_upstream::{Latency, Stats, UpstreamConfig};

use crate::support::*;

async fn call(up: &meshguard_upstream::Upstream, method: Method, path: &str, body: &str) -> Reply {
    let request = request(Proto::H1, up.addr(), method, path)
        .body(full(body.to_owned()))
        .unwrap();
    exchange(Proto::H1, up.addr(), request).await
}

#[tokio::test]
async fn stats_and_config_over_http() {
    let up = start(UpstreamConfig::default()).await;
    get(Proto::H1, up.addr(), "/", &[]).await;
    get(Proto::H2, up.addr(), "/", &[("x-upstream-status", "418")]).await;
    drained(&up).await;

    let reply = call(&up, Method::GET, STATS_PATH, "").await;
    assert_eq!(reply.status, 200);
    let stats: Stats = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(stats, up.stats());
    assert_eq!((stats.received, stats.completed), (2, 2));
    assert_eq!((stats.statuses[&200], stats.statuses[&418]), (1, 1));

    let reply = call(
        &up,
        Method::PUT,
        CONFIG_PATH,
        r#"{"latency":{"fixed":{"ms":5}},"seed":3}"#,
    )
    .await;
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    assert_eq!(up.config().latency, Latency::Fixed { ms: 5 });
    let reply = call(&up, Method::GET, CONFIG_PATH, "").await;
    let config: UpstreamConfig = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(config, up.config());

    // Invalid configs are refused and the old one stays.
    for bad in [
        r#"{"latency":{"fixed":{"ms":5}},"bogus":1}"#,
        r#"{"failure":{"rate":2}}"#,
        "nope",
    ] {
        let reply = call(&up, Method::PUT, CONFIG_PATH, bad).await;
        assert_eq!(reply.status, 400, "{bad}");
    }
    assert_eq!(up.config(), config);

    assert_eq!(call(&up, Method::POST, STATS_PATH, "").await.status, 405);
    assert_eq!(
        call(&up, Method::GET, "/_upstream/other", "").await.status,
        404
    );
    assert_eq!(call(&up, Method::DELETE, STATS_PATH, "").await.status, 204);
    // Control requests are never counted.
    assert_eq!(up.stats(), Stats::default());
}
