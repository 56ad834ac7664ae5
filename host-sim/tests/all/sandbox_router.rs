//! The sandbox_router module (issue 7): table lookups, keys from every source, client routing
//! headers, the registry polled with ETag by one worker and shared by all, failures keeping the
//! last table.
//!
//! host-sim's routes match exact header values, so each sandbox cluster gets a route on the
//! routing header (Envoy's `cluster_header` route does the same in one line).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use host_sim::{Envoy, HeaderMap, HttpCallReply, Module, RouteSpec, StreamRecord};

use crate::support::Result;

const ROUTING: &str = "x-meshguard-sandbox-cluster";
const SANDBOXES: [&str; 4] = [
    "reviews-dev-1",
    "reviews-dev-3",
    "reviews-dev-3b",
    "meshguard_sandbox_original_dst",
];

fn routes() -> Vec<RouteSpec> {
    let mut routes: Vec<RouteSpec> = SANDBOXES
        .iter()
        .map(|c| {
            let mut r = RouteSpec::new(format!("to-{c}"), *c);
            r.header = Some((ROUTING.into(), (*c).into()));
            r
        })
        .collect();
    routes.push(RouteSpec::new("reviews", "reviews"));
    routes
}

fn envoy(workers: usize, config: &str) -> Result<Envoy> {
    let mut b = Envoy::builder(Module::load("sandbox_router")?)
        .workers(workers)
        .plugin_config(config)
        .routes(routes())
        .cluster("reviews")
        .cluster("registry");
    for c in SANDBOXES {
        b = b.cluster(c);
    }
    Ok(b.build()?)
}

const STATIC: &str = r#""routes": [
    {"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"},
    {"key": "dev-2", "service": "reviews", "address": "127.0.0.1:9002"},
    {"key": "dev-1", "service": "ratings", "cluster": "ratings-dev-1"}]"#;

/// One request through `worker` (round-robin when `None`), answered 200 by the upstream.
fn send(e: &mut Envoy, worker: Option<usize>, extra: &[(&str, &str)]) -> Result<StreamRecord> {
    let s = match worker {
        Some(w) => e.new_stream_on(w),
        None => e.new_stream(),
    };
    let mut h = HeaderMap::from([
        (":method", "GET"),
        (":path", "/r"),
        (":authority", "reviews"),
    ]);
    for (k, v) in extra {
        h.add(k, v);
    }
    e.send_request_headers(s, h, true)?;
    e.send_response_headers(s, [(":status", "200")], true)?;
    Ok(e.stream(s).cloned().expect("stream"))
}

fn cluster(r: &StreamRecord) -> &str {
    r.cluster.as_deref().unwrap_or("-")
}

fn upstream_header<'a>(r: &'a StreamRecord, name: &str) -> Option<&'a str> {
    r.upstream.headers.as_ref()?.get(name)
}

const M: &str = "meshguard.sandbox_router.";

#[test]
fn table_lookups_route_by_key_and_service() -> Result {
    let mut e = envoy(2, &format!("{{{STATIC}, \"response_header\": true}}"))?;
    let r = send(&mut e, None, &[("baggage", "user=a,sandbox=dev-1")])?;
    assert_eq!(cluster(&r), "reviews-dev-1");
    assert_eq!(r.downstream.header("x-meshguard-sandbox"), Some("dev-1"));
    // An address goes through the ORIGINAL_DST cluster with the header it reads.
    let r = send(&mut e, None, &[("baggage", "sandbox=dev-2")])?;
    assert_eq!(cluster(&r), "meshguard_sandbox_original_dst");
    assert_eq!(
        upstream_header(&r, "x-envoy-original-dst-host"),
        Some("127.0.0.1:9002")
    );
    // Unknown key, and no key: the baseline, untouched.
    for extra in [
        &[("baggage", "sandbox=dev-9")][..],
        &[],
        &[("baggage", "user=a")],
    ] {
        let before = e.foreign_calls().len();
        let r = send(&mut e, None, extra)?;
        assert_eq!(cluster(&r), "reviews", "{extra:?}");
        assert_eq!(upstream_header(&r, ROUTING), None);
        assert_eq!(r.downstream.header("x-meshguard-sandbox"), None);
        assert_eq!(e.foreign_calls().len(), before, "no clear_route_cache");
    }
    e.advance(Duration::from_millis(100));
    assert_eq!(e.counter(&format!("{M}routed")), 2);
    assert_eq!(e.counter(&format!("{M}routed.dev-1")), 1);
    assert_eq!(e.counter(&format!("{M}routed.dev-2")), 1);
    assert_eq!(e.counter(&format!("{M}fallback.no_entry")), 1);
    assert_eq!(e.gauge(&format!("{M}table_entries")), 3);
    let clears: Vec<String> = e.foreign_calls().into_iter().map(|c| c.name).collect();
    assert_eq!(clears, ["clear_route_cache", "clear_route_cache"]);
    Ok(())
}

#[test]
fn a_key_is_read_from_each_source() -> Result {
    let mut e = envoy(
        1,
        &format!(
            r#"{{{STATIC}, "key_sources": [{{"header": "x-sandbox"}}, {{"tracestate": "sandbox"}},
                {{"ot_baggage": "sandbox"}}, {{"uberctx": "sandbox"}}, {{"baggage": "sandbox"}}]}}"#
        ),
    )?;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for extra in [
        &[("x-sandbox", "dev-1")][..],
        &[
            ("traceparent", tp),
            ("tracestate", "congo=t61,sandbox=dev-1"),
        ],
        &[("ot-baggage-sandbox", "dev%2D1")],
        &[("uberctx-sandbox", "dev-1")],
        &[("baggage", "a=1"), ("baggage", "sandbox = dev-1 ;ttl=3")],
    ] {
        let r = send(&mut e, None, extra)?;
        assert_eq!(cluster(&r), "reviews-dev-1", "{extra:?}");
    }
    // tracestate without a valid traceparent is not parsed.
    let r = send(&mut e, None, &[("tracestate", "sandbox=dev-1")])?;
    assert_eq!(cluster(&r), "reviews");
    // An invalid key in an earlier source does not hide a valid one in a later source.
    let r = send(
        &mut e,
        None,
        &[("x-sandbox", "no good"), ("baggage", "sandbox=dev-1")],
    )?;
    assert_eq!(cluster(&r), "reviews-dev-1");
    let r = send(&mut e, None, &[("x-sandbox", "no good")])?;
    assert_eq!(cluster(&r), "reviews");
    e.advance(Duration::from_millis(100));
    assert_eq!(e.counter(&format!("{M}routed")), 6);
    assert_eq!(e.counter(&format!("{M}fallback.invalid_key")), 1);
    Ok(())
}

#[test]
fn a_client_routing_header_cannot_pick_a_cluster() -> Result {
    let mut e = envoy(1, &format!("{{{STATIC}}}"))?;
    // Without a key: removed, and the route recomputed to the baseline.
    let r = send(
        &mut e,
        None,
        &[
            (ROUTING, "reviews-dev-1"),
            ("x-envoy-original-dst-host", "10.9.9.9:22"),
        ],
    )?;
    assert_eq!(cluster(&r), "reviews");
    assert_eq!(upstream_header(&r, ROUTING), None);
    assert_eq!(upstream_header(&r, "x-envoy-original-dst-host"), None);
    // With a key for another sandbox: the route came from the client's header, so no decision.
    let r = send(
        &mut e,
        None,
        &[(ROUTING, "reviews-dev-3"), ("baggage", "sandbox=dev-1")],
    )?;
    assert_eq!(cluster(&r), "reviews");
    e.advance(Duration::from_millis(100));
    assert_eq!(e.counter(&format!("{M}client_routing_headers_removed")), 2);
    assert_eq!(e.counter(&format!("{M}fallback.no_service")), 1);
    assert_eq!(e.counter(&format!("{M}routed")), 0);
    Ok(())
}

#[test]
fn edge_mode_strips_keys_from_untrusted_sources() -> Result {
    // host-sim's client is 10.0.0.2.
    let mut e = envoy(
        1,
        &format!(
            r#"{{{STATIC}, "edge": {{"trusted_source_cidrs": ["192.168.0.0/16"],
                "trusted_header": {{"name": "x-trusted", "value": "edge-secret"}}}}}}"#
        ),
    )?;
    let r = send(&mut e, None, &[("baggage", "user=a,sandbox=dev-1")])?;
    assert_eq!(cluster(&r), "reviews");
    assert_eq!(upstream_header(&r, "baggage"), Some("user=a"));
    let r = send(
        &mut e,
        None,
        &[("baggage", "sandbox=dev-1"), ("x-trusted", "edge-secret")],
    )?;
    assert_eq!(cluster(&r), "reviews-dev-1");
    e.advance(Duration::from_millis(100));
    assert_eq!(e.counter(&format!("{M}fallback.stripped")), 1);
    let mut e = envoy(
        1,
        &format!(r#"{{{STATIC}, "edge": {{"trusted_source_cidrs": ["10.0.0.0/8"]}}}}"#),
    )?;
    let r = send(&mut e, None, &[("baggage", "sandbox=dev-1")])?;
    assert_eq!(cluster(&r), "reviews-dev-1", "a trusted source range");
    Ok(())
}

#[test]
fn dry_run_counts_but_routes_to_the_baseline() -> Result {
    let mut e = envoy(1, &format!("{{{STATIC}, \"mode\": \"dry_run\"}}"))?;
    let r = send(&mut e, None, &[("baggage", "sandbox=dev-1")])?;
    assert_eq!(cluster(&r), "reviews");
    assert_eq!(upstream_header(&r, "baggage"), Some("sandbox=dev-1"));
    e.advance(Duration::from_millis(100));
    assert_eq!(e.counter(&format!("{M}routed")), 1);
    assert!(
        !e.logs_containing("dry run: would route key dev-1 for reviews to reviews-dev-1")
            .is_empty()
    );
    Ok(())
}

// === registry ===

/// (if-none-match sent, status answered) per registry call.
type Calls = Arc<Mutex<Vec<(Option<String>, u16)>>>;

/// A registry whose document can be changed; answers 304 to a matching `if-none-match`.
#[derive(Clone, Default)]
struct Registry {
    doc: Arc<Mutex<(String, String)>>,
    /// (if-none-match sent, status answered) per call.
    calls: Calls,
    /// Answer with this instead, when set.
    failure: Arc<Mutex<Option<HttpCallReply>>>,
}

impl Registry {
    fn set(&self, etag: &str, body: &str) {
        *self.doc.lock().unwrap() = (etag.into(), body.into());
    }

    fn install(&self, e: &mut Envoy) {
        let reg = self.clone();
        e.on_http_call("registry", move |call| {
            if let Some(f) = reg.failure.lock().unwrap().clone() {
                reg.calls.lock().unwrap().push((None, 0));
                return f;
            }
            let (etag, body) = reg.doc.lock().unwrap().clone();
            let inm = call.headers.get("if-none-match").map(str::to_owned);
            let status = if inm.as_deref() == Some(etag.as_str()) {
                304
            } else {
                200
            };
            reg.calls.lock().unwrap().push((inm, status));
            let reply = HttpCallReply::status(status).header("etag", &etag);
            let reply = if status == 200 {
                reply.body(body)
            } else {
                reply
            };
            reply.after(Duration::from_millis(3))
        });
    }

    fn calls(&self) -> Vec<(Option<String>, u16)> {
        self.calls.lock().unwrap().clone()
    }
}

const REGISTRY: &str = r#""registry": {"cluster": "registry", "path": "/v1/sandboxes", "poll_interval": "1s", "timeout": "500ms"}"#;

fn doc(cluster: &str) -> String {
    format!(
        r#"{{"sandboxes": [{{"key": "dev-3", "service": "reviews", "cluster": "{cluster}"}}]}}"#
    )
}

#[test]
fn the_registry_is_polled_with_etag_and_304_keeps_the_table() -> Result {
    let mut e = envoy(2, &format!("{{{STATIC}, {REGISTRY}}}"))?;
    let reg = Registry::default();
    reg.set("\"v1\"", &doc("reviews-dev-3"));
    reg.install(&mut e);
    assert_eq!(
        cluster(&send(&mut e, None, &[("baggage", "sandbox=dev-3")])?),
        "reviews"
    );
    e.advance(Duration::from_millis(5_050));
    let calls = reg.calls();
    // The first tick at 100 ms, then one poll per second across all VMs.
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(calls[0], (None, 200));
    for c in &calls[1..] {
        assert_eq!(c, &(Some("\"v1\"".into()), 304));
    }
    let call = &e.callouts()[0];
    assert_eq!(
        (call.cluster.as_str(), call.path()),
        ("registry", Some("/v1/sandboxes"))
    );
    assert_eq!(call.headers.get(":authority"), Some("registry"));
    assert_eq!(call.timeout, Some(Duration::from_millis(500)));
    for w in 0..2 {
        let r = send(&mut e, Some(w), &[("baggage", "sandbox=dev-3")])?;
        assert_eq!(cluster(&r), "reviews-dev-3", "worker {w}");
    }
    assert_eq!(e.counter(&format!("{M}registry.updates")), 1);
    assert_eq!(e.counter(&format!("{M}registry.not_modified")), 4);
    assert_eq!(e.counter(&format!("{M}registry.errors")), 0);
    assert_eq!(e.gauge(&format!("{M}table_entries")), 4);
    Ok(())
}

#[test]
fn registry_failures_keep_the_last_table() -> Result {
    let mut e = envoy(2, &format!("{{{REGISTRY}}}"))?;
    let reg = Registry::default();
    reg.set("\"v1\"", &doc("reviews-dev-3"));
    reg.install(&mut e);
    e.advance(Duration::from_millis(150));
    assert_eq!(reg.calls().len(), 1);
    let failures = [
        HttpCallReply::status(500).body("oops"),
        HttpCallReply::status(404),
        HttpCallReply::connect_failure(),
        HttpCallReply::reset_before_headers(),
        HttpCallReply::reset().after(Duration::from_millis(2)),
        HttpCallReply::never(),
        HttpCallReply::ok().body("{not json"),
        HttpCallReply::ok()
            .body(r#"[{"key": "dev-3", "service": "reviews", "address": "evil.example:80"}]"#),
        HttpCallReply::ok().body(vec![b' '; 2 << 20]),
    ];
    let n = failures.len() as u64;
    for f in failures {
        *reg.failure.lock().unwrap() = Some(f);
        e.advance(Duration::from_secs(1));
        for w in 0..2 {
            let r = send(&mut e, Some(w), &[("baggage", "sandbox=dev-3")])?;
            assert_eq!(cluster(&r), "reviews-dev-3", "worker {w}");
        }
    }
    assert_eq!(e.counter(&format!("{M}registry.errors")), n);
    assert_eq!(e.counter(&format!("{M}registry.updates")), 1);
    assert_eq!(e.gauge(&format!("{M}table_entries")), 1);
    assert!(!e.logs_containing("keeping the last table").is_empty());
    // The registry heals: the next good answer (a new document) is taken.
    *reg.failure.lock().unwrap() = None;
    reg.set("\"v2\"", &doc("reviews-dev-3b"));
    e.advance(Duration::from_millis(1_100));
    for w in 0..2 {
        let r = send(&mut e, Some(w), &[("baggage", "sandbox=dev-3")])?;
        assert_eq!(cluster(&r), "reviews-dev-3b", "worker {w}");
    }
    Ok(())
}

#[test]
fn workers_agree_on_the_table() -> Result {
    let mut e = envoy(4, &format!("{{{REGISTRY}}}"))?;
    let reg = Registry::default();
    reg.set("\"v1\"", &doc("reviews-dev-3"));
    reg.install(&mut e);
    e.advance(Duration::from_millis(250));
    for w in 0..4 {
        assert_eq!(
            cluster(&send(&mut e, Some(w), &[("baggage", "sandbox=dev-3")])?),
            "reviews-dev-3",
            "worker {w}"
        );
    }
    // A change reaches every worker within one poll period (plus one tick).
    reg.set("\"v2\"", &doc("reviews-dev-3b"));
    e.advance(Duration::from_millis(1_100));
    for w in 0..4 {
        assert_eq!(
            cluster(&send(&mut e, Some(w), &[("baggage", "sandbox=dev-3")])?),
            "reviews-dev-3b",
            "worker {w}"
        );
    }
    // Five VMs (main thread + 4 workers) tick every 100 ms, but one poll per second is made.
    e.advance(Duration::from_millis(10_000));
    let calls = reg.calls().len();
    assert!(
        (12..=13).contains(&calls),
        "{calls} registry calls in ~11.35 s"
    );
    let published = e
        .shared_data_keys()
        .into_iter()
        .filter(|k| k.ends_with(b"/table"))
        .count();
    assert_eq!(published, 1);
    Ok(())
}
