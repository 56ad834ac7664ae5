//! `meshguard-proxy` in stock Envoy, driven by the `proxy_probe` fixture: gRPC-aware local
//! replies with response code details, all values of a repeated header, `clear_route_cache`,
//! and metrics aggregated across workers.

use std::time::Duration;

use meshguard_tests::h2::RequestBody;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, envoy, h1, h2, paths};
use meshguard_upstream::grpc::{EchoClient, EchoRequest};
use meshguard_upstream::{Upstream, UpstreamConfig};
use serde_json::json;

struct Rig {
    main: Upstream,
    other: Upstream,
    envoy: Envoy,
    log: tempfile::NamedTempFile,
}

async fn rig() -> Rig {
    let main = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let other = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let probe = Filter {
        name: "probe".into(),
        wasm: paths::wasm("proxy_probe").unwrap(),
        vm_id: "probe".into(),
        config: String::new(),
        failure_policy: None,
    };
    let mut listener = Listener::new("probe").filter(probe).access_log(
        log.path(),
        "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %GRPC_STATUS_NUMBER%\n",
    );
    // x-route-to: other → cluster `other`; everything else → `upstream`.
    listener.route_config = json!({
        "name": "local",
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/", "headers": [{"name": "x-route-to", "string_match": {"exact": "other"}}]},
             "route": {"cluster": "other"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
        ]}],
    });
    let mut cfg = EnvoyConfig::new(Some(main.addr())).listener(listener);
    cfg.clusters.push(envoy::cluster("other", other.addr()));
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    Rig {
        main,
        other,
        envoy,
        log,
    }
}

fn get(extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"probe.test")];
    headers.extend_from_slice(extra);
    h1::head("GET", "/", &headers)
}

/// Waits until the access log has `n` lines (Envoy flushes it asynchronously).
fn access_log_lines(rig: &Rig, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(rig.log.path()).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_grpc_aware_and_name_the_filter() {
    let rig = rig().await;
    let addr = rig.envoy.listener("probe");

    let r = h1::exchange(addr, &get(&[(b"x-probe-reject", b"429")]))
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.text(), "probe rejected");
    assert_eq!(r.header_str("retry-after").as_deref(), Some("2"));
    assert_eq!(r.header_str("content-type").as_deref(), Some("text/plain"));
    assert!(r.header("grpc-status").is_none());

    // gRPC: a trailers-only response (grpc-status in the headers frame), HTTP 200.
    let r = h2::request(
        addr,
        "POST",
        "/meshguard.test.v1.Echo/Unary",
        &[
            ("content-type", b"application/grpc"),
            ("te", b"trailers"),
            ("x-probe-reject", b"503"),
        ],
        RequestBody {
            chunks: vec![vec![0, 0, 0, 0, 0]],
            trailers: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header_str("grpc-status").as_deref(), Some("14"), "{r:?}");
    assert_eq!(
        r.header_str("grpc-message").as_deref(),
        Some("probe rejected")
    );
    assert!(r.header("retry-after").is_none(), "{r:?}");
    assert!(r.body.is_empty() && r.trailers.is_empty(), "{r:?}");

    // A real gRPC client sees UNAVAILABLE with the message, and RESOURCE_EXHAUSTED for 429.
    let mut client = EchoClient::connect(addr).await.unwrap();
    for (status, code) in [
        ("503", tonic::Code::Unavailable),
        ("429", tonic::Code::ResourceExhausted),
    ] {
        let mut req = tonic::Request::new(EchoRequest::default());
        req.metadata_mut()
            .insert("x-probe-reject", status.parse().unwrap());
        let err = client.unary(req).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (code, "probe rejected"));
    }

    // The access log names the filter and reason; nothing reached the upstream.
    let lines = access_log_lines(&rig, 4);
    assert_eq!(
        lines,
        vec![
            "429 meshguard_probe{rejected} -",
            "200 meshguard_probe{rejected} 14",
            "200 meshguard_probe{rejected} 14",
            "200 meshguard_probe{rejected} 8",
        ],
    );
    assert_eq!(rig.main.stats().received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_values_of_a_repeated_header_are_read() {
    let rig = rig().await;
    let r = h1::exchange(
        rig.envoy.listener("probe"),
        &get(&[
            (b"x-probe-values", b"baggage"),
            (b"baggage", b"sandbox=dev-1"),
            (b"Baggage", b"user=a;p=1"),
            (b"baggage", b"bin=\xff\x80"),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(
        r.header_str("x-probe-values").as_deref(),
        Some(r"sandbox=dev-1|user=a;p=1|bin=\xff\x80"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_follows_a_changed_request_header() {
    // What Envoy 1.40 does (checked here): a request-header change made by a Wasm filter in
    // on_http_request_headers already clears the route cache, so the route is recomputed even
    // without `clear_route_cache`; calling the foreign function as well is accepted (OK status,
    // no warning) and keeps filters correct on hosts that do not clear it themselves.
    let rig = rig().await;
    let addr = rig.envoy.listener("probe");
    let r = h1::exchange(addr, &get(&[(b"x-probe-route-keep", b"other")]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        (rig.main.stats().received, rig.other.stats().received),
        (0, 1)
    );
    let r = h1::exchange(addr, &get(&[(b"x-probe-route", b"other")]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        (rig.main.stats().received, rig.other.stats().received),
        (0, 2)
    );
    assert!(
        r.text().contains(r#"["x-route-to","other"]"#),
        "{}",
        r.text()
    );
    let r = h1::exchange(addr, &get(&[])).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        (rig.main.stats().received, rig.other.stats().received),
        (1, 2)
    );
    assert!(
        !rig.envoy.log().contains("clear_route_cache:"),
        "{}",
        rig.envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_aggregate_across_workers() {
    let rig = rig().await;
    let addr = rig.envoy.listener("probe");
    // Separate connections spread over Envoy's two workers.
    for _ in 0..20 {
        h1::exchange(addr, &get(&[(b"x-probe-gauge", b"42")]))
            .await
            .unwrap();
    }
    let stats = rig
        .envoy
        .wait_for_stats(Duration::from_secs(10), |s| {
            s.get("wasmcustom.meshguard.probe.requests") == Some(&20)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {:?}",
                rig.envoy
                    .stats()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k.contains("probe"))
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(
        stats.get("wasmcustom.meshguard.probe.gauge"),
        Some(&42),
        "{stats:?}"
    );
    // On /stats/prometheus the internal namespace is dropped: `meshguard_probe_requests`.
    let (_, prom) = meshguard_tests::admin::get(rig.envoy.admin(), "/stats/prometheus").unwrap();
    assert!(
        prom.lines()
            .any(|l| l.starts_with("meshguard_probe_requests") && l.ends_with(" 20")),
        "{prom}"
    );
}
