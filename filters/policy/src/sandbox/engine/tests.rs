//! Engine tests: decisions per request, and workers (engines) sharing one [`MemStore`].

#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // tests

use super::*;
use crate::sandbox::config::RawConfig;
use crate::store::MemStore;
#[cfg(target_arch = "wasm32")]
use crate::test;

const S: u64 = 1_000_000_000;

fn config(json: &str) -> Config {
    let raw: RawConfig = serde_json::from_str(json).unwrap();
    Config::try_from(raw).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// A route to `cluster` from `source`; counts the host calls it answers.
#[derive(Default)]
struct Info {
    cluster: Option<&'static str>,
    source: Option<&'static str>,
    calls: u32,
}

impl RequestInfo for Info {
    fn cluster_name(&mut self) -> Option<Vec<u8>> {
        self.calls += 1;
        self.cluster.map(|c| c.as_bytes().to_vec())
    }
    fn source_address(&mut self) -> Option<Vec<u8>> {
        self.calls += 1;
        self.source.map(|c| c.as_bytes().to_vec())
    }
}

fn to(cluster: &'static str) -> Info {
    Info {
        cluster: Some(cluster),
        ..Info::default()
    }
}

const ROUTES: &str = r#""routes": [
    {"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"},
    {"key": "dev-2", "service": "reviews", "address": "127.0.0.1:9002"}]"#;

fn replace(k: &str, v: &str) -> HeaderOp {
    HeaderOp::Replace(k.into(), v.as_bytes().to_vec())
}

#[test]
fn a_key_in_the_table_routes_to_its_cluster() {
    let c = config(&format!("{{{ROUTES}, \"response_header\": true}}"));
    let e = Engine::new(&c, "sr");
    let mut info = to("reviews");
    let plan = e.decide(&c, &headers(&[("baggage", "sandbox=dev-1")]), &mut info);
    assert_eq!(
        plan.outcome,
        Outcome::Routed {
            key: "dev-1".into(),
            service: "reviews".into(),
            target: Target::Cluster("reviews-dev-1".into())
        }
    );
    assert_eq!(
        plan.ops,
        vec![replace("x-meshguard-sandbox-cluster", "reviews-dev-1")]
    );
    assert!(plan.clear_route_cache && !plan.removed_client_headers);
    assert_eq!(plan.served_by.as_deref(), Some("dev-1"));
    assert_eq!(info.calls, 1, "the cluster, once");
}

#[test]
fn an_address_goes_through_the_original_dst_cluster() {
    let c = config(&format!("{{{ROUTES}}}"));
    let e = Engine::new(&c, "sr");
    let plan = e.decide(
        &c,
        &headers(&[("baggage", "sandbox=dev-2")]),
        &mut to("reviews"),
    );
    assert_eq!(
        plan.ops,
        vec![
            replace(
                "x-meshguard-sandbox-cluster",
                "meshguard_sandbox_original_dst"
            ),
            replace("x-envoy-original-dst-host", "127.0.0.1:9002"),
        ]
    );
    assert_eq!(plan.served_by, None, "response header off by default");
}

#[test]
fn no_key_costs_no_host_call_and_changes_nothing() {
    let c = config(&format!("{{{ROUTES}}}"));
    let e = Engine::new(&c, "sr");
    let mut info = to("reviews");
    let plan = e.decide(
        &c,
        &headers(&[(":authority", "reviews"), ("baggage", "user=a")]),
        &mut info,
    );
    assert_eq!(plan, Plan::default());
    assert_eq!(info.calls, 0);
}

#[test]
fn fallbacks() {
    let c = config(&format!("{{{ROUTES}}}"));
    let e = Engine::new(&c, "sr");
    let fallback = |h: &[(&str, &str)], info: &mut Info| {
        let plan = e.decide(&c, &headers(h), info);
        assert!(plan.ops.is_empty() && !plan.clear_route_cache, "{plan:?}");
        match plan.outcome {
            Outcome::Fallback { reason, .. } => reason,
            o => panic!("{o:?}"),
        }
    };
    let mut info = to("reviews");
    assert_eq!(
        fallback(&[("baggage", "sandbox=dev-9")], &mut info),
        Fallback::NoEntry
    );
    assert_eq!(
        fallback(&[("baggage", "sandbox=dev-1")], &mut to("ratings")),
        Fallback::NoEntry
    );
    let mut info2 = to("reviews");
    assert_eq!(
        fallback(&[("baggage", "sandbox=dev.1")], &mut info2),
        Fallback::InvalidKey(KeyError::BadCharacter)
    );
    assert_eq!(info2.calls, 0, "no cluster read for an invalid key");
    assert_eq!(
        fallback(&[("baggage", "sandbox=dev-1")], &mut Info::default()),
        Fallback::NoService,
        "a route without a cluster"
    );
}

#[test]
fn client_routing_headers_are_always_removed_and_never_pick_a_target() {
    let c = config(&format!("{{{ROUTES}}}"));
    let e = Engine::new(&c, "sr");
    // No key: the headers go, the route is recomputed.
    let mut info = to("admin");
    let plan = e.decide(
        &c,
        &headers(&[
            ("x-meshguard-sandbox-cluster", "admin"),
            ("x-envoy-original-dst-host", "10.0.0.1:22"),
        ]),
        &mut info,
    );
    assert_eq!(
        plan.ops,
        vec![
            HeaderOp::Remove("x-meshguard-sandbox-cluster".into()),
            HeaderOp::Remove("x-envoy-original-dst-host".into())
        ]
    );
    assert!(plan.clear_route_cache && plan.removed_client_headers);
    assert_eq!(plan.outcome, Outcome::NoKey);
    // With a key: the route was picked by the client's header, so the service is unknown.
    let mut info = to("reviews-dev-1");
    let plan = e.decide(
        &c,
        &headers(&[
            ("x-meshguard-sandbox-cluster", "reviews-dev-1"),
            ("baggage", "sandbox=dev-1"),
        ]),
        &mut info,
    );
    assert_eq!(
        plan.ops,
        vec![HeaderOp::Remove("x-meshguard-sandbox-cluster".into())]
    );
    assert!(matches!(
        plan.outcome,
        Outcome::Fallback {
            reason: Fallback::NoService,
            ..
        }
    ));
    assert_eq!(info.calls, 0);
    // A spoofed address is replaced by the table's.
    let plan = e.decide(
        &c,
        &headers(&[
            ("x-envoy-original-dst-host", "10.0.0.1:22"),
            ("baggage", "sandbox=dev-2"),
        ]),
        &mut to("reviews"),
    );
    assert_eq!(
        plan.ops,
        vec![
            replace(
                "x-meshguard-sandbox-cluster",
                "meshguard_sandbox_original_dst"
            ),
            replace("x-envoy-original-dst-host", "127.0.0.1:9002"),
        ]
    );
}

#[test]
fn service_from_authority() {
    let c = config(&format!("{{{ROUTES}, \"service_from\": \"authority\"}}"));
    let e = Engine::new(&c, "sr");
    let mut info = Info::default();
    let plan = e.decide(
        &c,
        &headers(&[
            (":authority", "Reviews:9080"),
            ("baggage", "sandbox=dev-1"),
            ("x-meshguard-sandbox-cluster", "x"),
        ]),
        &mut info,
    );
    assert_eq!(
        plan.ops,
        vec![replace("x-meshguard-sandbox-cluster", "reviews-dev-1")]
    );
    assert!(plan.removed_client_headers);
    assert_eq!(info.calls, 0);
}

#[test]
fn dry_run_decides_but_only_removes_client_headers() {
    let c = config(&format!(
        "{{{ROUTES}, \"mode\": \"dry_run\", \"response_header\": true}}"
    ));
    let e = Engine::new(&c, "sr");
    let plan = e.decide(
        &c,
        &headers(&[("baggage", "sandbox=dev-1")]),
        &mut to("reviews"),
    );
    assert!(matches!(plan.outcome, Outcome::Routed { .. }));
    assert!(plan.ops.is_empty() && !plan.clear_route_cache && plan.served_by.is_none());
    let plan = e.decide(
        &c,
        &headers(&[
            ("baggage", "sandbox=dev-1"),
            ("x-meshguard-sandbox-cluster", "x"),
        ]),
        &mut to("reviews"),
    );
    assert_eq!(
        plan.ops,
        vec![HeaderOp::Remove("x-meshguard-sandbox-cluster".into())]
    );
}

#[test]
fn edge_mode_strips_keys_of_untrusted_requests() {
    let c = config(&format!(
        r#"{{{ROUTES}, "edge": {{"trusted_source_cidrs": ["10.0.0.0/8"],
                                 "trusted_header": {{"name": "x-trusted", "value": "yes"}}}}}}"#
    ));
    let e = Engine::new(&c, "sr");
    let h = headers(&[("baggage", "user=a, sandbox=dev-1")]);
    let mut outside = Info {
        cluster: Some("reviews"),
        source: Some("203.0.113.9:4000"),
        calls: 0,
    };
    let plan = e.decide(&c, &h, &mut outside);
    assert_eq!(
        plan.outcome,
        Outcome::Fallback {
            reason: Fallback::Stripped,
            key: Some("dev-1".into())
        }
    );
    assert_eq!(plan.ops, vec![replace("baggage", "user=a")]);
    assert_eq!(outside.calls, 1, "the source address only");
    // Trusted by source range, or by the edge's header.
    let mut inside = Info {
        cluster: Some("reviews"),
        source: Some("10.1.2.3:4000"),
        calls: 0,
    };
    assert!(matches!(
        e.decide(&c, &h, &mut inside).outcome,
        Outcome::Routed { .. }
    ));
    let trusted = headers(&[("baggage", "sandbox=dev-1"), ("x-trusted", "yes")]);
    let mut info = Info {
        cluster: Some("reviews"),
        source: Some("203.0.113.9:4000"),
        calls: 0,
    };
    assert!(matches!(
        e.decide(&c, &trusted, &mut info).outcome,
        Outcome::Routed { .. }
    ));
    assert_eq!(
        info.calls, 1,
        "the header was enough: no source address read"
    );
    // No key material: nothing to strip, no host call.
    let mut quiet = Info::default();
    assert_eq!(
        e.decide(&c, &headers(&[("baggage", "user=a")]), &mut quiet),
        Plan::default()
    );
    assert_eq!(quiet.calls, 0);
    // An edge with nothing trusted strips everything.
    let c = config(r#"{"edge": {}}"#);
    let plan = Engine::new(&c, "sr").decide(
        &c,
        &headers(&[("baggage", "sandbox=x")]),
        &mut Info::default(),
    );
    assert_eq!(plan.ops, vec![HeaderOp::Remove("baggage".into())]);
}

// === registry ===

const REGISTRY: &str = r#""registry": {"cluster": "reg", "path": "/v1/sandboxes", "poll_interval": "10s", "timeout": "1s"}"#;

fn ok<'a>(body: &'a str, etag: Option<&'a str>) -> RegistryResponse<'a> {
    RegistryResponse {
        status: Some(200),
        etag: etag.map(str::as_bytes),
        body: body.as_bytes(),
        body_len: body.len(),
    }
}

fn status(s: Option<u16>) -> RegistryResponse<'static> {
    RegistryResponse {
        status: s,
        etag: None,
        body: b"",
        body_len: 0,
    }
}

const DOC_V1: &str = r#"{"version": "1", "sandboxes": [{"key": "dev-3", "service": "reviews", "cluster": "reviews-dev-3"}]}"#;
const DOC_V2: &str = r#"{"version": "2", "sandboxes": [{"key": "dev-3", "service": "reviews", "cluster": "reviews-dev-3b"}]}"#;

#[test]
fn one_worker_polls_per_period_and_all_workers_load_the_table() {
    let c = config(&format!("{{{ROUTES}, {REGISTRY}}}"));
    let mut store = MemStore::default();
    let mut workers: Vec<Engine> = (0..3).map(|_| Engine::new(&c, "sr")).collect();
    let mut polls = 0;
    // 100 ms ticks for 60 s, starting at an arbitrary wall time.
    let t0 = 1_700_000_000 * S;
    for step in 0..600u64 {
        let now = t0 + step * S / 10;
        for (i, w) in workers.iter_mut().enumerate() {
            let tick = w.tick(&c, now + i as u64, &mut store);
            if let Some(headers) = tick.poll {
                polls += 1;
                assert!(headers.contains(&(":path".into(), "/v1/sandboxes".into())));
                assert!(headers.contains(&(":authority".into(), "reg".into())));
                let outcome = w.registry_response(&c, ok(DOC_V1, Some("\"v1\"")), &mut store);
                if polls == 1 {
                    assert_eq!(outcome, RegistryOutcome::Updated(1));
                    assert!(!headers.iter().any(|(k, _)| k == "if-none-match"));
                } else {
                    assert_eq!(outcome, RegistryOutcome::NotModified);
                    assert!(headers.contains(&("if-none-match".into(), "\"v1\"".into())));
                }
            }
        }
    }
    assert_eq!(polls, 6, "one poll per 10 s period across three workers");
    for w in &workers {
        assert_eq!(w.generation(), 1);
        assert_eq!(
            w.table().get("dev-3", "reviews"),
            Some(&Target::Cluster("reviews-dev-3".into()))
        );
        assert_eq!(w.table().len(), 3, "static routes kept");
    }
}

#[test]
fn errors_and_304_keep_the_last_good_table() {
    let c = config(&format!(
        r#"{{{ROUTES}, "registry": {{"cluster": "reg", "poll_interval": "1s", "max_body_bytes": 2048, "max_entries": 2}}}}"#
    ));
    let mut store = MemStore::default();
    let mut a = Engine::new(&c, "sr");
    let mut b = Engine::new(&c, "sr");
    assert!(a.tick(&c, S, &mut store).poll.is_some());
    assert_eq!(
        a.registry_response(&c, ok(DOC_V1, None), &mut store),
        RegistryOutcome::Updated(1)
    );
    let big = format!("[{}]", " ".repeat(3000));
    let many = r#"[{"key": "a", "service": "s", "cluster": "c"}, {"key": "b", "service": "s", "cluster": "c"},
                   {"key": "c", "service": "s", "cluster": "c"}]"#;
    for bad in [
        status(None),
        status(Some(500)),
        status(Some(404)),
        ok("{not json", None),
        ok(
            r#"[{"key": "x", "service": "s", "address": "example.com:80"}]"#,
            None,
        ),
        ok(&big, None),
        ok(many, None),
        RegistryResponse {
            status: Some(200),
            etag: None,
            body: b"",
            body_len: 1 << 30,
        },
    ] {
        assert!(
            matches!(
                a.registry_response(&c, bad, &mut store),
                RegistryOutcome::Error(_)
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        a.registry_response(&c, status(Some(304)), &mut store),
        RegistryOutcome::NotModified
    );
    assert_eq!(
        a.registry_response(&c, ok(DOC_V1, None), &mut store),
        RegistryOutcome::NotModified,
        "same version"
    );
    b.tick(&c, 2 * S, &mut store);
    for w in [&a, &b] {
        assert_eq!(w.generation(), 1);
        assert!(w.table().get("dev-3", "reviews").is_some());
    }
    // A new version replaces the table everywhere; an empty document empties it.
    assert_eq!(
        a.registry_response(&c, ok(DOC_V2, None), &mut store),
        RegistryOutcome::Updated(1)
    );
    assert!(b.tick(&c, 3 * S, &mut store).reloaded.is_some());
    assert_eq!(
        b.table().get("dev-3", "reviews"),
        Some(&Target::Cluster("reviews-dev-3b".into()))
    );
    assert_eq!(
        a.registry_response(&c, ok("[]", None), &mut store),
        RegistryOutcome::Updated(0)
    );
    b.tick(&c, 4 * S, &mut store);
    assert_eq!((b.generation(), b.table().len()), (3, 2));
    // An unversioned body identical to the last one publishes nothing.
    assert_eq!(
        a.registry_response(&c, ok("[]", None), &mut store),
        RegistryOutcome::NotModified
    );
}

#[test]
fn a_corrupt_shared_table_is_ignored() {
    let c = config(&format!("{{{REGISTRY}}}"));
    let mut store = MemStore::default();
    let mut a = Engine::new(&c, "sr");
    a.tick(&c, S, &mut store);
    a.registry_response(&c, ok(DOC_V1, None), &mut store);
    store.set("sr/table", b"garbage", 0);
    store.set("sr/gen", &9u64.to_le_bytes(), 0);
    let mut b = Engine::new(&c, "sr");
    assert_eq!(b.tick(&c, 2 * S, &mut store).reloaded, None);
    assert_eq!(b.generation(), 0);
    assert_eq!(a.tick(&c, 3 * S, &mut store).reloaded, None);
    assert_eq!(a.generation(), 1, "a keeps its table");
}

#[test]
fn a_routed_request_uses_the_registry_table() {
    let c = config(&format!("{{{REGISTRY}}}"));
    let mut store = MemStore::default();
    let mut e = Engine::new(&c, "sr");
    let h = headers(&[("baggage", "sandbox=dev-3")]);
    assert!(matches!(
        e.decide(&c, &h, &mut to("reviews")).outcome,
        Outcome::Fallback {
            reason: Fallback::NoEntry,
            ..
        }
    ));
    e.tick(&c, S, &mut store);
    e.registry_response(&c, ok(DOC_V1, None), &mut store);
    assert_eq!(
        e.decide(&c, &h, &mut to("reviews")).ops,
        vec![replace("x-meshguard-sandbox-cluster", "reviews-dev-3")]
    );
}

#[test]
fn no_registry_no_shared_data() {
    let c = config("{}");
    let mut store = MemStore::default();
    let mut e = Engine::new(&c, "sr");
    assert_eq!(e.tick(&c, S, &mut store), Tick::default());
    assert!(store.get("sr/poll").is_none());
}
