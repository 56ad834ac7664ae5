//! sandbox_router in stock Envoy 1.40: a baseline and two sandbox upstreams of service `b`, a
//! propagating app as service `a`, a registry, an `ORIGINAL_DST` cluster, edge mode, gRPC.
//!
//! The outbound route config is the one `docs/sandbox-router.md` ships: per virtual host, a
//! `cluster_header` route on the routing header first (which also removes that header before
//! the request leaves), then the baseline route.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, envoy, h1};
use meshguard_upstream::grpc::{EchoClient, EchoRequest};
use meshguard_upstream::{Upstream, UpstreamConfig};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

const ROUTING: &str = "x-meshguard-sandbox-cluster";
const M: &str = "wasmcustom.meshguard.sandbox_router.";

type Body = Full<Bytes>;

/// A tiny HTTP/1.1 server on a free loopback port; `handle` answers each request.
async fn serve<F, Fut>(handle: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// The sandbox registry: a JSON document with an ETag; a matching `if-none-match` gets 304.
#[derive(Clone, Default)]
struct Registry {
    doc: Arc<Mutex<(String, String)>>,
    /// (200s, 304s) answered.
    answers: Arc<Mutex<(u32, u32)>>,
}

impl Registry {
    fn set(&self, etag: &str, body: &str) {
        *self.doc.lock().unwrap() = (etag.into(), body.into());
    }

    fn answers(&self) -> (u32, u32) {
        *self.answers.lock().unwrap()
    }

    async fn start(&self) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let reg = self.clone();
        serve(move |req| {
            let reg = reg.clone();
            async move {
                let (etag, body) = reg.doc.lock().unwrap().clone();
                let inm = req
                    .headers()
                    .get("if-none-match")
                    .map(|v| v.as_bytes().to_vec());
                let mut answers = reg.answers.lock().unwrap();
                let builder = http::Response::builder().header("etag", &etag);
                if inm.as_deref() == Some(etag.as_bytes()) {
                    answers.1 += 1;
                    builder.status(304).body(Body::default()).unwrap()
                } else {
                    answers.0 += 1;
                    builder
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                        .unwrap()
                }
            }
        })
        .await
    }
}

/// Service `a`: for each inbound request, calls service `b` through Envoy's outbound listener
/// with the inbound `baggage` copied (what OpenTelemetry does), and returns b's answer with
/// the `x-meshguard-sandbox` it got as `x-b-sandbox`.
async fn start_app(
    outbound: Arc<OnceLock<SocketAddr>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    serve(move |req| {
        let outbound = Arc::clone(&outbound);
        async move {
            let addr = *outbound.get().expect("envoy started");
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut call = http::Request::builder().uri("/from-a").header("host", "b");
            for v in req.headers().get_all("baggage") {
                call = call.header("baggage", v);
            }
            let resp = sender
                .send_request(call.body(Body::default()).unwrap())
                .await
                .unwrap();
            let sandbox = resp.headers().get("x-meshguard-sandbox").cloned();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let mut out = http::Response::builder().status(status);
            if let Some(s) = sandbox {
                out = out.header("x-b-sandbox", s);
            }
            out.body(Body::from(body)).unwrap()
        }
    })
    .await
}

fn sandbox_route() -> Value {
    json!({
        "match": {"prefix": "/", "headers": [{"name": ROUTING, "present_match": true}]},
        "route": {"cluster_header": ROUTING, "timeout": "30s"},
        "request_headers_to_remove": [ROUTING],
    })
}

/// Outbound routes: host `a` → cluster `a`, anything else → `b`; sandbox route first in each.
fn route_config() -> Value {
    let vhost = |name: &str, domains: Value| {
        json!({"name": name, "domains": domains, "routes": [
            sandbox_route(),
            {"match": {"prefix": "/"}, "route": {"cluster": name, "timeout": "30s"}},
        ]})
    };
    json!({"name": "outbound", "virtual_hosts": [vhost("a", json!(["a"])), vhost("b", json!(["*"]))]})
}

fn original_dst_cluster() -> Value {
    json!({
        "name": "meshguard_sandbox_original_dst",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "1s",
        "original_dst_lb_config": {"use_http_header": true},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {},
            },
        },
    })
}

struct Rig {
    b: Upstream,
    b_dev_1: Upstream,
    b_dev_2: Upstream,
    dev_3: Upstream,
    registry: Registry,
    envoy: Envoy,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Rig {
    /// (baseline, dev-1, dev-2, dev-3) requests received.
    fn received(&self) -> [u64; 4] {
        [&self.b, &self.b_dev_1, &self.b_dev_2, &self.dev_3].map(|u| u.stats().received)
    }
}

const POLL: Duration = Duration::from_secs(1);

async fn rig(registry_doc: &str) -> Rig {
    let b = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let b_dev_1 = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let b_dev_2 = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let dev_3 = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let registry = Registry::default();
    registry.set("\"r1\"", registry_doc);
    let (registry_addr, registry_task) = registry.start().await;
    let outbound = Arc::new(OnceLock::new());
    let (app, app_task) = start_app(Arc::clone(&outbound)).await;

    let routes = format!(
        r#""routes": [{{"key": "dev-1", "service": "b", "cluster": "b_dev_1"}},
                      {{"key": "dev-2", "service": "b", "cluster": "b_dev_2"}},
                      {{"key": "dev-3", "service": "b", "address": "{}"}}]"#,
        dev_3.addr()
    );
    let out = format!(
        r#"{{{routes}, "response_header": true,
            "registry": {{"cluster": "registry", "path": "/v1/sandboxes", "poll_interval": "1s", "timeout": "500ms"}}}}"#
    );
    let edge = format!(
        r#"{{{routes}, "edge": {{"trusted_source_cidrs": ["10.0.0.0/8"],
                                 "trusted_header": {{"name": "x-meshguard-trusted", "value": "edge-ok"}}}}}}"#
    );
    let mut out_listener =
        Listener::new("out").filter(Filter::meshguard("sandbox_router").unwrap().config(out));
    out_listener.route_config = route_config();
    let mut edge_listener = Listener::new("edge").filter(
        Filter::meshguard("sandbox_router")
            .unwrap()
            .vm_id("meshguard_sandbox_router_edge")
            .config(edge),
    );
    edge_listener.route_config = route_config();
    // The lean set-up of envoy-configs/sandbox-outbound.yaml: the listener strips client routing
    // headers natively, and the filter neither checks them nor calls clear_route_cache.
    let lean = format!(
        r#"{{{routes}, "strip_client_routing_headers": false, "clear_route_cache": false}}"#
    );
    let mut lean_listener = Listener::new("lean").filter(
        Filter::meshguard("sandbox_router")
            .unwrap()
            .vm_id("meshguard_sandbox_router_lean")
            .config(lean),
    );
    lean_listener.route_config = route_config();
    lean_listener.hcm_extra.insert(
        "early_header_mutation_extensions".into(),
        json!([{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": ROUTING}, {"remove": "x-envoy-original-dst-host"}],
            },
        }]),
    );
    let mut cfg = EnvoyConfig::new(None)
        .concurrency(2)
        .listener(out_listener)
        .listener(edge_listener)
        .listener(lean_listener);
    cfg.clusters = vec![
        envoy::cluster("a", app),
        envoy::cluster("b", b.addr()),
        envoy::cluster("b_dev_1", b_dev_1.addr()),
        envoy::cluster("b_dev_2", b_dev_2.addr()),
        envoy::cluster("registry", registry_addr),
        original_dst_cluster(),
    ];
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    outbound.set(envoy.listener("out")).unwrap();
    Rig {
        b,
        b_dev_1,
        b_dev_2,
        dev_3,
        registry,
        envoy,
        _tasks: vec![registry_task, app_task],
    }
}

/// GET / on `listener` with `host` and extra headers (a new connection each time, so requests
/// spread over Envoy's workers).
async fn get(addr: SocketAddr, host: &str, extra: &[(&str, &str)]) -> meshguard_tests::Response {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", host.as_bytes())];
    headers.extend(extra.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    h1::exchange(addr, &h1::head("GET", "/", &headers))
        .await
        .unwrap()
}

/// Values of a header in the upstream's echo document.
fn echoed(r: &meshguard_tests::Response, name: &str) -> Vec<String> {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}", r.text()));
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap().to_owned())
        .collect()
}

/// Which upstream answered a request: the one whose count went up.
async fn which(
    rig: &Rig,
    host: &str,
    extra: &[(&str, &str)],
) -> (usize, meshguard_tests::Response) {
    let before = rig.received();
    let r = get(rig.envoy.listener("out"), host, extra).await;
    assert_eq!(r.status, 200, "{r:?}");
    let after = rig.received();
    let moved: Vec<usize> = (0..4).filter(|i| after[*i] != before[*i]).collect();
    assert_eq!(moved.len(), 1, "{before:?} -> {after:?}");
    (moved[0], r)
}

const BASELINE: usize = 0;
const DEV_1: usize = 1;
const DEV_2: usize = 2;
const DEV_3: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_route_to_their_sandbox_and_the_rest_to_the_baseline() {
    let rig = rig("[]").await;
    for _ in 0..4 {
        let (to, r) = which(&rig, "b", &[("baggage", "user=ana,sandbox=dev-1;p=1")]).await;
        assert_eq!(to, DEV_1);
        assert_eq!(
            r.header_str("x-meshguard-sandbox").as_deref(),
            Some("dev-1")
        );
        // The cluster_header route removes the routing header before the request leaves;
        // baggage goes on untouched.
        assert!(echoed(&r, ROUTING).is_empty(), "{}", r.text());
        assert_eq!(echoed(&r, "baggage"), ["user=ana,sandbox=dev-1;p=1"]);
        let (to, _) = which(&rig, "b", &[("baggage", "sandbox=dev-2")]).await;
        assert_eq!(to, DEV_2);
        // Every `baggage` header is read (the key is in the second one; the filter reads
        // Envoy's `request.headers.baggage`, which joins repeated headers).
        let (to, r) = which(
            &rig,
            "b",
            &[("baggage", "user=ana"), ("baggage", "sandbox=dev-2")],
        )
        .await;
        assert_eq!(to, DEV_2);
        assert_eq!(echoed(&r, "baggage"), ["user=ana", "sandbox=dev-2"]);
        // A key in the first header decides (the first member wins), read with one call.
        let (to, _) = which(
            &rig,
            "b",
            &[("baggage", "sandbox=dev-1"), ("baggage", "sandbox=dev-2")],
        )
        .await;
        assert_eq!(to, DEV_1);
        for extra in [
            &[][..],
            &[("baggage", "sandbox=dev-9")],
            &[("baggage", "sandbox=not valid")],
        ] {
            let (to, r) = which(&rig, "b", extra).await;
            assert_eq!(to, BASELINE, "{extra:?}");
            assert!(r.header("x-meshguard-sandbox").is_none());
        }
    }
    rig.envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get(&format!("{M}routed")) == Some(&16)
                && s.get(&format!("{M}routed.dev-1")) == Some(&8)
                && s.get(&format!("{M}fallback.no_entry")) == Some(&4)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_target_goes_through_the_original_dst_cluster() {
    let rig = rig("[]").await;
    let (to, r) = which(&rig, "b", &[("baggage", "sandbox=dev-3")]).await;
    assert_eq!(to, DEV_3);
    assert_eq!(
        echoed(&r, "x-envoy-original-dst-host"),
        [rig.dev_3.addr().to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_routing_header_cannot_pick_a_cluster() {
    let rig = rig("[]").await;
    let dev_3 = rig.dev_3.addr().to_string();
    let spoofs: [&[(&str, &str)]; 5] = [
        &[(ROUTING, "b_dev_1")],
        &[(ROUTING, "registry")],
        &[
            (ROUTING, "meshguard_sandbox_original_dst"),
            ("x-envoy-original-dst-host", &dev_3),
        ],
        &[("x-envoy-original-dst-host", &dev_3)],
        // A valid key does not help: the route came from the client's header.
        &[(ROUTING, "b_dev_1"), ("baggage", "sandbox=dev-2")],
    ];
    for extra in spoofs {
        let (to, r) = which(&rig, "b", extra).await;
        assert_eq!(to, BASELINE, "{extra:?}");
        assert!(
            echoed(&r, ROUTING).is_empty() && echoed(&r, "x-envoy-original-dst-host").is_empty()
        );
    }
    rig.envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get(&format!("{M}client_routing_headers_removed")) == Some(&5)
                && s.get(&format!("{M}fallback.no_service")) == Some(&1)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_setup_routes_and_still_ignores_client_routing_headers() {
    // Listener strips the routing headers natively; the filter reads only the key sources and
    // does not call clear_route_cache (Envoy 1.40 recomputes the route after the header change).
    let rig = rig("[]").await;
    let lean = rig.envoy.listener("lean");
    let dev_3 = rig.dev_3.addr().to_string();
    let cases: [(&[(&str, &str)], usize); 6] = [
        (&[("baggage", "sandbox=dev-1")], DEV_1),
        (&[("baggage", "sandbox=dev-3")], DEV_3),
        (&[], BASELINE),
        (&[(ROUTING, "b_dev_1")], BASELINE),
        (
            &[
                ("x-envoy-original-dst-host", &dev_3),
                (ROUTING, "meshguard_sandbox_original_dst"),
            ],
            BASELINE,
        ),
        (&[(ROUTING, "b_dev_2"), ("baggage", "sandbox=dev-1")], DEV_1),
    ];
    for (extra, want) in cases {
        let before = rig.received();
        let r = get(lean, "b", extra).await;
        assert_eq!(r.status, 200, "{extra:?}: {r:?}");
        let after = rig.received();
        let moved: Vec<usize> = (0..4).filter(|i| after[*i] != before[*i]).collect();
        assert_eq!(moved, [want], "{extra:?}");
        assert!(echoed(&r, ROUTING).is_empty(), "{extra:?}");
        if want == BASELINE {
            assert!(
                echoed(&r, "x-envoy-original-dst-host").is_empty(),
                "{extra:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_chain_reaches_the_sandbox_of_the_second_service() {
    let rig = rig("[]").await;
    // Client → a (no sandbox of a for dev-1: baseline app) → a calls b with the baggage it
    // got → b's dev-1 sandbox.
    let r = get(
        rig.envoy.listener("out"),
        "a",
        &[("baggage", "sandbox=dev-1,user=ana")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header_str("x-b-sandbox").as_deref(), Some("dev-1"));
    assert_eq!(rig.received(), [0, 1, 0, 0]);
    assert_eq!(echoed(&r, "baggage"), ["sandbox=dev-1,user=ana"]);
    let r = get(rig.envoy.listener("out"), "a", &[("baggage", "user=ana")]).await;
    assert_eq!(r.header("x-b-sandbox"), None);
    assert_eq!(rig.received(), [1, 1, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_change_takes_effect_within_one_poll_period() {
    let doc = |cluster: &str| {
        format!(
            r#"{{"version": "{cluster}", "sandboxes": [{{"key": "dev-4", "service": "b", "cluster": "{cluster}"}}]}}"#
        )
    };
    let rig = rig(&doc("b_dev_1")).await;
    // The first poll (first tick after start).
    let deadline = Instant::now() + Duration::from_secs(5);
    while which(&rig, "b", &[("baggage", "sandbox=dev-4")]).await.0 != DEV_1 {
        assert!(
            Instant::now() < deadline,
            "the registry table never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Unchanged: the registry answers 304 to the ETag the filter sends back.
    tokio::time::sleep(POLL * 2).await;
    let (ok, not_modified) = rig.registry.answers();
    assert!(
        ok == 1 && not_modified >= 1,
        "{ok} x 200, {not_modified} x 304"
    );
    // Change it and measure until every request (over both workers) follows.
    rig.registry.set("\"r2\"", &doc("b_dev_2"));
    let changed = Instant::now();
    let mut streak: Option<(Instant, u32)> = None;
    while streak.is_none_or(|(_, n)| n < 8) {
        let sent = Instant::now();
        let (to, _) = which(&rig, "b", &[("baggage", "sandbox=dev-4")]).await;
        streak = match (to == DEV_2, streak) {
            (true, Some((since, n))) => Some((since, n + 1)),
            (true, None) => Some((sent, 1)),
            (false, _) => None,
        };
        assert!(changed.elapsed() < POLL * 3, "still on the old table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = streak.map_or(Duration::MAX, |(since, _)| since - changed);
    assert!(
        took <= POLL + Duration::from_millis(500),
        "took {took:?} for a {POLL:?} poll period"
    );
    rig.envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get(&format!("{M}registry.updates")) == Some(&2)
                && s.get(&format!("{M}table_entries")) == Some(&4)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mode_strips_keys_from_untrusted_clients() {
    let rig = rig("[]").await;
    let edge = rig.envoy.listener("edge");
    // The test client (127.0.0.1) is not in 10.0.0.0/8 and sends no trusted header.
    let before = rig.received();
    let r = get(
        edge,
        "b",
        &[("baggage", "user=ana,sandbox=dev-1"), ("tracestate", "x=1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(rig.received()[BASELINE], before[BASELINE] + 1);
    assert_eq!(
        echoed(&r, "baggage"),
        ["user=ana"],
        "the key is stripped, the rest kept"
    );
    let r = get(edge, "b", &[("baggage", "sandbox=dev-1")]).await;
    assert!(echoed(&r, "baggage").is_empty());
    // The edge's trusted header lets the key through.
    let r = get(
        edge,
        "b",
        &[
            ("baggage", "sandbox=dev-1"),
            ("x-meshguard-trusted", "edge-ok"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(rig.received()[DEV_1], before[DEV_1] + 1);
    rig.envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get(&format!("{M}fallback.stripped")) == Some(&2)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_the_same_way() {
    let rig = rig("[]").await;
    let mut client = EchoClient::connect(rig.envoy.listener("out"))
        .await
        .unwrap();
    for (baggage, to) in [
        (Some("sandbox=dev-2"), DEV_2),
        (None, BASELINE),
        (Some("sandbox=dev-3"), DEV_3),
    ] {
        let before = rig.received();
        let mut req = tonic::Request::new(EchoRequest {
            message: "hi".into(),
            ..Default::default()
        });
        if let Some(b) = baggage {
            req.metadata_mut().insert("baggage", b.parse().unwrap());
        }
        let reply = client.unary(req).await.unwrap().into_inner();
        assert_eq!(reply.message, "hi");
        let after = rig.received();
        assert_eq!(
            after[to],
            before[to] + 1,
            "{baggage:?}: {before:?} -> {after:?}"
        );
    }
}
