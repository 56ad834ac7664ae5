//! Config JSON of each filter: the path `on_configure` takes (`meshguard_proxy::parse_config`
//! into the policy's `RawConfig`, then `TryFrom` into the validated `Config`), followed, for an
//! accepted config, by a few decisions of the policy with it: a config the validation accepts
//! must never make the engine panic or break its invariants.

use meshguard_policy::invalid::Invalid;
use meshguard_policy::store::MemStore;
use meshguard_policy::{circuit_breaker, load_shed, rate_limit, sandbox};
use serde::de::DeserializeOwned;

/// Parses and validates like `meshguard_proxy::config::configure_validated` (which only logs
/// and returns `Option`). Checks that the same bytes give the same verdict twice and that a
/// rejection names a field and a reason.
fn validated<Raw, T>(data: &[u8]) -> Option<T>
where
    Raw: DeserializeOwned,
    T: TryFrom<Raw, Error = Invalid>,
{
    let result = match meshguard_proxy::parse_config::<Raw>(data) {
        Ok(raw) => T::try_from(raw).map_err(|e| e.to_string()),
        Err(e) => {
            // The path is empty only for a field whose name is the empty string.
            assert!(
                !e.reason.is_empty(),
                "a parse error without a reason: {e:?}"
            );
            Err(e.to_string())
        }
    };
    let again = meshguard_proxy::parse_config::<Raw>(data)
        .map_err(|e| e.to_string())
        .and_then(|raw| T::try_from(raw).map_err(|e| e.to_string()));
    match (&result, &again) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "the same config gave two different errors");
            assert!(!a.trim().is_empty(), "an empty error message");
        }
        _ => panic!("the same config was accepted once and rejected once"),
    }
    result.ok()
}

/// Fixed requests the accepted configs are exercised with.
fn requests() -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let h = |pairs: &[(&str, &[u8])]| -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    };
    vec![
        h(&[
            (":method", b"GET"),
            (":path", b"/healthz"),
            (":authority", b"svc"),
        ]),
        h(&[
            (":method", b"POST"),
            (":path", b"/checkout?x=1"),
            (":authority", b"reviews"),
            ("x-api-key", b"k1"),
            ("x-criticality", b"critical"),
            ("x-forwarded-for", b"1.2.3.4, 10.0.0.1"),
            ("baggage", b"user=a,sandbox=dev-1"),
            (
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", b"congo=t61,sandbox=dev-1"),
            ("x-sandbox", b"dev-2"),
        ]),
        h(&[
            (":method", b"PUT"),
            (":path", b"/\xff\xfe"),
            (":authority", b"\xc3\x28"),
            ("x-criticality", b"\xff"),
            ("baggage", b"sandbox=%zz,,;;="),
        ]),
    ]
}

fn header<'a>(req: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    req.iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// `load_shed` config; an accepted one drives a worker: admissions within the lease, the
/// decided limit within `[min, max]` of the config.
pub fn config_load_shed(data: &[u8]) {
    use load_shed::config::{Config, RawConfig};
    let Some(c) = validated::<RawConfig, Config>(data) else {
        return;
    };
    let g = &c.gradient;
    assert!(
        g.min_limit >= 1.0 && g.min_limit <= g.initial_limit && g.initial_limit <= g.max_limit,
        "accepted limits out of order: {g:?}"
    );
    assert!((400..=599).contains(&c.status), "status {}", c.status);
    let mut store = MemStore::default();
    let mut w = load_shed::worker::Worker::new(&c, "fuzz", &mut store);
    let interval = u64::try_from(c.update_interval.as_nanos()).unwrap_or(u64::MAX);
    let mut now = 1_000_000_000u64;
    for round in 0..3 {
        for req in requests() {
            let path = header(&req, ":path").unwrap_or_default();
            let method = header(&req, ":method").unwrap_or_default();
            let class_header = c
                .criticality_header
                .as_deref()
                .and_then(|h| header(&req, h));
            let _ = c.is_exempt(path, method);
            let class = c.classify(class_header, path, method);
            if let load_shed::criticality::Admit::Yes { low_load } = w.admit(class) {
                w.complete(class, 1000 + round, low_load);
            }
        }
        now = now.saturating_add(interval);
        if let Some(d) = w.tick(now, &mut store) {
            assert!(
                d.limit >= g.min_limit && d.limit <= g.max_limit,
                "limit {} outside [{}, {}]",
                d.limit,
                g.min_limit,
                g.max_limit
            );
        }
    }
    assert_eq!(w.inflight(), 0);
}

/// `circuit_breaker` config; an accepted one admits and records a few calls.
pub fn config_circuit_breaker(data: &[u8]) {
    use circuit_breaker::config::{Config, RawConfig};
    use circuit_breaker::engine::{Engine, Finished};
    use circuit_breaker::outcome::Observed;
    let Some(c) = validated::<RawConfig, Config>(data) else {
        return;
    };
    assert!(c.params.permitted_probes >= 1, "no probes: {:?}", c.params);
    assert!(
        c.params.base_wait_ns <= c.params.max_wait_ns,
        "base wait above max: {:?}",
        c.params
    );
    let mut store = MemStore::default();
    let mut e = Engine::new("fuzz", 7);
    let mut now = 1_000_000_000u64;
    for (i, req) in requests().into_iter().cycle().take(12).enumerate() {
        let value = c.key_header.as_deref().and_then(|h| header(&req, h));
        let key = e.key(&c, "upstream", value, &mut store);
        let d = e.admit(&c, &key, now, &mut store);
        now = now.saturating_add(10_000_000);
        let observed = Observed {
            http_status: [Some(503), Some(200), None][i % 3],
            ..Observed::default()
        };
        let _ = e.record(
            &c,
            &key,
            &d,
            &Finished {
                observed,
                duration_ns: 5_000_000,
            },
            || now,
            &mut store,
        );
        if i % 4 == 3 {
            let _ = e.tick(&c, now, &mut store);
        }
    }
}

/// `rate_limit` config; an accepted one decides a few requests (every profile too).
pub fn config_rate_limit(data: &[u8]) {
    use rate_limit::config::{Config, RawConfig};
    use rate_limit::descriptor::Request;
    use rate_limit::engine::Engine;
    let Some(c) = validated::<RawConfig, Config>(data) else {
        return;
    };
    for r in &c.rules {
        if let Some(b) = &r.bucket {
            assert!(b.fill_interval_ns > 0, "rule {} fills every 0 ns", r.name);
        }
        if let Some(p) = r.profile {
            assert!(
                p < c.profiles.len(),
                "rule {} in unknown profile {p}",
                r.name
            );
        }
    }
    let mut store = MemStore::default();
    let mut e = Engine::new("fuzz");
    let mut now = 1_000_000_000u64;
    for req in requests() {
        let r = Request {
            headers: &req,
            source_address: Some(b"10.0.0.2:4711"),
        };
        for profile in core::iter::once(None).chain((0..c.profiles.len()).map(Some)) {
            let _ = e.decide_in(&c, profile, &r, || now, &mut store);
        }
        now = now.saturating_add(1_000_000);
        e.tick(&c, now, &mut store);
    }
}

/// `sandbox_router` config; an accepted one builds its engine and inspects a few requests.
pub fn config_sandbox_router(data: &[u8]) {
    use sandbox::config::{Config, RawConfig};
    let Some(c) = validated::<RawConfig, Config>(data) else {
        return;
    };
    let engine = sandbox::engine::Engine::new(&c, "fuzz");
    let _ = engine.table().len();
    for req in requests() {
        let _ = sandbox::extract::inspect(&c, &req);
        let _ = sandbox::extract::strip_ops(&c, &req);
    }
}
