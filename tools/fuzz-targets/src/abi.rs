//! The ABI-level fuzzer: each compiled module (`dist/<module>.wasm`) runs in host-sim (a
//! proxy-wasm host on wasmtime that behaves like Envoy 1.40) and gets a random sequence of
//! callbacks: request and response headers (random case, repeats, non-UTF-8 bytes, huge
//! values), bodies, trailers, resets, virtual time (ticks fire on the way), and answers to its
//! callouts (RLS gRPC calls, registry HTTP polls) including failures, garbage and silence.
//! Any trap of any VM (a Rust panic aborts, then traps) is a crash; so is a config that
//! `on_configure` answers by trapping instead of returning false.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use host_sim::{
    Envoy, Error, GrpcDelivery, GrpcReply, HeaderMap, HttpCallOutcome, HttpCallReply, Module,
    RouteSpec, StreamId,
};
use meshguard_policy::rate_limit::rls;
use prost::Message;

/// The modules, their known-good configs (taken from the host-sim tests and docs) and the
/// route-metadata key of their per-route switch.
struct Spec {
    module: &'static str,
    configs: &'static [&'static str],
}

const LOAD_SHED: Spec = Spec {
    module: "load_shed",
    configs: &[
        r#"{"mode": "enforce", "concurrency_limit_params": {"initial_concurrency_limit": 2,
            "min_concurrency_limit": 1, "max_concurrency_limit": 4,
            "concurrency_update_interval": "50ms"}, "gradient": {"min_samples": 1},
            "criticality": {"header": "x-criticality", "header_values": {"gold": "CRITICAL_PLUS"},
              "rules": [{"match": {"path": {"prefix": "/batch"}}, "class": "SHEDDABLE"}]},
            "exempt": [{"path": {"exact": "/healthz"}}], "retry_after": "1s",
            "per_route": {"default": "on"}}"#,
        r#"{"mode": "dry_run"}"#,
        r#"{}"#,
    ],
};

const CIRCUIT_BREAKER: Spec = Spec {
    module: "circuit_breaker",
    configs: &[
        r#"{"key": {"header": "x-tenant", "max_keys": 2},
            "failure": {"slow_call_duration": "50ms"},
            "trip": {"consecutive_failures": 1,
              "failure_rate": {"threshold_percent": 50, "minimum_calls": 2, "window": {"calls": 4}},
              "slow_call_rate": {"threshold_percent": 50, "minimum_calls": 2, "window": {"duration": "1s"}}},
            "open": {"base_duration": "100ms", "max_duration": "1s"},
            "half_open": {"permitted_calls": 1}, "max_requests": 2,
            "evaluation_interval": "10ms", "per_route": {"default": "on"}}"#,
        r#"{"mode": "dry_run", "trip": {"consecutive_failures": 2}}"#,
        r#"{"open": {"base_duration": "2s"}}"#,
    ],
};

const RATE_LIMIT: Spec = Spec {
    module: "rate_limit",
    configs: &[
        r#"{"descriptors": [
              {"name": "per_client", "entries": [{"client_address": {"trusted_hops": 1}}],
               "token_bucket": {"max_tokens": 2, "fill_interval": "1s"}, "max_dynamic_buckets": 4},
              {"name": "per_key", "entries": [{"header": {"name": "x-key"}}],
               "token_bucket": {"max_tokens": 1, "fill_interval": "100ms"}, "max_dynamic_buckets": 2},
              {"name": "checkout", "entries": [{"path": {"prefix": "/checkout"}}, {"method": "POST"}],
               "global": true}],
            "token_bucket": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "1s"},
            "global": {"cluster": "rls", "domain": "shop", "timeout": "20ms", "failure_mode": "deny"},
            "x_ratelimit_headers": true, "per_route": {"default": "on"}}"#,
        r#"{"mode": "dry_run", "dry_run_header": "x-would-limit",
            "descriptors": [{"name": "all", "entries": [{"generic_key": {"value": "x"}}],
              "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}, "global": true}],
            "global": {"cluster": "rls", "domain": "shop", "failure_mode": "allow"}}"#,
        r#"{"token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}}"#,
    ],
};

const SANDBOX_ROUTER: Spec = Spec {
    module: "sandbox_router",
    configs: &[
        r#"{"routes": [
              {"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"},
              {"key": "dev-2", "service": "reviews", "address": "127.0.0.1:9002"}],
            "key_sources": [{"header": "x-sandbox"}, {"tracestate": "sandbox"},
              {"ot_baggage": "sandbox"}, {"uberctx": "sandbox"}, {"baggage": "sandbox"}],
            "registry": {"cluster": "registry", "path": "/v1/sandboxes", "poll_interval": "1s",
              "timeout": "500ms"},
            "response_header": true}"#,
        r#"{"routes": [{"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"}],
            "edge": {"trusted_source_cidrs": ["192.168.0.0/16", "::ffff:10.0.0.0/104"],
              "trusted_header": {"name": "x-trusted", "value": "edge-secret"}},
            "key": {"hmac_secret": "0123456789abcdef0123"},
            "registry": {"cluster": "registry", "poll_interval": "100ms"},
            "mode": "dry_run", "service_from": "authority"}"#,
        r#"{}"#,
    ],
};

/// The bundle (`meshguard.wasm`, every policy in one filter): its known configs combine the
/// single filters' (see [`bundle_configs`]).
const BUNDLE: Spec = Spec {
    module: "meshguard",
    configs: &[],
};

/// Known-good bundle configs: the i-th config of each single filter as its section, every
/// policy alone, and two policies together.
fn bundle_configs() -> Vec<String> {
    let section = |name: &str, spec: &Spec, i: usize| {
        format!("\"{name}\": {}", spec.configs[i % spec.configs.len()])
    };
    let mut out: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{{{}, {}, {}, {}}}",
                section("rate_limit", &RATE_LIMIT, i),
                section("load_shed", &LOAD_SHED, i),
                section("sandbox_router", &SANDBOX_ROUTER, i),
                section("circuit_breaker", &CIRCUIT_BREAKER, i)
            )
        })
        .collect();
    for (name, spec) in [
        ("rate_limit", &RATE_LIMIT),
        ("load_shed", &LOAD_SHED),
        ("sandbox_router", &SANDBOX_ROUTER),
        ("circuit_breaker", &CIRCUIT_BREAKER),
    ] {
        out.push(format!("{{{}}}", section(name, spec, 0)));
    }
    out.push(format!(
        "{{{}, {}}}",
        section("sandbox_router", &SANDBOX_ROUTER, 0),
        section("circuit_breaker", &CIRCUIT_BREAKER, 0)
    ));
    out
}

/// `dist/` (or `$MESHGUARD_WASM_DIR`), where `./build.sh` puts the modules.
fn wasm_dir() -> PathBuf {
    std::env::var_os("MESHGUARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist")))
}

/// The compiled module (read and compiled once per process).
fn module(name: &'static str) -> Module {
    static CACHE: OnceLock<Mutex<Vec<(&'static str, Module)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = c.iter().find(|(n, _)| *n == name) {
        return m.clone();
    }
    let path = wasm_dir().join(format!("{name}.wasm"));
    let m = Module::from_file(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run ./build.sh first)", path.display()));
    c.push((name, m.clone()));
    m
}

/// Whether `dist/<module>.wasm` exists (the replay tests skip the ABI targets without it).
pub fn module_available(name: &str) -> bool {
    wasm_dir().join(format!("{name}.wasm")).is_file()
}

const SANDBOX_CLUSTERS: &[&str] = &["reviews-dev-1", "meshguard_sandbox_original_dst"];
const ROUTING_HEADER: &str = "x-meshguard-sandbox-cluster";

fn routes() -> Vec<RouteSpec> {
    let mut routes: Vec<RouteSpec> = SANDBOX_CLUSTERS
        .iter()
        .map(|c| {
            let mut r = RouteSpec::new(format!("to-{c}"), *c);
            r.header = Some((ROUTING_HEADER.into(), (*c).into()));
            r
        })
        .collect();
    // A route whose metadata turns every filter off or picks a profile.
    let mut off = RouteSpec::new("off", "reviews");
    off.header = Some(("x-route".into(), "off".into()));
    off.metadata = serde_json::json!({"meshguard": {"load_shed": "off", "circuit_breaker": "off",
        "rate_limit": "off", "sandbox_router": "off"}});
    routes.push(off);
    let mut odd = RouteSpec::new("odd", "reviews");
    odd.header = Some(("x-route".into(), "odd".into()));
    odd.metadata = serde_json::json!({"meshguard": {"load_shed": 7, "circuit_breaker": {"a": 1},
        "rate_limit": "no_such_profile", "sandbox_router": "\u{00ff}"}});
    routes.push(odd);
    routes.push(RouteSpec::new("reviews", "reviews"));
    routes
}

const NAMES: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    ":scheme",
    "content-type",
    "te",
    "baggage",
    "tracestate",
    "traceparent",
    "x-forwarded-for",
    "x-criticality",
    "x-tenant",
    "x-key",
    "x-sandbox",
    ROUTING_HEADER,
    "x-envoy-original-dst-host",
    "x-trusted",
    "x-route",
    "grpc-status",
    "grpc-message",
    "content-length",
    "ot-baggage-sandbox",
    "uberctx-sandbox",
    "x-plan",
    "etag",
    "retry-after",
];

const VALUES: &[&str] = &[
    "GET",
    "POST",
    "/",
    "/checkout?x=1",
    "/healthz",
    "/batch/1",
    "reviews",
    "application/grpc",
    "trailers",
    "sandbox=dev-1",
    "user=a, sandbox = dev-2 ;ttl=3",
    "congo=t61,sandbox=dev-1",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "1.2.3.4, 10.0.0.1",
    "critical",
    "SHEDDABLE",
    "gold",
    "dev-1",
    "reviews-dev-1",
    "10.9.9.9:22",
    "edge-secret",
    "off",
    "odd",
    "14",
    "0",
    "500",
    "dev-1.3f1c5e",
    "sandbox=%zz,;,=",
];

#[derive(Debug, Arbitrary)]
enum Value {
    Known(u8),
    Bytes(Vec<u8>),
    Huge { byte: u8, kib: u8 },
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Known(i) => VALUES[usize::from(*i) % VALUES.len()].as_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
            Value::Huge { byte, kib } => vec![*byte; (usize::from(*kib) % 65 + 1) * 1024],
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Name {
    Known { index: u8, upper: u32 },
    Other(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Known { index, upper } => NAMES[usize::from(*index) % NAMES.len()]
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if upper >> (i % 32) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
            Name::Other(s) => s.chars().take(64).collect(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Header {
    name: Name,
    value: Value,
}

fn map(base: &[(&str, &[u8])], extra: &[Header]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in base {
        h.add(k, v);
    }
    for x in extra.iter().take(128) {
        h.add(&x.name.text(), x.value.bytes());
    }
    h
}

#[derive(Debug, Arbitrary)]
enum Body {
    Bytes(Vec<u8>),
    Huge { kib: u16 },
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Bytes(b) => b.clone(),
            Body::Huge { kib } => vec![b'x'; (usize::from(*kib) % 2048) * 1024],
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Request {
        worker: Option<u8>,
        pseudo: bool,
        grpc: bool,
        headers: Vec<Header>,
        end: bool,
    },
    RequestBody {
        stream: u8,
        body: Body,
        end: bool,
    },
    RequestTrailers {
        stream: u8,
        trailers: Vec<Header>,
    },
    ResponseHeaders {
        stream: u8,
        status: Value,
        headers: Vec<Header>,
        end: bool,
    },
    ResponseBody {
        stream: u8,
        body: Body,
        end: bool,
    },
    ResponseTrailers {
        stream: u8,
        trailers: Vec<Header>,
    },
    Reset {
        stream: u8,
    },
    Advance {
        ms: u16,
    },
    Jump {
        secs: u8,
    },
}

/// A registry (HTTP callout) answer.
#[derive(Debug, Arbitrary)]
enum HttpAnswer {
    Doc {
        status: u16,
        etag: Option<Value>,
        doc: u8,
        delay_ms: u16,
    },
    Raw {
        status: u16,
        headers: Vec<Header>,
        body: Body,
        trailers: Vec<Header>,
    },
    ConnectFailure,
    ResetBeforeHeaders,
    Reset,
    Never,
}

const DOCS: &[&str] = &[
    r#"{"sandboxes": [{"key": "dev-3", "service": "reviews", "cluster": "reviews-dev-1"}]}"#,
    r#"{"version": 7, "sandboxes": [{"key": "dev-4", "service": "reviews", "address": "10.1.2.3:80"}]}"#,
    r#"[{"key": "dev-5", "service": "reviews", "cluster": "reviews-dev-1"}]"#,
    r#"{"version": "-", "sandboxes": []}"#,
    r#"{"sandboxes": [{"key": "dev-1", "service": "reviews", "cluster": "x"}, {"key": "dev-1", "service": "reviews", "cluster": "x"}]}"#,
    r#"not json"#,
];

impl HttpAnswer {
    fn reply(&self) -> HttpCallReply {
        match self {
            HttpAnswer::Doc {
                status,
                etag,
                doc,
                delay_ms,
            } => {
                let mut r = HttpCallReply::status(*status % 600)
                    .body(DOCS[usize::from(*doc) % DOCS.len()])
                    .after(Duration::from_millis(u64::from(*delay_ms % 2000)));
                if let (Some(e), HttpCallOutcome::Response { headers, .. }) = (etag, &mut r.outcome)
                {
                    headers.add("etag", e.bytes());
                }
                r
            }
            HttpAnswer::Raw {
                status,
                headers,
                body,
                trailers,
            } => HttpCallReply {
                delay: Some(Duration::ZERO),
                outcome: HttpCallOutcome::Response {
                    headers: map(&[(":status", status.to_string().as_bytes())], headers),
                    body: body.bytes(),
                    trailers: map(&[], trailers),
                },
            },
            HttpAnswer::ConnectFailure => HttpCallReply::connect_failure(),
            HttpAnswer::ResetBeforeHeaders => HttpCallReply::reset_before_headers(),
            HttpAnswer::Reset => HttpCallReply::reset(),
            HttpAnswer::Never => HttpCallReply::never(),
        }
    }
}

/// An RLS (gRPC callout) answer.
#[derive(Debug, Arbitrary)]
enum GrpcAnswer {
    Response {
        code: i8,
        statuses: Vec<(i8, Option<(i64, i32)>)>,
        response_headers: Vec<(String, String, Vec<u8>)>,
        request_headers: Vec<(String, String, Vec<u8>)>,
        body: Vec<u8>,
        delay_ms: u16,
    },
    Raw(Vec<u8>),
    Error {
        status: u32,
        message: String,
    },
    Deliveries(Vec<(u16, Delivery)>),
    Silent,
}

#[derive(Debug, Arbitrary)]
enum Delivery {
    InitialMetadata(Vec<Header>),
    Message(Vec<u8>),
    TrailingMetadata(Vec<Header>),
    Close { status: u32, message: String },
}

fn header_values(h: &[(String, String, Vec<u8>)]) -> Vec<rls::HeaderValue> {
    h.iter()
        .take(40)
        .map(|(k, v, raw)| rls::HeaderValue {
            key: k.clone(),
            value: v.clone(),
            raw_value: raw.clone(),
        })
        .collect()
}

impl GrpcAnswer {
    fn reply(&self) -> GrpcReply {
        match self {
            GrpcAnswer::Response {
                code,
                statuses,
                response_headers,
                request_headers,
                body,
                delay_ms,
            } => {
                let msg = rls::RateLimitResponse {
                    overall_code: i32::from(*code % 4),
                    statuses: statuses
                        .iter()
                        .map(|(c, d)| rls::DescriptorStatus {
                            code: i32::from(*c % 4),
                            current_limit: None,
                            limit_remaining: 0,
                            duration_until_reset: d
                                .map(|(seconds, nanos)| rls::ProtoDuration { seconds, nanos }),
                        })
                        .collect(),
                    response_headers_to_add: header_values(response_headers),
                    request_headers_to_add: header_values(request_headers),
                    raw_body: body.clone(),
                };
                GrpcReply::ok(msg.encode_to_vec())
                    .after(Duration::from_millis(u64::from(*delay_ms % 100)))
            }
            GrpcAnswer::Raw(b) => GrpcReply::ok(b.clone()),
            GrpcAnswer::Error { status, message } => GrpcReply::error(*status % 20, message),
            GrpcAnswer::Deliveries(list) => {
                let mut r = GrpcReply::none();
                for (ms, d) in list.iter().take(8) {
                    let d = match d {
                        Delivery::InitialMetadata(h) => GrpcDelivery::InitialMetadata(map(&[], h)),
                        Delivery::Message(m) => GrpcDelivery::Message(m.clone()),
                        Delivery::TrailingMetadata(h) => {
                            GrpcDelivery::TrailingMetadata(map(&[], h))
                        }
                        Delivery::Close { status, message } => GrpcDelivery::Close {
                            status: *status,
                            message: message.clone(),
                        },
                    };
                    r = r.then(Duration::from_millis(u64::from(*ms % 200)), d);
                }
                r
            }
            GrpcAnswer::Silent => GrpcReply::none(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum ConfigChoice {
    Known(u8),
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    config: ConfigChoice,
    workers: u8,
    wall_start_ns: Option<u64>,
    http_answers: Vec<HttpAnswer>,
    grpc_answers: Vec<GrpcAnswer>,
    ops: Vec<Op>,
}

/// Panics when a VM of `envoy` failed (trapped), with the module's panic message if any.
fn check(envoy: &Envoy, module: &str, what: &str) {
    let failed = (0..envoy.workers())
        .filter_map(|i| envoy.worker_failure(i).map(|f| format!("worker {i}: {f}")))
        .chain(envoy.main_failure().map(|f| format!("main: {f}")))
        .collect::<Vec<_>>();
    if !failed.is_empty() {
        let panics: Vec<String> = envoy
            .logs()
            .into_iter()
            .filter(|l| l.message.contains("panicked") || l.message.contains("Wasm VM failed"))
            .map(|l| l.message)
            .collect();
        panic!(
            "{module} trapped after {what}: {failed:?}\n{}",
            panics.join("\n")
        );
    }
}

fn run(spec: &Spec, data: &[u8]) {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        run_input(spec, input);
    }
}

fn run_input(spec: &Spec, input: Input) {
    let known_configs: Vec<String> = if spec.configs.is_empty() {
        bundle_configs()
    } else {
        spec.configs.iter().map(|s| (*s).to_owned()).collect()
    };
    let (config, known) = match &input.config {
        ConfigChoice::Known(i) => (
            known_configs[usize::from(*i) % known_configs.len()]
                .as_bytes()
                .to_vec(),
            true,
        ),
        ConfigChoice::Bytes(b) => (b.clone(), false),
    };
    let mut b = Envoy::builder(module(spec.module))
        .workers(usize::from(input.workers % 2) + 1)
        .plugin_config(config.clone())
        .tracing(false)
        .log_cap(200)
        .routes(routes())
        .cluster("reviews")
        .cluster("rls")
        .cluster("registry");
    for c in SANDBOX_CLUSTERS {
        b = b.cluster(*c);
    }
    if let Some(t) = input.wall_start_ns {
        b = b.wall_start_ns(t);
    }
    let mut envoy = match b.build() {
        Ok(e) => e,
        Err(Error::ConfigRejected { logs, .. }) => {
            let trapped: Vec<&str> = logs
                .iter()
                .map(|l| l.message.as_str())
                .filter(|m| m.contains("panicked") || m.contains("Wasm VM failed"))
                .collect();
            assert!(
                trapped.is_empty(),
                "{}: on_configure trapped on {:?}: {trapped:?}",
                spec.module,
                String::from_utf8_lossy(&config)
            );
            assert!(
                !known,
                "{}: a known-good config was rejected: {logs:?}",
                spec.module
            );
            return;
        }
        Err(e) => panic!("{}: the simulated Envoy did not start: {e}", spec.module),
    };
    check(&envoy, spec.module, "start");
    let http: Arc<Mutex<VecDeque<HttpAnswer>>> = Arc::new(Mutex::new(
        input.http_answers.into_iter().take(32).collect(),
    ));
    let grpc: Arc<Mutex<VecDeque<GrpcAnswer>>> = Arc::new(Mutex::new(
        input.grpc_answers.into_iter().take(32).collect(),
    ));
    envoy.on_http_call("registry", move |_| {
        match http.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
            Some(a) => a.reply(),
            None => HttpCallReply::connect_failure(),
        }
    });
    envoy.on_grpc("rls", move |event| match event {
        host_sim::GrpcEvent::Open(_) => {
            match grpc.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
                Some(a) => a.reply(),
                None => GrpcReply::error(14, "unavailable"),
            }
        }
        _ => GrpcReply::none(),
    });
    let mut streams: Vec<StreamId> = Vec::new();
    let pick = |streams: &[StreamId], i: u8| -> Option<StreamId> {
        (!streams.is_empty()).then(|| streams[usize::from(i) % streams.len()])
    };
    // Virtual time is bounded per input: every tick on the way runs in every VM.
    let mut budget = Duration::from_secs(15);
    for (n, op) in input.ops.iter().take(64).enumerate() {
        match op {
            Op::Request {
                worker,
                pseudo,
                grpc,
                headers,
                end,
            } => {
                let s = match worker {
                    Some(w) => envoy.new_stream_on(usize::from(*w)),
                    None => envoy.new_stream(),
                };
                streams.push(s);
                let mut base: Vec<(&str, &[u8])> = Vec::new();
                if *pseudo {
                    base.extend([
                        (":method", &b"POST"[..]),
                        (":path", b"/checkout/1"),
                        (":authority", b"reviews"),
                    ]);
                }
                if *grpc {
                    base.extend([
                        ("content-type", &b"application/grpc"[..]),
                        ("te", b"trailers"),
                    ]);
                }
                let _ = envoy.send_request_headers(s, map(&base, headers), *end);
            }
            Op::RequestBody { stream, body, end } => {
                if let Some(s) = pick(&streams, *stream) {
                    let _ = envoy.send_request_body(s, body.bytes(), *end);
                }
            }
            Op::RequestTrailers { stream, trailers } => {
                if let Some(s) = pick(&streams, *stream) {
                    let _ = envoy.send_request_trailers(s, map(&[], trailers));
                }
            }
            Op::ResponseHeaders {
                stream,
                status,
                headers,
                end,
            } => {
                if let Some(s) = pick(&streams, *stream) {
                    let status = status.bytes();
                    let h = map(&[(":status", &status)], headers);
                    let _ = envoy.send_response_headers(s, h, *end);
                }
            }
            Op::ResponseBody { stream, body, end } => {
                if let Some(s) = pick(&streams, *stream) {
                    let _ = envoy.send_response_body(s, body.bytes(), *end);
                }
            }
            Op::ResponseTrailers { stream, trailers } => {
                if let Some(s) = pick(&streams, *stream) {
                    let _ = envoy.send_response_trailers(s, map(&[], trailers));
                }
            }
            Op::Reset { stream } => {
                if let Some(s) = pick(&streams, *stream) {
                    let _ = envoy.reset_stream(s);
                }
            }
            Op::Advance { ms } => {
                let d = Duration::from_millis(u64::from(*ms % 5000)).min(budget);
                budget -= d;
                envoy.advance(d);
            }
            Op::Jump { secs } => {
                let d = Duration::from_secs(u64::from(*secs % 60)).min(budget);
                budget -= d;
                envoy.advance(d);
            }
        }
        check(&envoy, spec.module, &format!("op {n}: {op:?}"));
    }
    // Let everything pending (callouts, timeouts, ticks) happen.
    envoy.advance(Duration::from_secs(1).min(budget));
    check(&envoy, spec.module, "the final second");
}

/// `load_shed.wasm` through host-sim.
pub fn abi_load_shed(data: &[u8]) {
    run(&LOAD_SHED, data);
}

/// `circuit_breaker.wasm` through host-sim.
pub fn abi_circuit_breaker(data: &[u8]) {
    run(&CIRCUIT_BREAKER, data);
}

/// `rate_limit.wasm` through host-sim (RLS answers from the input).
pub fn abi_rate_limit(data: &[u8]) {
    run(&RATE_LIMIT, data);
}

/// `sandbox_router.wasm` through host-sim (registry answers from the input).
pub fn abi_sandbox_router(data: &[u8]) {
    run(&SANDBOX_ROUTER, data);
}

/// `meshguard.wasm` (the bundle of all four policies) through host-sim.
pub fn abi_meshguard(data: &[u8]) {
    run(&BUNDLE, data);
}

/// Starts `module` with each of its known-good configs (panics on a rejection or a trap): the
/// replay test keeps them valid as the filters evolve.
pub fn check_known_configs(module: &str) {
    let spec = [
        LOAD_SHED,
        CIRCUIT_BREAKER,
        RATE_LIMIT,
        SANDBOX_ROUTER,
        BUNDLE,
    ]
    .into_iter()
    .find(|s| s.module == module)
    .expect("a known module");
    let n = if spec.configs.is_empty() {
        bundle_configs().len()
    } else {
        spec.configs.len()
    };
    for i in 0..n {
        let input = Input {
            config: ConfigChoice::Known(u8::try_from(i).expect("few configs")),
            workers: 1,
            wall_start_ns: None,
            http_answers: Vec::new(),
            grpc_answers: Vec::new(),
            ops: vec![
                Op::Request {
                    worker: None,
                    pseudo: true,
                    grpc: false,
                    headers: Vec::new(),
                    end: true,
                },
                Op::Advance { ms: 1500 },
            ],
        };
        run_input(&spec, input);
    }
}
