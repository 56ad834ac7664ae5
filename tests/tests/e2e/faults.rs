//! What clients see when a meshguard filter crashes, under each Envoy `failure_policy`.
//!
//! The fault builds of the four filters (`dist/fault/<filter>.wasm`, `tests/fault-build.sh`)
//! trap the VM (a Wasm `unreachable`, what a Rust panic becomes) on a request carrying
//! `x-meshguard-fault: trap`. One Envoy per policy, `--concurrency 1` (so "the worker" is the
//! whole Envoy), one listener per filter, each filter in its own VM. Per filter:
//!
//! 1. a request the filter acts on shows it working (a rate limit rejects, an open breaker
//!    rejects, a sandbox key reaches the sandbox, a request over the concurrency limit is shed);
//! 2. the trigger: the client gets 503 with an empty body, details `wasm_fail_stream`, whatever
//!    the policy;
//! 3. later requests, by policy: `FAIL_CLOSED` every one gets the same 503 (gRPC: UNAVAILABLE)
//!    and nothing reaches the service; `FAIL_OPEN` every one passes the dead filter unfiltered
//!    (the rate limit, breaker, router and shedder are gone; a client-sent routing header is
//!    still stripped by the listener); `FAIL_RELOAD` the next request gets a new VM at once when
//!    the failed one was loaded more than the backoff (1–1.5 s) ago, and in a crash loop
//!    requests fail like `FAIL_CLOSED` until the backoff since the last load has passed; the new
//!    VM filters again with the process-wide state (buckets, breakers in shared data) of before
//!    the crash, and `wasm.<plugin>.vm_reload_success` / `vm_reload_backoff` show the reloads.
//!
//! A crashed filter never affects the other filters' VMs: each filter's step 1 runs after the
//! previous filters crashed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshguard_tests::h2::RequestBody;
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, Response, envoy, h1, h2, paths};
use meshguard_upstream::{Upstream, UpstreamConfig};
use serde_json::{Value, json};

const FILTERS: [&str; 4] = [
    "load_shed",
    "circuit_breaker",
    "rate_limit",
    "sandbox_router",
];
const TRIGGER: (&[u8], &[u8]) = (b"x-meshguard-fault", b"trap");
const ROUTING: &str = "x-meshguard-sandbox-cluster";
/// Bound on every wait for a condition (a VM reload, a request in flight, log lines).
const WAIT: Duration = Duration::from_secs(10);
/// How long the request that holds load_shed's single slot stays at the upstream.
const HOLD_MS: &[u8] = b"700";

/// Each filter's config: enough to make its effect visible with one or two requests.
fn config(filter: &str) -> String {
    match filter {
        // A limit of exactly one concurrent request.
        "load_shed" => json!({"concurrency_limit_params": {
            "initial_concurrency_limit": 1, "min_concurrency_limit": 1, "max_concurrency_limit": 1}}),
        // One failure opens the breaker for an hour.
        "circuit_breaker" => json!({"trip": {"consecutive_failures": 1},
            "open": {"base_duration": "3600s", "max_duration": "3600s"}}),
        // One token, never refilled during the test.
        "rate_limit" => json!({"token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "3600s"}}),
        // As meshguard-config writes it: the listener strips client routing headers natively.
        "sandbox_router" => json!({"routes": [{"key": "dev", "service": "upstream", "cluster": "upstream_dev"}],
            "strip_client_routing_headers": false}),
        _ => unreachable!("{filter}"),
    }
    .to_string()
}

/// The fault build of `filter` under `policy`.
fn fault_filter(filter: &str, policy: &str) -> Filter {
    Filter {
        name: filter.to_owned(),
        wasm: paths::fault_wasm(filter).unwrap(),
        vm_id: format!("meshguard_{filter}"),
        config: config(filter),
        failure_policy: None,
    }
    .failure_policy(policy)
}

struct Rig {
    envoy: Envoy,
    /// When Envoy was ready (its worker VMs loaded).
    started: Instant,
    baseline: Upstream,
    sandbox: Upstream,
    logs: tempfile::TempDir,
}

impl Rig {
    async fn start(policy: &str) -> Self {
        let baseline = Upstream::start(UpstreamConfig::default()).await.unwrap();
        let sandbox = Upstream::start(UpstreamConfig::default()).await.unwrap();
        let logs = tempfile::tempdir().unwrap();
        let mut cfg = EnvoyConfig::new(Some(baseline.addr())).concurrency(1);
        cfg.clusters
            .push(envoy::cluster("upstream_dev", sandbox.addr()));
        // Access logs reach the file within 20 ms (the default is 1 s).
        cfg.extra_args = vec!["--file-flush-interval-msec".into(), "20".into()];
        for f in FILTERS {
            let mut l = Listener::new(f).filter(fault_filter(f, policy)).access_log(
                &log_path(logs.path(), f),
                "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n",
            );
            if f == "sandbox_router" {
                l.route_config = sandbox_routes();
                l = l.hcm(
                    "early_header_mutation_extensions",
                    json!([{
                        "name": "envoy.http.early_header_mutation.header_mutation",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                            "mutations": [{"remove": ROUTING}],
                        },
                    }]),
                );
            }
            cfg = cfg.listener(l);
        }
        let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
            .await
            .unwrap()
            .unwrap();
        Self {
            envoy,
            started: Instant::now(),
            baseline,
            sandbox,
            logs,
        }
    }

    fn addr(&self, filter: &str) -> SocketAddr {
        self.envoy.listener(filter)
    }

    /// `%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%` of every request on `filter`'s listener, once
    /// `pred` holds for them (bounded wait: the log is flushed every 20 ms).
    fn access_log(&self, filter: &str, mut pred: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let path = log_path(self.logs.path(), filter);
        let deadline = Instant::now() + WAIT;
        loop {
            let lines: Vec<String> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            if pred(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{filter}: access log condition not met: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        self.envoy.stats().unwrap()
    }
}

fn log_path(dir: &Path, filter: &str) -> PathBuf {
    dir.join(format!("{filter}.log"))
}

/// The routing-header route first (the shipped sandbox set-up), then the baseline.
fn sandbox_routes() -> Value {
    json!({"name": "outbound", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": ROUTING, "present_match": true}]},
         "route": {"cluster_header": ROUTING, "timeout": "30s"},
         "request_headers_to_remove": [ROUTING]},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}},
    ]}]})
}

/// One GET on a fresh connection.
async fn get(addr: SocketAddr, headers: &[(&[u8], &[u8])]) -> Response {
    let mut all: Vec<(&[u8], &[u8])> = vec![(b"host", b"svc")];
    all.extend_from_slice(headers);
    h1::exchange(addr, &h1::head("GET", "/", &all))
        .await
        .unwrap()
}

/// A unary gRPC call over h2c.
async fn grpc(addr: SocketAddr) -> Response {
    h2::request(
        addr,
        "POST",
        "/meshguard.test.v1.Echo/Unary",
        &[("content-type", b"application/grpc"), ("te", b"trailers")],
        RequestBody {
            chunks: vec![vec![0, 0, 0, 0, 0]],
            trailers: vec![],
        },
    )
    .await
    .unwrap()
}

/// What a request that the filter would act on got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// The filter acted (rejected, or routed to the sandbox).
    Filtered,
    /// The request reached the baseline service as if the filter were not there.
    Passed,
    /// Envoy failed the stream: 503, empty body (details `wasm_fail_stream`).
    FailedStream,
}

fn failed_stream(r: &Response) -> bool {
    r.status == 503 && r.body.is_empty()
}

/// Envoy's answer to a stream whose filter VM has failed.
fn assert_failed_stream(r: &Response, what: &str) {
    assert!(
        failed_stream(r),
        "{what}: expected 503 with an empty body, got {r:?}"
    );
}

/// Sends the request `filter` acts on (after [`prepare`]) and says what happened to it.
async fn probe(rig: &Rig, filter: &str) -> Seen {
    let addr = rig.addr(filter);
    let r = match filter {
        "load_shed" => {
            // Hold the single slot with a slow request, then send a second one.
            let held =
                tokio::spawn(async move { get(addr, &[(b"x-upstream-delay-ms", HOLD_MS)]).await });
            let deadline = Instant::now() + WAIT;
            while rig.baseline.stats().in_flight == 0 && !held.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "the slow request never reached the upstream"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if held.is_finished() {
                let r = held.await.unwrap();
                assert_failed_stream(&r, "load_shed: the request holding the slot");
                return Seen::FailedStream;
            }
            let r = get(addr, &[]).await;
            assert_eq!(held.await.unwrap().status, 200, "the held request");
            r
        }
        "sandbox_router" => {
            let before = (rig.baseline.stats().received, rig.sandbox.stats().received);
            let r = get(addr, &[(b"baggage", b"sandbox=dev")]).await;
            let after = (rig.baseline.stats().received, rig.sandbox.stats().received);
            return match (r.status, after.0 - before.0, after.1 - before.1) {
                (200, 0, 1) => Seen::Filtered,
                (200, 1, 0) => Seen::Passed,
                _ if failed_stream(&r) => Seen::FailedStream,
                _ => panic!("sandbox_router: unexpected {r:?} ({before:?} -> {after:?})"),
            };
        }
        _ => get(addr, &[]).await,
    };
    let rejection = match filter {
        "load_shed" => (503, "overloaded"),
        "circuit_breaker" => (503, "upstream unavailable: circuit open"),
        "rate_limit" => (429, "rate limited"),
        _ => unreachable!(),
    };
    if (r.status, r.text().as_str()) == rejection {
        Seen::Filtered
    } else if r.status == 200 {
        Seen::Passed
    } else if failed_stream(&r) {
        Seen::FailedStream
    } else {
        panic!("{filter}: unexpected {r:?}")
    }
}

/// Puts the filter in the state where [`probe`] shows it working: the rate limit's only token
/// taken, the breaker opened by one upstream failure.
async fn prepare(rig: &Rig, filter: &str) {
    let addr = rig.addr(filter);
    match filter {
        "rate_limit" => assert_eq!(get(addr, &[]).await.status, 200),
        "circuit_breaker" => {
            let r = get(addr, &[(b"x-upstream-status", b"500")]).await;
            assert_eq!(r.status, 500, "{r:?}");
        }
        _ => {}
    }
}

/// Gauges among the filters' stats: the root context on Envoy's main thread (a VM of its own,
/// which did not crash) keeps publishing them.
const GAUGES: &[&str] = &[
    "load_shed.limit",
    "load_shed.inflight",
    "load_shed.baseline_latency_us",
    "load_shed.sample_latency_us",
    "circuit_breaker.state.",
    "sandbox_router.table_entries",
];

/// The filter's own counters (`wasmcustom.meshguard.<filter>.*`, gauges left out).
fn counters(stats: &BTreeMap<String, u64>, filter: &str) -> BTreeMap<String, u64> {
    let prefix = format!("wasmcustom.meshguard.{filter}.");
    stats
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, _)| {
            let name = &k["wasmcustom.meshguard.".len()..];
            !GAUGES.iter().any(|g| name.starts_with(g))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn reload_stats(stats: &BTreeMap<String, u64>, filter: &str) -> [u64; 4] {
    [
        "vm_reload",
        "vm_reload_backoff",
        "vm_reload_failure",
        "vm_reload_success",
    ]
    .map(|s| {
        stats
            .get(&format!("wasm.{filter}.{s}"))
            .copied()
            .unwrap_or(0)
    })
}

const VMS_CREATED: &str = "wasm.envoy.wasm.runtime.v8.created";

/// Steps 1 and 2 for one filter: it works, then the trigger crashes its VM. Returns the stats
/// right after the crash.
async fn works_then_crashes(rig: &Rig, filter: &str) -> BTreeMap<String, u64> {
    prepare(rig, filter).await;
    assert_eq!(
        probe(rig, filter).await,
        Seen::Filtered,
        "{filter} before the fault"
    );
    let r = get(rig.addr(filter), &[TRIGGER]).await;
    assert_failed_stream(&r, &format!("{filter}: the triggering request"));
    rig.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_fails_every_later_request_with_503_wasm_fail_stream() {
    let rig = Rig::start("FAIL_CLOSED").await;
    for filter in FILTERS {
        let addr = rig.addr(filter);
        let at_crash = works_then_crashes(&rig, filter).await;
        let received = (rig.baseline.stats().received, rig.sandbox.stats().received);
        for i in 0..3 {
            assert_failed_stream(
                &get(addr, &[]).await,
                &format!("{filter}: request {i} after"),
            );
        }
        assert_eq!(probe(&rig, filter).await, Seen::FailedStream, "{filter}");
        let g = grpc(addr).await;
        assert_eq!(
            (g.status, g.header_str("grpc-status").as_deref()),
            (200, Some("14")),
            "{filter}: gRPC after the crash gets UNAVAILABLE: {g:?}"
        );
        // Nothing reached the service, the filter is dead (no counter moved), and Envoy did
        // not replace the VM.
        assert_eq!(
            (rig.baseline.stats().received, rig.sandbox.stats().received),
            received,
            "{filter}"
        );
        let now = rig.stats();
        assert_eq!(
            counters(&now, filter),
            counters(&at_crash, filter),
            "{filter}"
        );
        assert_eq!(reload_stats(&now, filter), [0; 4], "{filter}");
        assert_eq!(now.get(VMS_CREATED), at_crash.get(VMS_CREATED), "{filter}");
        // The access log names the cause for the trigger and the 5 requests after it.
        let failed = |l: &String| l.ends_with(" wasm_fail_stream");
        let log = rig.access_log(filter, |log| {
            log.iter()
                .position(failed)
                .is_some_and(|t| log.len() >= t + 6)
        });
        let trigger = log.iter().position(failed).unwrap_or_default();
        assert_eq!(log.len(), trigger + 6, "{filter}: {log:?}");
        for line in &log[trigger..] {
            assert!(
                line == "503 wasm_fail_stream" || line == "200 wasm_fail_stream",
                "{filter}: {line} in {log:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_passes_later_requests_through_the_dead_filter_unfiltered() {
    let rig = Rig::start("FAIL_OPEN").await;
    for filter in FILTERS {
        let addr = rig.addr(filter);
        let at_crash = works_then_crashes(&rig, filter).await;
        let received = rig.baseline.stats().received;
        for i in 0..3 {
            let r = get(addr, &[]).await;
            assert_eq!(r.status, 200, "{filter}: request {i} after: {r:?}");
        }
        // The protection is gone: the limit, the open breaker, the sandbox route, the
        // concurrency limit no longer apply.
        assert_eq!(probe(&rig, filter).await, Seen::Passed, "{filter}");
        assert!(rig.baseline.stats().received >= received + 4, "{filter}");
        if filter == "sandbox_router" {
            // The listener still strips a client-sent routing header (the dead filter would
            // not): a client cannot pick the cluster while the router is down.
            let sandbox = rig.sandbox.stats().received;
            let r = get(addr, &[(ROUTING.as_bytes(), b"upstream_dev")]).await;
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(
                rig.sandbox.stats().received,
                sandbox,
                "routing header honoured"
            );
        }
        let now = rig.stats();
        assert_eq!(
            counters(&now, filter),
            counters(&at_crash, filter),
            "{filter}"
        );
        assert_eq!(reload_stats(&now, filter), [0; 4], "{filter}");
        assert_eq!(now.get(VMS_CREATED), at_crash.get(VMS_CREATED), "{filter}");
        // Only the trigger failed.
        let log = rig.access_log(filter, |log| {
            log.iter().any(|l| l == "503 wasm_fail_stream")
        });
        assert_eq!(
            log.iter()
                .filter(|l| l.contains("wasm_fail_stream"))
                .count(),
            1,
            "{filter}: {log:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_reload_replaces_the_vm_at_most_once_per_backoff_and_it_filters_again() {
    let rig = Rig::start("FAIL_RELOAD").await;
    // Envoy reloads a failed VM on the next request unless the VM was loaded less than the
    // backoff (1 s base, jittered up to 1.5 s) ago. The worker VMs were loaded during start-up:
    // let that much time pass (Envoy's rule is about time, there is nothing to wait for).
    tokio::time::sleep_until((rig.started + Duration::from_millis(1600)).into()).await;
    for filter in FILTERS {
        let addr = rig.addr(filter);
        let at_crash = works_then_crashes(&rig, filter).await;
        // 1. A VM that has been up longer than the backoff: the next request gets a new VM at
        //    once, and only the crashing request failed.
        let first_reload = Instant::now();
        let r = get(addr, &[]).await;
        assert!(
            !failed_stream(&r),
            "{filter}: the request after the crash: {r:?}"
        );
        assert_eq!(reload_stats(&rig.stats(), filter), [0, 0, 0, 1], "{filter}");
        // 2. A crash loop: the new VM crashes at once. Within the backoff since that reload,
        //    requests fail like FAIL_CLOSED; then the next request loads another VM.
        let r = get(addr, &[TRIGGER]).await;
        assert_failed_stream(&r, &format!("{filter}: the second trigger"));
        let mut failed = 0u64;
        let deadline = Instant::now() + WAIT;
        loop {
            let r = get(addr, &[]).await;
            if !failed_stream(&r) {
                break;
            }
            failed += 1;
            assert!(
                Instant::now() < deadline,
                "{filter}: no reload within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let between = first_reload.elapsed();
        assert!(failed >= 1, "{filter}: no request failed in the backoff");
        assert!(
            between >= Duration::from_secs(1),
            "{filter}: reloaded twice within {between:?}, less than the 1 s backoff"
        );
        // The new VM filters again, with the process-wide state from before the crashes (the
        // bucket is still empty, the breaker still open).
        assert_eq!(
            probe(&rig, filter).await,
            Seen::Filtered,
            "{filter} after the reloads"
        );
        let now = rig.stats();
        assert_eq!(
            reload_stats(&now, filter),
            [0, failed, 0, 2],
            "{filter}: vm_reload, vm_reload_backoff (each request in the backoff), \
             vm_reload_failure, vm_reload_success"
        );
        assert_eq!(
            now.get(VMS_CREATED).copied(),
            at_crash.get(VMS_CREATED).map(|n| n + 2),
            "{filter}: two new VMs"
        );
        // The two triggers and each request in the backoff, nothing else.
        let failed_logged =
            |log: &[String]| log.iter().filter(|l| *l == "503 wasm_fail_stream").count() as u64;
        let log = rig.access_log(filter, |log| failed_logged(log) >= failed + 2);
        assert_eq!(failed_logged(&log), failed + 2, "{filter}: {log:?}");
        println!(
            "{filter}: FAIL_RELOAD crash loop: {failed} requests failed, second reload {between:?} after the first"
        );
    }
}
