//! Transparency: with its policy idle, a meshguard filter changes nothing a client or an
//! upstream can see.
//!
//! One Envoy, one listener without meshguard (`baseline`) and one per meshguard module, all
//! routing to the same echo upstream. Every case sends the same request through each listener
//! and asserts the responses are identical: status, interim responses, headers (except `date`
//! and `x-envoy-upstream-service-time`), body, trailers — and, because the upstream echoes what
//! it received, the request as the upstream saw it. A negative control (a Lua filter that adds
//! a header) proves the comparison catches a difference.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use meshguard_tests::h2::RequestBody;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, Response, h1, h2};
use meshguard_upstream::grpc::{EchoClient, EchoRequest, SERVER_STREAM_PATH, UNARY_PATH};
use meshguard_upstream::{Upstream, UpstreamConfig};
use prost::Message;
use serde_json::json;

const MODULES: [&str; 4] = [
    "load_shed",
    "circuit_breaker",
    "rate_limit",
    "sandbox_router",
];

/// Two settings apply to every listener alike, baseline included: Envoy's default limit is 100
/// headers *including* the ones it derives (`:method`, ...) and the suite sends 100 real ones;
/// and `x-request-id` generation is off, because a random id per request would differ between
/// any two requests (it would also be echoed inside gRPC replies, where it cannot be masked).
fn listener(name: &str) -> Listener {
    Listener::new(name)
        .hcm(
            "common_http_protocol_options",
            json!({"max_headers_count": 128}),
        )
        .hcm("generate_request_id", json!(false))
}

struct Rig {
    upstream: Upstream,
    envoy: Envoy,
}

impl Rig {
    async fn start() -> Rig {
        let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
        let mut cfg = EnvoyConfig::new(Some(upstream.addr())).listener(listener("baseline"));
        for m in MODULES {
            cfg = cfg.listener(listener(m).filter(Filter::meshguard(m).unwrap()));
        }
        let mut control = listener("control");
        control.native_filters.push(json!({
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string":
                    "function envoy_on_response(h) h:headers():add('x-added-by-control', '1') end"},
            },
        }));
        let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg.listener(control)))
            .await
            .unwrap()
            .unwrap();
        Rig { upstream, envoy }
    }

    /// Runs `exchange` through the baseline and every module; asserts identical results.
    async fn same<F, Fut>(&self, case: &str, exchange: F) -> Response
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = Result<Response>>,
    {
        let baseline = exchange(self.envoy.listener("baseline"))
            .await
            .unwrap_or_else(|e| panic!("{case}: baseline: {e:#}"));
        let want = baseline.normalized();
        for m in MODULES {
            let got = exchange(self.envoy.listener(m))
                .await
                .unwrap_or_else(|e| panic!("{case}: {m}: {e:#}"));
            assert_eq!(got.normalized(), want, "{case}: {m} differs from baseline");
        }
        baseline
    }

    /// The negative control: the comparison must see the Lua filter's header.
    async fn control_differs<F, Fut>(&self, exchange: F)
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = Result<Response>>,
    {
        let a = exchange(self.envoy.listener("baseline")).await.unwrap();
        let b = exchange(self.envoy.listener("control")).await.unwrap();
        assert_ne!(
            a.normalized(),
            b.normalized(),
            "the comparison cannot see a changed header"
        );
    }
}

fn get(path: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"transparency.test")];
    headers.extend_from_slice(extra);
    h1::head("GET", path, &headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1() {
    let rig = Rig::start().await;
    let plain = get("/plain?q=1", &[]);
    let r = rig.same("GET", |a| h1::exchange(a, &plain)).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"method\":\"GET\""), "{r:?}");
    rig.control_differs(|a| h1::exchange(a, &plain)).await;

    let head = h1::head("HEAD", "/head", &[(b"host", b"t")]);
    let r = rig.same("HEAD", |a| h1::exchange(a, &head)).await;
    assert!(
        r.body.is_empty() && r.header("content-length").is_some(),
        "{r:?}"
    );

    for status in [b"204".as_slice(), b"304"] {
        let req = get("/status", &[(b"x-upstream-status", status)]);
        let r = rig.same("204/304", |a| h1::exchange(a, &req)).await;
        assert!(r.body.is_empty());
    }

    // Chunked request body with trailers, echoed back as the upstream received it.
    let mut req = h1::head(
        "POST",
        "/chunked",
        &[
            (b"host", b"t"),
            (b"transfer-encoding", b"chunked"),
            (b"x-upstream-echo", b"body"),
        ],
    );
    req.extend(h1::chunked(
        &[b"hello ", b"chunked ", b"world"],
        &[("x-req-trailer", "t1")],
    ));
    let r = rig.same("chunked request", |a| h1::exchange(a, &req)).await;
    assert_eq!(r.text(), "hello chunked world");

    // Chunked response with trailers.
    let req = get(
        "/chunked-response",
        &[
            (b"x-upstream-body-size", b"100000"),
            (b"x-upstream-chunked", b"1"),
            (b"te", b"trailers"),
            (b"x-upstream-trailer", b"x-resp-trailer: done"),
        ],
    );
    let r = rig
        .same("chunked response", |a| h1::exchange(a, &req))
        .await;
    assert_eq!(r.body.len(), 100_000);
    assert_eq!(
        r.header_str("transfer-encoding").as_deref(),
        Some("chunked")
    );

    // 1 MiB request body (echo document carries its sha256) and a 1 MiB response body.
    let big = vec![b'x'; 1 << 20];
    let mut req = h1::head(
        "POST",
        "/big",
        &[(b"host", b"t"), (b"content-length", b"1048576")],
    );
    req.extend_from_slice(&big);
    let r = rig.same("1 MiB request", |a| h1::exchange(a, &req)).await;
    assert!(r.text().contains("\"body_len\":1048576"), "{r:?}");
    let req = get("/big-response", &[(b"x-upstream-body-size", b"1048576")]);
    let r = rig.same("1 MiB response", |a| h1::exchange(a, &req)).await;
    assert_eq!(r.body.len(), 1 << 20);

    // 100 request headers in all (host + 99).
    let names: Vec<String> = (0..99).map(|i| format!("x-many-{i:02}")).collect();
    let mut many: Vec<(&[u8], &[u8])> = vec![(b"host", b"t")];
    many.extend(names.iter().map(|n| (n.as_bytes(), b"v".as_slice())));
    let req = h1::head("GET", "/many", &many);
    let r = rig.same("100 headers", |a| h1::exchange(a, &req)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("x-many-98"));

    // Repeated request headers, repeated response headers, mixed-case names, non-UTF-8 value.
    let req = get(
        "/repeated",
        &[
            (b"X-Repeated", b"one"),
            (b"x-repeated", b"two"),
            (b"X-MiXeD-CaSe", b"Value"),
            (b"x-binary", b"caf\xe9 \xff\x80"),
            (b"x-upstream-header", b"x-resp: a"),
            (b"x-upstream-header", b"x-resp: b"),
        ],
    );
    let r = rig
        .same("repeated + non-UTF-8", |a| h1::exchange(a, &req))
        .await;
    let resp_values: Vec<_> = r.headers.iter().filter(|(k, _)| k == "x-resp").collect();
    assert_eq!(resp_values.len(), 2, "{r:?}");
    assert!(
        r.text().contains(r#"["x-binary","caf\\xe9 \\xff\\x80"]"#),
        "{}",
        r.text()
    );

    // expect: 100-continue: the client waits for the interim response before the body.
    let r = rig
        .same("100-continue", |a| async move {
            let mut c = h1::Conn::connect(a).await?;
            c.send(&h1::head(
                "POST",
                "/continue",
                &[
                    (b"host", b"t"),
                    (b"content-length", b"5"),
                    (b"expect", b"100-continue"),
                    (b"x-upstream-echo", b"body"),
                ],
            ))
            .await?;
            let interim = c.read_interim().await?;
            c.send(b"hello").await?;
            let mut r = c.read_response(false).await?;
            r.interim.insert(0, interim);
            Ok(r)
        })
        .await;
    assert_eq!(r.interim, vec![100]);
    assert_eq!(r.text(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_cancel() {
    let rig = Rig::start().await;
    for listener in std::iter::once("baseline").chain(MODULES) {
        let before = rig.upstream.stats().received;
        let mut c = h1::Conn::connect(rig.envoy.listener(listener))
            .await
            .unwrap();
        c.send(&get("/slow", &[(b"x-upstream-delay-ms", b"5000")]))
            .await
            .unwrap();
        rig.upstream
            .wait_for_stats(Duration::from_secs(10), |s| s.received > before)
            .await
            .unwrap();
        drop(c);
        // Envoy sees the client go away with a request active and cancels the upstream request.
        let stat = format!("http.{listener}.downstream_cx_destroy_remote_active_rq");
        rig.envoy
            .wait_for_stats(Duration::from_secs(10), |s| s.get(&stat) == Some(&1))
            .unwrap();
        rig.upstream
            .wait_for_stats(Duration::from_secs(10), |s| s.in_flight == 0)
            .await
            .unwrap();
        // And the listener keeps serving.
        let r = h1::exchange(rig.envoy.listener(listener), &get("/after", &[]))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{listener}");
    }
}

fn h2_headers<'a>(extra: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    let mut h: Vec<(&str, &[u8])> = vec![];
    h.extend_from_slice(extra);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2() {
    let rig = Rig::start().await;
    let r = rig
        .same("h2 GET", |a| {
            h2::request(a, "GET", "/h2", &[], RequestBody::default())
        })
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("HTTP/2.0"), "{r:?}");
    rig.control_differs(|a| h2::request(a, "GET", "/h2", &[], RequestBody::default()))
        .await;

    let r = rig
        .same("h2 HEAD", |a| {
            h2::request(a, "HEAD", "/h", &[], RequestBody::default())
        })
        .await;
    assert!(r.body.is_empty());
    for status in [b"204".as_slice(), b"304"] {
        let hs = h2_headers(&[("x-upstream-status", status)]);
        rig.same("h2 204/304", |a| {
            h2::request(a, "GET", "/s", &hs, RequestBody::default())
        })
        .await;
    }

    // Streamed request body with trailers; response trailers; repeated and binary headers.
    let hs = h2_headers(&[
        ("x-repeated", b"one"),
        ("x-repeated", b"two"),
        ("x-binary", b"\xe9\xff"),
        ("x-upstream-trailer", b"x-resp-trailer: done"),
        ("x-upstream-header", b"x-resp: a"),
        ("x-upstream-header", b"x-resp: b"),
        ("te", b"trailers"),
    ]);
    let body = RequestBody {
        chunks: vec![b"part one ".to_vec(), b"part two".to_vec()],
        trailers: vec![("x-req-trailer".into(), b"t".to_vec())],
    };
    let r = rig
        .same("h2 body + trailers", |a| {
            h2::request(a, "POST", "/t", &hs, body.clone())
        })
        .await;
    assert_eq!(
        r.trailer_str("x-resp-trailer").as_deref(),
        Some("done"),
        "{r:?}"
    );
    assert!(r.text().contains("x-req-trailer"), "{}", r.text());

    // 1 MiB each way.
    let body = RequestBody {
        chunks: vec![vec![7u8; 1 << 20]],
        trailers: vec![],
    };
    let hs = h2_headers(&[("x-upstream-echo", b"body")]);
    let r = rig
        .same("h2 1 MiB", |a| {
            h2::request(a, "POST", "/big", &hs, body.clone())
        })
        .await;
    assert_eq!(r.body.len(), 1 << 20);
}

/// A gRPC request as bytes: length-prefixed message, `content-type: application/grpc`.
fn grpc_frame(msg: &EchoRequest) -> Vec<u8> {
    let bytes = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

async fn grpc_raw(addr: SocketAddr, path: &str, msg: &EchoRequest) -> Result<Response> {
    h2::request(
        addr,
        "POST",
        path,
        &[("content-type", b"application/grpc"), ("te", b"trailers")],
        RequestBody {
            chunks: vec![grpc_frame(msg)],
            trailers: vec![],
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc() {
    let rig = Rig::start().await;
    let ok = EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };
    let r = rig
        .same("gRPC unary OK", |a| grpc_raw(a, UNARY_PATH, &ok))
        .await;
    assert_eq!(r.trailer_str("grpc-status").as_deref(), Some("0"), "{r:?}");

    let failing = EchoRequest {
        message: "no".into(),
        grpc_status: 5,
        grpc_message: "not here".into(),
        ..Default::default()
    };
    let r = rig
        .same("gRPC unary error", |a| grpc_raw(a, UNARY_PATH, &failing))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.trailer_str("grpc-status").as_deref(), Some("5"), "{r:?}");

    let stream = EchoRequest {
        message: "s".into(),
        count: 5,
        ..Default::default()
    };
    let r = rig
        .same("gRPC stream", |a| grpc_raw(a, SERVER_STREAM_PATH, &stream))
        .await;
    assert_eq!(r.trailer_str("grpc-status").as_deref(), Some("0"));
    let broken = EchoRequest {
        message: "s".into(),
        count: 5,
        fail_after: Some(2),
        grpc_status: 14,
        grpc_message: "gone".into(),
        ..Default::default()
    };
    let r = rig
        .same("gRPC stream error", |a| {
            grpc_raw(a, SERVER_STREAM_PATH, &broken)
        })
        .await;
    assert_eq!(r.trailer_str("grpc-status").as_deref(), Some("14"));

    // A real gRPC client sees the same through every listener.
    for listener in std::iter::once("baseline").chain(MODULES) {
        let mut client = EchoClient::connect(rig.envoy.listener(listener))
            .await
            .unwrap();
        let reply = client.unary(ok.clone()).await.unwrap().into_inner();
        assert_eq!(reply.message, "hi", "{listener}");
        let err = client.unary(failing.clone()).await.unwrap_err();
        assert_eq!(
            (err.code() as i32, err.message()),
            (5, "not here"),
            "{listener}"
        );
        let (msgs, end) = client.server_stream_all(broken.clone()).await;
        assert_eq!(msgs.len(), 2, "{listener}");
        let end = end.unwrap_err();
        assert_eq!(
            (end.code() as i32, end.message()),
            (14, "gone"),
            "{listener}"
        );
    }
}
