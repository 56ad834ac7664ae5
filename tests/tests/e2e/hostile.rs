//! Hostile traffic against stock Envoy 1.40 with meshguard's compiled filters.
//!
//! Every case sends what an attacker (or a broken neighbour) can send — huge and malformed
//! `baggage`, a flood of distinct rate-limit keys, non-UTF-8 header values, 100 repeated
//! headers, 60 KiB paths, cancelled requests, upstream resets, a rate limit service or sandbox
//! registry that answers garbage, too much, or nothing, spoofed `x-forwarded-for` — and then
//! checks that the filter still works:
//!
//! - a normal request still gets the normal answer, and the filter's counters still move;
//! - no Wasm VM failed: Envoy 1.40 has no stat for a trapped VM, so the check is its log (a trap
//!   logs `Function: proxy_on_... failed: Uncaught RuntimeError`, a Rust panic `panicked at`)
//!   plus `wasm.envoy.wasm.runtime.v8.created` unchanged (no VM was re-created) and every
//!   `wasm.<plugin>.vm_reload*` at 0. [`the_trap_detector_sees_a_trapped_vm`] shows the check
//!   catches a real trap (the ABI probe fixture panics on request);
//! - memory stays bounded: Envoy's RSS after the hostile traffic is compared with a warm-up
//!   sample (a growth bound, not a timing threshold).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshguard_rls::{FaultMode, Limits, RlsServer, Storage};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, Response, envoy, h1};
use meshguard_upstream::{Upstream, UpstreamConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RL: &str = "wasmcustom.meshguard.rate_limit.";
const SB: &str = "wasmcustom.meshguard.sandbox_router.";
const LS: &str = "wasmcustom.meshguard.load_shed.";
const CB: &str = "wasmcustom.meshguard.circuit_breaker.";
const ROUTING: &str = "x-meshguard-sandbox-cluster";
/// Bound on every wait for a condition (stats flushed, a registry poll, a gauge settling).
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Shared checks

/// Log lines Envoy 1.40 writes when a Wasm VM traps or a Rust filter panics.
const TRAP_MARKERS: &[&str] = &["Uncaught", "panicked at", "RuntimeError"];

fn trap_lines(envoy: &Envoy) -> Vec<String> {
    envoy
        .log()
        .lines()
        .filter(|l| TRAP_MARKERS.iter().any(|m| l.contains(m)))
        .map(str::to_owned)
        .collect()
}

/// VMs created so far (a crashed VM that Envoy replaces makes this grow).
fn vms_created(envoy: &Envoy) -> u64 {
    envoy
        .stat("wasm.envoy.wasm.runtime.v8.created")
        .expect("/stats")
}

/// Why a VM looks failed: a trap or panic in the log, a VM created since `created`, or a
/// reload; `None` when all is well.
fn vm_failure(envoy: &Envoy, created: u64) -> Option<String> {
    let traps = trap_lines(envoy);
    if !traps.is_empty() {
        return Some(format!("a Wasm VM failed:\n{}", traps.join("\n")));
    }
    let stats = envoy.stats().expect("/stats");
    let now = stat(&stats, "wasm.envoy.wasm.runtime.v8.created");
    if now != created {
        return Some(format!("{} VMs created after start-up", now - created));
    }
    stats
        .iter()
        .find(|(name, value)| {
            name.starts_with("wasm.") && name.contains(".vm_reload") && **value > 0
        })
        .map(|(name, value)| format!("{name}: {value}"))
}

fn assert_no_vm_failure(envoy: &Envoy, created: u64) {
    if let Some(why) = vm_failure(envoy, created) {
        panic!("{why}");
    }
}

fn rss_mib(envoy: &Envoy) -> f64 {
    envoy.rss_bytes().expect("VmRSS") as f64 / (1024.0 * 1024.0)
}

/// RSS after the hostile traffic is within `tolerance` (a fraction) of the warm-up sample.
fn assert_rss_bounded(case: &str, warm: f64, after: f64, tolerance: f64) {
    println!("{case}: Envoy RSS {warm:.1} MiB after warm-up, {after:.1} MiB after");
    assert!(
        after <= warm * (1.0 + tolerance),
        "{case}: RSS grew from {warm:.1} MiB to {after:.1} MiB (more than {:.0} %)",
        tolerance * 100.0
    );
}

/// Request headers as byte pairs.
type Headers<'a> = Vec<(&'a [u8], &'a [u8])>;
/// Request headers, owned.
type OwnedHeaders = Vec<(Vec<u8>, Vec<u8>)>;

fn stat(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

async fn start(cfg: EnvoyConfig) -> Envoy {
    tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap()
}

/// Waits (bounded) for a stats predicate, printing the matching stats when it fails.
fn wait_stats(
    envoy: &Envoy,
    prefix: &str,
    pred: impl FnMut(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    envoy.wait_for_stats(WAIT, pred).unwrap_or_else(|e| {
        let s = envoy.stats().unwrap_or_default();
        panic!(
            "{e}: {:#?}",
            s.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .collect::<Vec<_>>()
        )
    })
}

/// One request on a fresh connection (so requests spread over Envoy's workers).
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&[u8], &[u8])]) -> Response {
    let mut all: Vec<(&[u8], &[u8])> = vec![(b"host", b"svc")];
    all.extend_from_slice(headers);
    h1::exchange(addr, &h1::head(method, path, &all))
        .await
        .unwrap_or_else(|e| panic!("{method} {} bytes of path: {e:#}", path.len()))
}

/// A route config: routing-header route first (the shipped sandbox set-up), then `baseline`.
fn sandbox_routes(baseline: &str) -> Value {
    json!({"name": "outbound", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": ROUTING, "present_match": true}]},
         "route": {"cluster_header": ROUTING, "timeout": "30s"},
         "request_headers_to_remove": [ROUTING]},
        {"match": {"prefix": "/"}, "route": {"cluster": baseline, "timeout": "30s"}},
    ]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trap_detector_sees_a_trapped_vm() {
    // The negative control of `assert_no_vm_failure`: the ABI probe fixture panics on
    // `x-probe: panic`, and the check must see it.
    let cfg = EnvoyConfig::new(None).concurrency(1).listener(
        Listener::new("probe")
            .filter(Filter::meshguard("abi_probe").unwrap())
            .direct_response(200, "ok"),
    );
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    let addr = envoy.listener("probe");
    assert_eq!(send(addr, "GET", "/", &[]).await.status, 200);
    assert!(trap_lines(&envoy).is_empty());
    let r = send(addr, "GET", "/", &[(b"x-probe", b"panic")]).await;
    assert_eq!(r.status, 503, "{r:?}");
    // A trapped VM fails every later request on its worker.
    assert_eq!(send(addr, "GET", "/", &[]).await.status, 503);
    let why = vm_failure(&envoy, created).expect("the trap was not detected");
    assert!(why.contains("RuntimeError"), "{why}");
}

// ---------------------------------------------------------------------------------------------
// baggage: 8 KiB, 180 members, malformed members

/// Members that do not parse (each is skipped by the W3C parser, never fatal).
const MALFORMED: &[&[u8]] = &[
    b"bad key=1",
    b"=novalue",
    b"noequals",
    b"k=%zz",
    b"k=\xff\xfe",
    b"k=v;;;=",
    b"k=\"quoted\"",
    b"k=a\\b",
    b"sandbox",
    b"sandbox=dev-1 dev-2",
];

/// A `baggage` list of `members` members of about `size` bytes in all, the last one `last`,
/// with a malformed member every fifth.
fn baggage(members: usize, size: usize, last: &[u8]) -> Vec<u8> {
    let mut items: Vec<Vec<u8>> = Vec::new();
    for i in 0..members - 1 {
        if i % 5 == 4 {
            items.push(MALFORMED[(i / 5) % MALFORMED.len()].to_vec());
        } else {
            items.push(format!("m{i}=v").into_bytes());
        }
    }
    items.push(last.to_vec());
    // Pad the well-formed members to reach `size` bytes.
    let now: usize = items.iter().map(Vec::len).sum::<usize>() + items.len() - 1;
    let mut missing = size.saturating_sub(now);
    let padded: Vec<usize> = (0..items.len() - 1).filter(|i| i % 5 != 4).collect();
    for (n, i) in padded.iter().enumerate() {
        let add = missing.div_ceil(padded.len() - n);
        items[*i].extend(std::iter::repeat_n(b'x', add));
        missing -= add;
    }
    items.join(&b","[..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_malformed_baggage_is_parsed_within_the_w3c_limits() {
    let b = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let dev_1 = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let mut listener = Listener::new("out")
        .filter(
            Filter::meshguard("sandbox_router")
                .unwrap()
                .config(r#"{"routes": [{"key": "dev-1", "service": "b", "cluster": "b_dev_1"}]}"#),
        )
        .hcm(
            "common_http_protocol_options",
            json!({"max_headers_count": 256}),
        );
    listener.route_config = sandbox_routes("b");
    let mut cfg = EnvoyConfig::new(None).listener(listener);
    cfg.clusters = vec![
        envoy::cluster("b", b.addr()),
        envoy::cluster("b_dev_1", dev_1.addr()),
    ];
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    let addr = envoy.listener("out");
    let received = || [b.stats().received, dev_1.stats().received];
    let to = |before: [u64; 2], after: [u64; 2]| -> &'static str {
        match (after[0] - before[0], after[1] - before[1]) {
            (1, 0) => "baseline",
            (0, 1) => "dev-1",
            other => panic!("{other:?}"),
        }
    };

    // 180 members, 8 KiB, the key last: considered.
    let full = baggage(180, 8100, b"sandbox=dev-1");
    assert!((8000..=8192).contains(&full.len()), "{}", full.len());
    // 181 members: the key is the 181st, beyond the 180 a receiver must consider.
    let too_many = baggage(181, 8000, b"sandbox=dev-1");
    // 150 members, the key member ending past byte 8192.
    let too_long = baggage(150, 8300, b"sandbox=dev-1");
    assert!(too_long.len() > 8192);
    // The key itself malformed (not a baggage-octet) or an invalid key after decoding.
    let bad_octet = baggage(180, 8100, b"sandbox=de\"v-1");
    let bad_key = baggage(180, 8100, b"sandbox=dev%201");
    // The same 180 members as 100 separate `baggage` headers (one list, W3C).
    let members: Vec<&[u8]> = full.split(|c| *c == b',').collect();
    let split: Vec<Vec<u8>> = members.chunks(2).map(|c| c.join(&b","[..])).collect();
    assert_eq!(split.len(), 90);
    let mut split_headers: Vec<(&[u8], &[u8])> = split
        .iter()
        .map(|v| (&b"baggage"[..], v.as_slice()))
        .collect();
    for _ in 0..10 {
        split_headers.push((b"baggage", b""));
    }

    let cases: [(&str, Headers, &str); 6] = [
        ("180 members, 8 KiB", vec![(b"baggage", &full)], "dev-1"),
        ("181 members", vec![(b"baggage", &too_many)], "baseline"),
        ("past 8192 bytes", vec![(b"baggage", &too_long)], "baseline"),
        (
            "malformed key member",
            vec![(b"baggage", &bad_octet)],
            "baseline",
        ),
        ("invalid key", vec![(b"baggage", &bad_key)], "baseline"),
        ("100 baggage headers", split_headers, "dev-1"),
    ];
    let rounds: u32 = 40;
    let mut rss_warm = 0.0;
    for round in 0..rounds {
        for (case, headers, want) in &cases {
            let before = received();
            let r = send(addr, "GET", "/", headers).await;
            assert_eq!(r.status, 200, "{case}: {r:?}");
            assert_eq!(to(before, received()), *want, "{case}");
        }
        if round == 4 {
            rss_warm = rss_mib(&envoy);
        }
    }
    let n = u64::from(rounds);
    let stats = wait_stats(&envoy, SB, |s| {
        stat(s, &format!("{SB}routed.dev-1")) == 2 * n
            && stat(s, &format!("{SB}fallback.invalid_key")) >= n
    });
    println!(
        "baggage: routed {} fallback.invalid_key {} ({} requests of up to {} bytes of baggage)",
        stat(&stats, &format!("{SB}routed")),
        stat(&stats, &format!("{SB}fallback.invalid_key")),
        6 * n,
        too_long.len()
    );
    // And afterwards a plain request still routes.
    let before = received();
    let r = send(addr, "GET", "/", &[(b"baggage", b"sandbox=dev-1")]).await;
    assert_eq!((r.status, to(before, received())), (200, "dev-1"));
    assert_no_vm_failure(&envoy, created);
    assert_rss_bounded("baggage", rss_warm, rss_mib(&envoy), 0.10);
}

// ---------------------------------------------------------------------------------------------
// 10,000 distinct rate-limit keys per second for 30 s

/// What the flood client saw.
#[derive(Debug, Default)]
struct Flood {
    sent: u64,
    ok: u64,
    limited: u64,
    other: u64,
    hot_sent: u64,
    hot_ok: u64,
    seconds: f64,
}

/// Every `HOT_EVERY`-th request carries the same key (`hot`).
const HOT_EVERY: u64 = 100;

/// HTTP/1.1 load at a fixed schedule: request `i` is due at `i / rate` seconds and carries a
/// new `x-client` key (`k<i>`), except every [`HOT_EVERY`]-th, which carries `hot`. `conns`
/// keep-alive connections take the next due request as soon as they are free, so when Envoy
/// cannot keep up the achieved rate falls below `rate` (reported, not hidden). No pipelining:
/// Envoy closes an HTTP/1.1 connection that has unread pipelined requests after a local reply.
async fn flood(addr: SocketAddr, rate: f64, duration: Duration, conns: usize) -> Flood {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut r = Flood::default();
            let mut conn = h1::Conn::connect(addr).await.unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let due = Duration::from_secs_f64(i as f64 / rate);
                if due >= duration {
                    return r;
                }
                tokio::time::sleep_until((start + due).into()).await;
                let hot = i.is_multiple_of(HOT_EVERY);
                let key = if hot {
                    "hot".to_owned()
                } else {
                    format!("k{i}")
                };
                let req = h1::head(
                    "GET",
                    "/",
                    &[(b"host", b"flood"), (b"x-client", key.as_bytes())],
                );
                conn.send(&req).await.unwrap();
                let resp = conn.read_response(false).await.unwrap();
                r.sent += 1;
                match resp.status {
                    200 => r.ok += 1,
                    429 => r.limited += 1,
                    _ => r.other += 1,
                }
                if hot {
                    r.hot_sent += 1;
                    r.hot_ok += u64::from(resp.status == 200);
                }
                if resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
                {
                    conn = h1::Conn::connect(addr).await.unwrap();
                }
            }
        }));
    }
    let mut total = Flood::default();
    for t in tasks {
        let r = t.await.unwrap();
        total.sent += r.sent;
        total.ok += r.ok;
        total.limited += r.limited;
        total.other += r.other;
        total.hot_sent += r.hot_sent;
        total.hot_ok += r.hot_ok;
    }
    total.seconds = start.elapsed().as_secs_f64();
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_keys_stays_in_the_bucket_table() {
    const CAP: u64 = 1000;
    const RATE: f64 = 10_000.0;
    let duration = Duration::from_secs(30);
    let config = format!(
        r#"{{"descriptors": [{{"name": "per_key", "entries": [{{"header": {{"name": "x-client"}}}}],
              "token_bucket": {{"max_tokens": 2, "fill_interval": "1h"}},
              "max_dynamic_buckets": {CAP}}}]}}"#
    );
    let cfg = EnvoyConfig::new(None).listener(
        Listener::new("rl")
            .filter(Filter::meshguard("rate_limit").unwrap().config(config))
            .direct_response(200, "ok"),
    );
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    let addr = envoy.listener("rl");
    let rss_start = rss_mib(&envoy);

    let load = tokio::spawn(flood(addr, RATE, duration, 64));
    let t0 = Instant::now();
    let mut samples = Vec::new();
    for at in [10u64, 20] {
        tokio::time::sleep_until((t0 + Duration::from_secs(at)).into()).await;
        samples.push((at, rss_mib(&envoy)));
    }
    let f = load.await.unwrap();
    samples.push((30, rss_mib(&envoy)));
    let distinct = f.sent - f.hot_sent;
    println!(
        "key flood: sent {} ({} distinct keys + {} hot) in {:.1} s = {:.0} rps (target {RATE}); \
         200 {} 429 {} other {}; hot key admitted {} of {}",
        f.sent,
        distinct,
        f.hot_sent,
        f.seconds,
        f.sent as f64 / f.seconds,
        f.ok,
        f.limited,
        f.other,
        f.hot_ok,
        f.hot_sent
    );
    println!("key flood: Envoy RSS {rss_start:.1} MiB before, then {samples:?} (s, MiB)");
    assert!(distinct >= 100_000, "only {distinct} distinct keys sent");
    assert_eq!(f.other, 0, "{f:?}");
    assert_eq!(f.ok + f.limited, f.sent);

    let stats = wait_stats(&envoy, RL, |s| {
        stat(s, &format!("{RL}allowed")) + stat(s, &format!("{RL}limited.per_key")) == f.sent
    });
    let allowed = stat(&stats, &format!("{RL}allowed"));
    let evictions = stat(&stats, &format!("{RL}dynamic_evictions"));
    let contended = stat(&stats, &format!("{RL}contended"));
    println!(
        "key flood: allowed {allowed} limited {} dynamic_evictions {evictions} contended {contended}",
        stat(&stats, &format!("{RL}limited.per_key"))
    );
    assert_eq!(allowed, f.ok);
    // The table has CAP slots and a slot is never freed, only reused: every admitted new key
    // beyond the first CAP took its slot by evicting another.
    let new_keys_admitted = allowed - f.hot_ok;
    assert!(
        evictions + CAP >= new_keys_admitted,
        "{evictions} evictions for {new_keys_admitted} new keys in {CAP} slots"
    );
    // The hot key is used every few milliseconds; least-recently-used eviction keeps it, so
    // flooding new keys does not buy it a fresh bucket more than rarely.
    assert!(
        f.hot_ok * 10 <= f.hot_sent,
        "the hot key was admitted {} times of {}",
        f.hot_ok,
        f.hot_sent
    );
    // Buckets still work: a new key gets its 2 tokens, then 429.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            send(addr, "GET", "/", &[(b"x-client", b"after-the-flood")])
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_no_vm_failure(&envoy, created);
    let warm = samples[0].1;
    let last = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    assert_rss_bounded("key flood (10 s vs max of 20 s, 30 s)", warm, last, 0.10);
}

// ---------------------------------------------------------------------------------------------
// Non-UTF-8 values, 100 repeated headers, 60 KiB paths, through every filter

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_headers_and_long_paths_through_every_filter() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let configs = [
        (
            "load_shed",
            r#"{"criticality": {"header": "x-criticality"},
                "concurrency_limit_params": {"initial_concurrency_limit": 200,
                    "min_concurrency_limit": 100, "max_concurrency_limit": 400}}"#,
        ),
        (
            "circuit_breaker",
            r#"{"key": {"header": "x-tenant", "max_keys": 4}}"#,
        ),
        (
            "rate_limit",
            r#"{"descriptors": [
                  {"name": "per_client", "entries": [{"client_address": {"trusted_hops": 1}}, {"header": {"name": "x-tenant"}}],
                   "token_bucket": {"max_tokens": 100000, "fill_interval": "1s"}},
                  {"name": "api", "entries": [{"path": {"prefix": "/api/"}}],
                   "token_bucket": {"max_tokens": 100000, "fill_interval": "1s"}}],
                "token_bucket": {"max_tokens": 100000, "fill_interval": "1s"}}"#,
        ),
        (
            "sandbox_router",
            r#"{"key_sources": [{"baggage": "sandbox"}, {"header": "x-tenant"},
                                {"tracestate": "sb"}, {"uberctx": "sandbox"}],
                "routes": [{"key": "dev-1", "service": "upstream", "cluster": "upstream"}]}"#,
        ),
    ];
    let mut cfg = EnvoyConfig::new(Some(upstream.addr()));
    for (name, config) in configs {
        let mut l = Listener::new(name)
            .filter(Filter::meshguard(name).unwrap().config(config))
            .hcm("max_request_headers_kb", json!(96))
            .hcm(
                "common_http_protocol_options",
                json!({"max_headers_count": 256}),
            );
        if name == "sandbox_router" {
            l.route_config = sandbox_routes("upstream");
        }
        cfg = cfg.listener(l);
    }
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);

    let binary: &[&[u8]] = &[
        b"\xff\xfe\x80",
        b"caf\xe9",
        b"sandbox=\xc3\x28",
        b"\x80dev-1",
    ];
    let names: &[&[u8]] = &[
        b"x-criticality",
        b"x-tenant",
        b"baggage",
        b"x-forwarded-for",
        b"traceparent",
        b"tracestate",
        b"uberctx-sandbox",
    ];
    let long_path = format!("/api/{}", "a".repeat(60 * 1024));
    let long_query = format!("/?q={}", "%ff".repeat(20 * 1024 / 3));
    let xff_100: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256).into_bytes())
        .collect();

    let mut cases: Vec<(String, String, OwnedHeaders)> = Vec::new();
    for name in names {
        for value in binary {
            cases.push((
                format!("{} = {:?}", String::from_utf8_lossy(name), value),
                "/".into(),
                vec![(name.to_vec(), value.to_vec())],
            ));
        }
        // 100 repeated headers of the same name, mixing valid, binary and empty values.
        let repeated = (0..100)
            .map(|i| {
                let v: Vec<u8> = match i % 4 {
                    0 => format!("m{i}=v").into_bytes(),
                    1 => binary[i % binary.len()].to_vec(),
                    2 => Vec::new(),
                    _ => xff_100[i].clone(),
                };
                (name.to_vec(), v)
            })
            .collect();
        cases.push((
            format!("100 x {}", String::from_utf8_lossy(name)),
            "/".into(),
            repeated,
        ));
    }
    cases.push((
        "100 x x-forwarded-for addresses".into(),
        "/".into(),
        xff_100
            .iter()
            .map(|v| (b"x-forwarded-for".to_vec(), v.clone()))
            .collect(),
    ));
    cases.push(("60 KiB path".into(), long_path.clone(), Vec::new()));
    cases.push(("20 KiB of %ff in the query".into(), long_query, Vec::new()));
    cases.push((
        "60 KiB path + binary headers".into(),
        long_path,
        vec![
            (b"x-tenant".to_vec(), b"\xff".to_vec()),
            (b"baggage".to_vec(), b"sandbox=dev-1".to_vec()),
        ],
    ));

    let mut rss_warm = 0.0;
    for round in 0..5 {
        for (name, _) in configs {
            let addr = envoy.listener(name);
            for (case, path, headers) in &cases {
                let headers: Vec<(&[u8], &[u8])> = headers
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let r = send(addr, "GET", path, &headers).await;
                assert_eq!(r.status, 200, "{name}: {case}: {r:?}");
            }
        }
        if round == 0 {
            rss_warm = rss_mib(&envoy);
        }
    }
    let per_listener = 5 * cases.len() as u64;
    println!(
        "odd headers: {} cases x 4 filters x 5 rounds, all 200",
        cases.len()
    );
    // Every filter saw (and counted) every request.
    let stats = wait_stats(&envoy, "wasmcustom.meshguard.", |s| {
        stat(s, &format!("{LS}admitted.critical"))
            + stat(s, &format!("{LS}admitted.critical_plus"))
            + stat(s, &format!("{LS}admitted.sheddable_plus"))
            + stat(s, &format!("{LS}admitted.sheddable"))
            == per_listener
            && stat(s, &format!("{CB}outcome.success")) == per_listener
            && stat(s, &format!("{RL}allowed")) == per_listener
            && stat(s, &format!("{SB}routed")) == 5
    });
    println!(
        "odd headers: sandbox_router routed {} fallback.invalid_key {} fallback.no_entry {}",
        stat(&stats, &format!("{SB}routed")),
        stat(&stats, &format!("{SB}fallback.invalid_key")),
        stat(&stats, &format!("{SB}fallback.no_entry")),
    );
    assert!(stat(&stats, &format!("{SB}fallback.invalid_key")) > 0);
    assert_no_vm_failure(&envoy, created);
    assert_rss_bounded("odd headers", rss_warm, rss_mib(&envoy), 0.10);
}

// ---------------------------------------------------------------------------------------------
// Cancelled requests and upstream resets

/// Opens `n` connections, each sending the head of a request plus part of its body (or a
/// whole GET that the upstream holds), and returns them open.
async fn hold_open(addr: SocketAddr, n: usize, partial_body: bool) -> Vec<h1::Conn> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut c = h1::Conn::connect(addr).await.unwrap();
        if partial_body {
            c.send(&h1::head(
                "POST",
                "/",
                &[(b"host", b"svc"), (b"content-length", b"100000")],
            ))
            .await
            .unwrap();
            c.send(&[b'x'; 1000]).await.unwrap();
        } else {
            c.send(&h1::head(
                "GET",
                "/",
                &[(b"host", b"svc"), (b"x-upstream-delay-ms", b"20000")],
            ))
            .await
            .unwrap();
        }
        conns.push(c);
    }
    conns
}

async fn wait_upstream_in_flight(upstream: &Upstream, n: u64) {
    let deadline = Instant::now() + WAIT;
    while upstream.stats().in_flight < n {
        assert!(
            Instant::now() < deadline,
            "upstream in flight {:?}",
            upstream.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_and_upstream_resets_leave_load_shed_at_zero() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let cfg = EnvoyConfig::new(Some(upstream.addr())).listener(Listener::new("ls").filter(
        Filter::meshguard("load_shed").unwrap().config(
            r#"{"concurrency_limit_params": {"initial_concurrency_limit": 200,
                "min_concurrency_limit": 100, "max_concurrency_limit": 400,
                "concurrency_update_interval": "100ms"}}"#,
        ),
    ));
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    let addr = envoy.listener("ls");
    let inflight = format!("{LS}inflight");
    let rss_warm = rss_mib(&envoy);
    for round in 0..3 {
        // 20 with half a body and 20 whose response the upstream holds; the gauge sees them.
        let mut conns = hold_open(addr, 20, true).await;
        conns.extend(hold_open(addr, 20, false).await);
        wait_upstream_in_flight(&upstream, 20).await;
        wait_stats(&envoy, LS, |s| stat(s, &inflight) == 40);
        // The clients go away mid-stream.
        drop(conns);
        wait_stats(&envoy, LS, |s| stat(s, &inflight) == 0);
        // Upstream resets: before headers, after headers and mid-body, 10 each.
        for reset in [&b"before-headers"[..], b"after-headers", b"mid-body"] {
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    tokio::spawn(async move {
                        let mut c = h1::Conn::connect(addr).await.unwrap();
                        c.send(&h1::head(
                            "GET",
                            "/",
                            &[
                                (b"host", b"svc"),
                                (b"x-upstream-reset", reset),
                                (b"x-upstream-body-size", b"100000"),
                            ],
                        ))
                        .await
                        .unwrap();
                        // 503 before headers; a cut body after: either is fine here.
                        let _ = c.read_response(false).await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        let s = wait_stats(&envoy, LS, |s| {
            stat(s, &inflight) == 0
                && stat(s, &format!("{LS}admitted.critical")) == (round + 1) * 70
        });
        println!(
            "load_shed round {round}: inflight {} admitted {} limit {}",
            stat(&s, &inflight),
            stat(&s, &format!("{LS}admitted.critical")),
            stat(&s, &format!("{LS}limit")),
        );
    }
    let r = send(addr, "GET", "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_vm_failure(&envoy, created);
    assert_rss_bounded(
        "cancel + resets (load_shed)",
        rss_warm,
        rss_mib(&envoy),
        0.10,
    );
}

async fn breaker_rig() -> (Upstream, Envoy) {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let cfg = EnvoyConfig::new(Some(upstream.addr())).listener(
        Listener::new("cb").filter(
            Filter::meshguard("circuit_breaker")
                .unwrap()
                .config(r#"{"open": {"base_duration": "30s", "jitter_percent": 0}}"#),
        ),
    );
    let envoy = start(cfg).await;
    (upstream, envoy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known limitation (docs/circuit-breaker.md): a response cut by an upstream reset \
            after its headers is classified by its status (success); detecting the reset would \
            cost a property read on every request"]
async fn upstream_resets_mid_body_are_breaker_failures() {
    let (upstream, envoy) = breaker_rig().await;
    let created = vms_created(&envoy);
    let addr = envoy.listener("cb");
    // Two successes, then resets after the response headers (status 200 already sent).
    for _ in 0..2 {
        assert_eq!(send(addr, "GET", "/", &[]).await.status, 200);
    }
    for reset in [&b"mid-body"[..], b"after-headers"] {
        for _ in 0..3 {
            let mut c = h1::Conn::connect(addr).await.unwrap();
            c.send(&h1::head(
                "GET",
                "/",
                &[
                    (b"host", b"svc"),
                    (b"x-upstream-reset", reset),
                    (b"x-upstream-body-size", b"100000"),
                ],
            ))
            .await
            .unwrap();
            let r = c.read_response(false).await;
            assert!(r.is_err(), "the body was not cut: {r:?}");
        }
    }
    let s = wait_stats(&envoy, CB, |s| {
        stat(s, &format!("{CB}outcome.success")) + stat(s, &format!("{CB}outcome.failure")) == 8
    });
    println!(
        "breaker after 2 ok + 6 resets after headers: success {} failure {} opened {}",
        stat(&s, &format!("{CB}outcome.success")),
        stat(&s, &format!("{CB}outcome.failure")),
        stat(&s, &format!("{CB}opened.consecutive_failures")),
    );
    assert_eq!(
        (
            stat(&s, &format!("{CB}outcome.success")),
            stat(&s, &format!("{CB}outcome.failure"))
        ),
        (2, 6),
        "a response cut by an upstream reset is a failure"
    );
    // Five consecutive failures opened it: the upstream sees nothing more.
    let before = upstream.stats().received;
    let r = send(addr, "GET", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(upstream.stats().received, before);
    assert_no_vm_failure(&envoy, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cancelling_mid_request_do_not_trip_the_breaker() {
    let (upstream, envoy) = breaker_rig().await;
    let created = vms_created(&envoy);
    let addr = envoy.listener("cb");
    assert_eq!(send(addr, "GET", "/", &[]).await.status, 200);
    // Clients go away while the upstream works on their requests (headers + part of a body,
    // or a whole request whose response the upstream holds), 5 at a time: the
    // consecutive-failure threshold.
    let mut cancelled = 0;
    for partial in [true, false] {
        let before = upstream.stats().received;
        let conns = hold_open(addr, 5, partial).await;
        let deadline = Instant::now() + WAIT;
        while upstream.stats().received < before + 5 {
            assert!(Instant::now() < deadline, "{:?}", upstream.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(conns);
        cancelled += 5;
        // Envoy has destroyed the streams (and so logged them through the filter) once its
        // connection manager counted them.
        wait_stats(&envoy, "http.cb.", |s| {
            stat(s, "http.cb.downstream_cx_destroy_remote_active_rq") >= cancelled
        });
        // The breaker decides from shared state: 5 failures would have opened it.
        let r = send(addr, "GET", "/", &[]).await;
        assert_eq!(
            r.status, 200,
            "{cancelled} client cancels (partial body: {partial}) opened the breaker: {r:?}"
        );
    }
    let s = wait_stats(&envoy, CB, |s| {
        stat(s, &format!("{CB}outcome.success")) >= 3
    });
    println!(
        "breaker after {cancelled} client cancels: success {} failure {} opened {} rejected {}",
        stat(&s, &format!("{CB}outcome.success")),
        stat(&s, &format!("{CB}outcome.failure")),
        stat(&s, &format!("{CB}opened.consecutive_failures")),
        stat(&s, &format!("{CB}rejected")),
    );
    assert_eq!(stat(&s, &format!("{CB}outcome.failure")), 0);
    assert_no_vm_failure(&envoy, created);
}

// ---------------------------------------------------------------------------------------------
// A rate limit service that answers garbage, too much, or nothing

/// How [`FakeRls`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum RlsMode {
    /// `RateLimitResponse{overall_code: OK}`.
    Ok = 0,
    /// gRPC OK with a 4 MiB message that is not a `RateLimitResponse`.
    Oversized = 1,
    /// A message prefix announcing 2 GiB, then a few bytes and `grpc-status: 0`.
    LyingLength = 2,
    /// Never answers the call.
    Silent = 3,
    /// A valid OK answer padded with a 4 MiB unknown field (protobuf skips it).
    PaddedOk = 4,
}

/// A minimal h2 RLS whose answer is chosen per call by [`RlsMode`].
struct FakeRls {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

const OVERSIZED: usize = 4 << 20;

type RlsBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn grpc_reply(message: Vec<u8>, declared_len: Option<u32>) -> http::Response<RlsBody> {
    let mut frame = vec![0u8];
    let len = declared_len.unwrap_or(u32::try_from(message.len()).unwrap());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from(frame))),
        Ok(Frame::trailers(trailers)),
    ];
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap()
}

impl FakeRls {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(RlsMode::Ok as u8));
        let calls = Arc::new(AtomicUsize::new(0));
        let (m, c) = (Arc::clone(&mode), Arc::clone(&calls));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (m, c) = (Arc::clone(&m), Arc::clone(&c));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (m, c) = (Arc::clone(&m), Arc::clone(&c));
                        async move {
                            let _ = req.into_body().collect().await;
                            c.fetch_add(1, Ordering::SeqCst);
                            let ok = vec![0x08, 0x01];
                            let reply = match m.load(Ordering::SeqCst) {
                                1 => grpc_reply(vec![0xff; OVERSIZED], None),
                                2 => grpc_reply(vec![0x08, 0x01], Some(0x7fff_ffff)),
                                3 => std::future::pending().await,
                                4 => {
                                    // field 15, length-delimited: tag 0x7a, varint length.
                                    let mut msg = ok;
                                    msg.push(0x7a);
                                    let mut n = OVERSIZED;
                                    while n >= 0x80 {
                                        msg.push((n as u8) | 0x80);
                                        n >>= 7;
                                    }
                                    msg.push(n as u8);
                                    msg.extend(std::iter::repeat_n(0u8, OVERSIZED));
                                    grpc_reply(msg, None)
                                }
                                _ => grpc_reply(ok, None),
                            };
                            Ok::<_, Infallible>(reply)
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            mode,
            calls,
            task,
        }
    }

    fn set(&self, mode: RlsMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for FakeRls {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP server that answers every connection with random bytes (not HTTP/2), or with
/// silence when `garbage` is false, and never closes first.
async fn raw_server(garbage: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        while let Ok((mut stream, _)) = listener.accept().await {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let mut s = seed;
            tokio::spawn(async move {
                if garbage {
                    let junk: Vec<u8> = (0..4096)
                        .map(|_| {
                            s ^= s << 13;
                            s ^= s >> 7;
                            s ^= s << 17;
                            s as u8
                        })
                        .collect();
                    let _ = stream.write_all(&junk).await;
                }
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, task)
}

/// Two listeners over the same RLS cluster: failure mode `allow` and `deny` (503).
fn rls_listeners(cfg: EnvoyConfig, timeout: &str) -> EnvoyConfig {
    let rule = r#""descriptors": [{"name": "checkout", "entries": [{"generic_key": {"value": "checkout"}}], "global": true}]"#;
    cfg.listener(Listener::new("allow").filter(
        Filter::meshguard("rate_limit").unwrap().config(format!(
            r#"{{"global": {{"cluster": "rls", "domain": "shop", "timeout": "{timeout}"}}, {rule}}}"#
        )),
    ))
    .listener(
        Listener::new("deny").filter(
            Filter::meshguard("rate_limit")
                .unwrap()
                .vm_id("meshguard_rate_limit_deny")
                .config(format!(
                    r#"{{"global": {{"cluster": "rls", "domain": "shop", "timeout": "{timeout}",
                        "failure_mode": "deny", "failure_status": 503}}, {rule}}}"#
                )),
        ),
    )
}

/// A GET that must be answered (not left hanging until the route's 30 s timeout).
async fn answered(addr: SocketAddr) -> (Response, Duration) {
    let start = Instant::now();
    let r = tokio::time::timeout(WAIT, send(addr, "GET", "/", &[]))
        .await
        .expect("the request hung");
    (r, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_rls_gets_the_failure_mode_and_the_filter_keeps_serving() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let rls = FakeRls::start().await;
    let mut cfg = rls_listeners(EnvoyConfig::new(Some(upstream.addr())), "300ms");
    cfg.clusters.push(envoy::grpc_cluster("rls", rls.addr));
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    let (allow, deny) = (envoy.listener("allow"), envoy.listener("deny"));
    let errors = |s: &BTreeMap<String, u64>| stat(s, &format!("{RL}rls.errors"));

    // A working RLS first: both listeners admit.
    assert_eq!(answered(allow).await.0.status, 200);
    assert_eq!(answered(deny).await.0.status, 200);
    let rss_start = rss_mib(&envoy);
    let mut rss_warm = 0.0;

    let mut expected_errors = 0;
    for (mode, rounds) in [
        (RlsMode::Oversized, 10),
        (RlsMode::Oversized, 10),
        (RlsMode::LyingLength, 10),
        (RlsMode::Silent, 3),
        // A valid answer padded to 4 MiB is over the 64 KiB cap: a failed call, not read.
        (RlsMode::PaddedOk, 5),
    ] {
        rls.set(mode);
        for _ in 0..rounds {
            let (r, took) = answered(allow).await;
            assert_eq!(r.status, 200, "{mode:?} allow: {r:?}");
            let (r, took_deny) = answered(deny).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (503, "rate limit service unavailable"),
                "{mode:?} deny: {r:?}"
            );
            println!("RLS {mode:?}: answered in {took:?} (allow) / {took_deny:?} (deny)");
        }
        expected_errors += 2 * rounds;
        let s = wait_stats(&envoy, RL, |s| errors(s) == expected_errors);
        if mode == RlsMode::Oversized && rss_warm == 0.0 {
            // Envoy itself buffered the 4 MiB messages; the VMs refused to copy them in.
            // Measured from here, memory must stay flat.
            rss_warm = rss_mib(&envoy);
            println!(
                "RLS: Envoy RSS {rss_start:.1} MiB before the 4 MiB answers, {rss_warm:.1} MiB after"
            );
        }
        println!(
            "RLS {mode:?}: rls.errors {} rls.timeouts {} rls.failure_mode_allowed {} RSS {:.1} MiB",
            errors(&s),
            stat(&s, &format!("{RL}rls.timeouts")),
            stat(&s, &format!("{RL}rls.failure_mode_allowed")),
            rss_mib(&envoy)
        );
    }
    let s = envoy.stats().unwrap();
    assert_eq!(stat(&s, &format!("{RL}rls.timeouts")), 6, "the silent RLS");

    // Back to a sane RLS: nothing was stuck, and no more errors are counted.
    rls.set(RlsMode::Ok);
    for _ in 0..5 {
        assert_eq!(answered(allow).await.0.status, 200);
        assert_eq!(answered(deny).await.0.status, 200);
    }
    let s = wait_stats(&envoy, RL, |s| {
        stat(s, &format!("{RL}rls.calls")) as usize == rls.calls.load(Ordering::SeqCst)
    });
    assert_eq!(errors(&s), expected_errors);
    println!(
        "RLS: {} calls, {} errors, {} timeouts",
        stat(&s, &format!("{RL}rls.calls")),
        errors(&s),
        stat(&s, &format!("{RL}rls.timeouts"))
    );
    assert_no_vm_failure(&envoy, created);
    // 30 more answers of 4 MiB (garbage and padded) went through Envoy: memory must not keep
    // them.
    assert_rss_bounded("hostile RLS", rss_warm, rss_mib(&envoy), 0.10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rls_speaking_garbage_or_nothing_at_the_tcp_level_fails_fast() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let (garbage, _g) = raw_server(true).await;
    let (silent, _s) = raw_server(false).await;
    let reference = RlsServer::start(Limits::empty(), Storage::memory())
        .await
        .unwrap();
    let mut cfg = EnvoyConfig::new(Some(upstream.addr()));
    for (name, addr) in [
        ("garbage", garbage),
        ("silent", silent),
        ("hang", reference.addr()),
    ] {
        let rule = r#""descriptors": [{"name": "checkout", "entries": [{"generic_key": {"value": "checkout"}}], "global": true}]"#;
        cfg = cfg.listener(
            Listener::new(name).filter(
                Filter::meshguard("rate_limit")
                    .unwrap()
                    .vm_id(format!("rl_{name}"))
                    .config(format!(
                        r#"{{"global": {{"cluster": "rls_{name}", "domain": "shop", "timeout": "200ms",
                            "failure_mode": "deny", "failure_status": 503}}, {rule}}}"#
                    )),
            ),
        );
        cfg.clusters
            .push(envoy::grpc_cluster(&format!("rls_{name}"), addr));
    }
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    reference.set_fault(FaultMode::Hang);
    for name in ["garbage", "silent", "hang"] {
        for _ in 0..5 {
            let (r, took) = answered(envoy.listener(name)).await;
            assert_eq!(r.status, 503, "{name}: {r:?}");
            println!("RLS {name}: 503 in {took:?}");
        }
    }
    let s = wait_stats(&envoy, RL, |s| stat(s, &format!("{RL}rls.errors")) == 15);
    println!(
        "raw RLS faults: rls.errors {} rls.timeouts {}",
        stat(&s, &format!("{RL}rls.errors")),
        stat(&s, &format!("{RL}rls.timeouts")),
    );
    // The silent TCP peer and the hanging RLS end by the call timeout.
    assert!(stat(&s, &format!("{RL}rls.timeouts")) >= 10, "{s:?}");
    // The hanging reference RLS recovers, and so does the filter.
    reference.set_fault(FaultMode::None);
    assert_eq!(answered(envoy.listener("hang")).await.0.status, 200);
    assert_no_vm_failure(&envoy, created);
}

// ---------------------------------------------------------------------------------------------
// A sandbox registry that answers garbage, too much, or nothing

#[derive(Clone, Debug)]
enum RegistryAnswer {
    Doc(String, String),
    Body(Vec<u8>),
    Silent,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_registry_keeps_the_last_good_table() {
    let b = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let dev_1 = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let dev_2 = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let answer = Arc::new(std::sync::Mutex::new(RegistryAnswer::Silent));
    let polls = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = listener.local_addr().unwrap();
    let (a, p) = (Arc::clone(&answer), Arc::clone(&polls));
    let registry_task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (a, p) = (Arc::clone(&a), Arc::clone(&p));
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let (a, p) = (Arc::clone(&a), Arc::clone(&p));
                    async move {
                        p.fetch_add(1, Ordering::SeqCst);
                        let answer = a.lock().unwrap().clone();
                        let resp = match answer {
                            RegistryAnswer::Doc(etag, body) => http::Response::builder()
                                .header("etag", etag)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body))),
                            RegistryAnswer::Body(body) => http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body))),
                            RegistryAnswer::Silent => std::future::pending().await,
                        };
                        Ok::<_, Infallible>(resp.unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let doc = |v: &str, cluster: &str| {
        format!(
            r#"{{"version": "{v}", "sandboxes": [{{"key": "dev-4", "service": "b", "cluster": "{cluster}"}}]}}"#
        )
    };
    *answer.lock().unwrap() = RegistryAnswer::Doc("\"v1\"".into(), doc("v1", "b_dev_1"));

    let mut l = Listener::new("out").filter(Filter::meshguard("sandbox_router").unwrap().config(
        r#"{"registry": {"cluster": "registry", "path": "/v1/sandboxes", "poll_interval": "200ms",
                         "timeout": "150ms", "max_body_bytes": 4096}}"#,
    ));
    l.route_config = sandbox_routes("b");
    let mut cfg = EnvoyConfig::new(None).listener(l);
    cfg.clusters = vec![
        envoy::cluster("b", b.addr()),
        envoy::cluster("b_dev_1", dev_1.addr()),
        envoy::cluster("b_dev_2", dev_2.addr()),
        envoy::cluster("registry", registry),
    ];
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    let addr = envoy.listener("out");
    let where_to = || async {
        let before = [dev_1.stats().received, dev_2.stats().received];
        let r = send(addr, "GET", "/", &[(b"baggage", b"sandbox=dev-4")]).await;
        assert_eq!(r.status, 200, "{r:?}");
        match (
            dev_1.stats().received - before[0],
            dev_2.stats().received - before[1],
        ) {
            (1, 0) => "dev-1",
            (0, 1) => "dev-2",
            _ => "baseline",
        }
    };
    let until = |want: &'static str| {
        let where_to = &where_to;
        async move {
            let deadline = Instant::now() + WAIT;
            while where_to().await != want {
                assert!(Instant::now() < deadline, "never routed to {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until("dev-1").await;
    let rss_start = rss_mib(&envoy);
    let mut rss_warm = 0.0;
    let errors = format!("{SB}registry.errors");

    let huge_valid = {
        // Valid JSON, well past max_body_bytes.
        let filler: Vec<String> = (0..2000)
            .map(|i| format!(r#"{{"key": "k{i}", "service": "b", "cluster": "b_dev_2"}}"#))
            .collect();
        format!(
            r#"{{"version": "huge", "sandboxes": [{}]}}"#,
            filler.join(",")
        )
    };
    let huge = RegistryAnswer::Body(vec![b' '; 64 << 20]);
    let hostile: [(&str, RegistryAnswer); 9] = [
        // First, so the memory Envoy's allocator keeps after buffering a big callout answer
        // is in the warm-up sample; then it must not grow with more polls.
        ("64 MiB body", huge.clone()),
        ("not JSON", RegistryAnswer::Body(b"{\"version\": \"x\", \"sandb".to_vec())),
        ("binary", RegistryAnswer::Body(vec![0xff, 0xfe, 0x00, 0x80, b'{'])),
        (
            "a bad entry",
            RegistryAnswer::Body(
                br#"{"version": "x", "sandboxes": [{"key": "dev 4", "service": "b", "cluster": "b_dev_2"}]}"#.to_vec(),
            ),
        ),
        (
            "deeply nested",
            RegistryAnswer::Body(
                [vec![b'['; 2000], vec![b']'; 2000]].concat(),
            ),
        ),
        (
            "64 KiB valid document",
            RegistryAnswer::Body(huge_valid.into_bytes()),
        ),
        (
            "16 MiB body",
            RegistryAnswer::Body(vec![b' '; 16 << 20]),
        ),
        ("no answer", RegistryAnswer::Silent),
        ("64 MiB body again", huge),
    ];
    for (case, bad) in hostile {
        let before = envoy.stat(&errors).unwrap();
        *answer.lock().unwrap() = bad;
        // At least two failed polls while the bad answer is in force.
        wait_stats(&envoy, SB, |s| stat(s, &errors) >= before + 2);
        for _ in 0..5 {
            assert_eq!(
                where_to().await,
                "dev-1",
                "{case}: the last good table was lost"
            );
        }
        let s = envoy.stats().unwrap();
        println!(
            "registry {case}: registry.errors {} table_entries {} RSS {:.1} MiB",
            stat(&s, &errors),
            stat(&s, &format!("{SB}table_entries")),
            rss_mib(&envoy)
        );
        assert_eq!(stat(&s, &format!("{SB}table_entries")), 1, "{case}");
        if rss_warm == 0.0 {
            rss_warm = rss_mib(&envoy);
            println!("registry: Envoy RSS {rss_start:.1} MiB before the 64 MiB answers");
        }
    }
    // A good answer again is picked up: the poller survived all of it.
    *answer.lock().unwrap() = RegistryAnswer::Doc("\"v2\"".into(), doc("v2", "b_dev_2"));
    until("dev-2").await;
    let s = envoy.stats().unwrap();
    println!(
        "registry: {} polls answered, updates {} errors {}",
        polls.load(Ordering::SeqCst),
        stat(&s, &format!("{SB}registry.updates")),
        stat(&s, &errors)
    );
    assert_eq!(stat(&s, &format!("{SB}registry.updates")), 2);
    assert_no_vm_failure(&envoy, created);
    assert_rss_bounded("hostile registry", rss_warm, rss_mib(&envoy), 0.10);
    registry_task.abort();
}

// ---------------------------------------------------------------------------------------------
// Spoofed x-forwarded-for

/// Sends `n` requests with the given `x-forwarded-for` values; returns the statuses.
async fn statuses_with_xff(addr: SocketAddr, xffs: &[String]) -> Vec<u16> {
    let mut out = Vec::new();
    for xff in xffs {
        out.push(
            send(addr, "GET", "/", &[(b"x-forwarded-for", xff.as_bytes())])
                .await
                .status,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_cannot_escape_the_client_bucket() {
    let upstream = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let per_client = |hops: u32| {
        format!(
            r#"{{"descriptors": [{{"name": "per_client", "entries": [{{"client_address": {{"trusted_hops": {hops}}}}}],
                  "token_bucket": {{"max_tokens": 3, "fill_interval": "1h"}}}}]}}"#
        )
    };
    // (listener, filter trusted_hops, HCM use_remote_address, HCM xff_num_trusted_hops)
    let setups: [(&str, u32, bool, u32); 6] = [
        ("edge_hops1", 1, true, 0),
        ("edge_hops0", 0, true, 0),
        ("behind_proxy_hops2", 2, true, 0),
        ("envoy_trusts_one_hop", 0, true, 1),
        ("misconfigured_hops1", 1, false, 0),
        ("misconfigured_hops0", 0, false, 0),
    ];
    let mut cfg = EnvoyConfig::new(Some(upstream.addr()));
    for (name, hops, remote, envoy_hops) in setups {
        cfg = cfg.listener(
            Listener::new(name)
                .filter(
                    Filter::meshguard("rate_limit")
                        .unwrap()
                        .vm_id(format!("rl_{name}"))
                        .config(per_client(hops)),
                )
                .hcm("use_remote_address", json!(remote))
                .hcm("xff_num_trusted_hops", json!(envoy_hops)),
        );
    }
    let envoy = start(cfg).await;
    let created = vms_created(&envoy);
    let rotating = |suffix: &str| -> Vec<String> {
        (0..8)
            .map(|i| format!("203.0.113.{i}, 198.51.100.{i}{suffix}"))
            .collect()
    };
    let limited_after_3 = [200, 200, 200, 429, 429, 429, 429, 429];

    // The edge (use_remote_address: Envoy appends the peer) with trusted_hops 1: the key is the
    // address Envoy appended; whatever the client puts left of it is never used.
    assert_eq!(
        statuses_with_xff(envoy.listener("edge_hops1"), &rotating("")).await,
        limited_after_3
    );
    // trusted_hops 0: source.address; x-forwarded-for is ignored entirely.
    assert_eq!(
        statuses_with_xff(envoy.listener("edge_hops0"), &rotating("")).await,
        limited_after_3
    );
    // Behind one trusted proxy (simulated: the client's last entry plays the proxy's append):
    // only the 2nd from the right counts; rotating what is left of it does not help...
    let behind = envoy.listener("behind_proxy_hops2");
    assert_eq!(
        statuses_with_xff(behind, &rotating(", 192.0.2.7")).await,
        limited_after_3
    );
    // ... and the hop that counts is a real key (a different one gets its own bucket).
    assert_eq!(
        statuses_with_xff(behind, &["203.0.113.9, 192.0.2.8".to_owned()]).await,
        [200]
    );
    // Envoy's own trust (xff_num_trusted_hops 1) sets source.address to that hop.
    let envoy_trust = envoy.listener("envoy_trusts_one_hop");
    assert_eq!(
        statuses_with_xff(envoy_trust, &rotating(", 192.0.2.7")).await,
        limited_after_3
    );
    assert_eq!(
        statuses_with_xff(envoy_trust, &["203.0.113.9, 192.0.2.8".to_owned()]).await,
        [200]
    );
    // Misconfigured: Envoy does not append the peer (use_remote_address false) and the filter
    // trusts the rightmost entry, which the client wrote: a rotating client escapes its bucket.
    assert_eq!(
        statuses_with_xff(envoy.listener("misconfigured_hops1"), &rotating("")).await,
        [200; 8]
    );
    // And with use_remote_address false, Envoy itself takes the client address (and so
    // source.address) from the rightmost x-forwarded-for entry: trusted_hops 0 escapes too.
    assert_eq!(
        statuses_with_xff(envoy.listener("misconfigured_hops0"), &rotating("")).await,
        [200; 8]
    );
    let s = wait_stats(&envoy, RL, |s| {
        stat(s, &format!("{RL}limited.per_client")) == 5 * 4
    });
    println!(
        "xff: allowed {} limited {}",
        stat(&s, &format!("{RL}allowed")),
        stat(&s, &format!("{RL}limited.per_client"))
    );
    assert_no_vm_failure(&envoy, created);
}
