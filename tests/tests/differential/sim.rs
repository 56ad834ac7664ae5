//! The host-sim runner: the scenario in a simulated Envoy, virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use host_sim::{
    ClusterSpec, Envoy, FailurePolicy, GrpcEvent, GrpcReply, HeaderMap, HttpCallReply, MetricValue,
    Module, RouteSpec, StreamId, UpstreamAction, UpstreamReply, UpstreamRequest,
};

use crate::observe::{Observed, Outcome, Received, log_selected, mask};
use crate::scenario::{Policy, Reply, Request, Scenario, Server, Step};

/// The `:authority` the h2 client sends (see [`crate::client`]).
pub const AUTHORITY: &str = crate::client::AUTHORITY;

/// Virtual time a request may take before the runner stops waiting for it.
const REQUEST_CAP: Duration = Duration::from_secs(60);

/// The least virtual latency of an endpoint: the client's frames all arrive before any
/// network round trip through Envoy completes (the runner sends them after the headers call
/// returns, so a zero-latency answer would overtake them).
const MIN_LATENCY: Duration = Duration::from_millis(1);

/// What the host-sim run produced: the observations and, per step, how many compared
/// `probe:log:` lines existed after it (the Envoy runner waits for the same count).
pub struct SimRun {
    pub observed: Observed,
    pub log_counts: Vec<usize>,
}

/// Runs `s` in host-sim with the module at `wasm`.
pub fn run(s: &Scenario, wasm: &Path) -> SimRun {
    let module = Module::from_file(wasm).expect("loading the probe into host-sim");
    let mut b = Envoy::builder(module)
        .workers(s.workers as usize)
        .plugin_config(s.plugin_config.as_bytes().to_vec())
        .vm_id(s.name)
        .root_id(s.name)
        .plugin_name(s.name)
        .protocol(if s.http1 { "HTTP/1.1" } else { "HTTP/2" })
        .route_timeout(Some(s.route_timeout))
        .failure_policy(match s.policy {
            Policy::FailClosed => FailurePolicy::FailClosed,
            Policy::FailOpen => FailurePolicy::FailOpen,
        });
    for c in &s.clusters {
        b = b.cluster(ClusterSpec::new(c.name.clone()));
    }
    b = b.routes(
        s.routes
            .iter()
            .map(|r| {
                let mut spec = RouteSpec::new(r.name.clone(), r.cluster.clone());
                spec.prefix = r.prefix.clone();
                spec.header = r.header.clone();
                spec.metadata = r.metadata.clone();
                spec
            })
            .collect(),
    );
    let mut envoy = b.build().expect("host-sim start");

    let servers: BTreeMap<String, Server> = s
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.server.clone()))
        .collect();
    let routed = servers.clone();
    envoy.set_upstream(
        move |req: &UpstreamRequest<'_>, _now| match routed.get(req.cluster) {
            Some(Server::Reply(r)) => UpstreamAction::Respond {
                after: r.delay.max(MIN_LATENCY),
                reply: UpstreamReply::Response {
                    headers: reply_headers(r),
                    body: r.body.clone(),
                    trailers: (!r.trailers.is_empty())
                        .then(|| HeaderMap::from_pairs(r.trailers.clone())),
                },
            },
            Some(Server::ResetBeforeHeaders) => UpstreamAction::Respond {
                after: MIN_LATENCY,
                reply: UpstreamReply::Reset,
            },
            Some(Server::ResetAfterHeaders(_)) => {
                panic!("a routed reset after headers is not modelled by host-sim's upstream")
            }
            Some(Server::Down) | None => UpstreamAction::Respond {
                after: MIN_LATENCY,
                reply: UpstreamReply::ConnectFailure,
            },
        },
    );
    for (name, server) in &servers {
        let http = server.clone();
        envoy.on_http_call(name, move |_call| match &http {
            Server::Reply(r) => {
                let mut reply = HttpCallReply::status(r.status);
                for (k, v) in &r.headers {
                    reply = reply.header(k, v);
                }
                for (k, v) in &r.trailers {
                    reply = reply.trailer(k, v);
                }
                reply.body(r.body.clone()).after(r.delay.max(MIN_LATENCY))
            }
            Server::Down => HttpCallReply::connect_failure().after(MIN_LATENCY),
            Server::ResetBeforeHeaders => HttpCallReply::reset_before_headers().after(MIN_LATENCY),
            Server::ResetAfterHeaders(r) => HttpCallReply::reset().after(r.delay.max(MIN_LATENCY)),
        });
        let grpc = server.clone();
        envoy.on_grpc(name, move |event| match (&grpc, event) {
            (Server::Reply(r), GrpcEvent::Open(_)) => grpc_reply(r).after(r.delay.max(MIN_LATENCY)),
            (_, GrpcEvent::Open(_)) => {
                panic!("gRPC callouts to failing endpoints are not part of the suite")
            }
            _ => GrpcReply::none(),
        });
    }
    // Start-up lines (configure, vm_start) are not request observations.
    let mut streams: Vec<StreamId> = Vec::new();
    let mut log_counts = Vec::new();
    for step in &s.steps {
        match step {
            Step::Request(r) => streams.push(send(&mut envoy, r, s.http1)),
            Step::Ticks { rounds } => {
                let period = tick_period(&s.plugin_config);
                envoy.advance(period * *rounds);
            }
        }
        log_counts.push(count_on_log(&envoy));
    }

    let c = &s.compare;
    let responses = streams
        .iter()
        .map(|id| {
            let rec = envoy.stream(*id).expect("stream record");
            let d = &rec.downstream;
            let pairs =
                |m: &Option<HeaderMap>| m.as_ref().map(|m| m.to_pairs()).unwrap_or_default();
            Outcome::new(
                d.status(),
                pairs(&d.headers),
                &d.body,
                pairs(&d.trailers),
                rec.reset.is_some(),
            )
        })
        .collect();

    let mut received: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    // Every endpoint but a down one receives the request (a resetting one too).
    let reachable = |cluster: &str| !matches!(servers.get(cluster), Some(Server::Down) | None);
    for id in &streams {
        let rec = envoy.stream(*id).expect("stream record");
        let (Some(cluster), Some(h)) = (&rec.cluster, &rec.upstream.headers) else {
            continue;
        };
        if !reachable(cluster) {
            continue;
        }
        let trailers = rec
            .upstream
            .trailers
            .as_ref()
            .map(HeaderMap::to_pairs)
            .unwrap_or_default();
        received
            .entry(cluster.clone())
            .or_default()
            .push(received_from(c, h, &rec.upstream.body, trailers));
    }
    for call in envoy.callouts() {
        if call.status != host_sim::Status::Ok || !reachable(&call.cluster) {
            continue;
        }
        let r = match call.kind {
            host_sim::CalloutKind::Http => {
                received_from(c, &call.headers, &call.body, call.trailers.to_pairs())
            }
            _ => {
                // What a gRPC call looks like on the wire (host-sim records it as a call).
                let mut h = HeaderMap::new();
                h.add(":method", "POST");
                h.add(":path", format!("/{}/{}", call.service, call.method));
                h.add(":authority", &call.cluster);
                for (k, v) in call.headers.iter() {
                    h.add(k, v);
                }
                h.add("content-type", "application/grpc");
                h.add("te", "trailers");
                let body = crate::scenario::grpc_frame(&call.body);
                received_from(c, &h, &body, Vec::new())
            }
        };
        received.entry(call.cluster.clone()).or_default().push(r);
    }
    for list in received.values_mut() {
        list.sort();
    }

    let metrics = c
        .metrics
        .iter()
        .map(|name| {
            let m = envoy.metrics();
            let v = match m.get(name) {
                Some(MetricValue::Counter { value } | MetricValue::Gauge { value }) => *value,
                _ => 0,
            };
            ((*name).to_owned(), v)
        })
        .collect();

    let mut logs: Vec<String> = envoy
        .logs()
        .iter()
        .filter(|l| log_selected(c, &l.message))
        .map(|l| mask(c, &l.message))
        .collect();
    if s.workers > 1 {
        // Several VMs log concurrently in Envoy: compare the lines, not their interleaving.
        logs.sort();
    }

    let ticking_vms = c.ticking_vms.then(|| {
        envoy
            .logs()
            .iter()
            .filter(|l| l.message.starts_with("probe:tick:"))
            .map(|l| l.vm.clone())
            .collect::<BTreeSet<_>>()
            .len()
    });

    SimRun {
        observed: Observed {
            responses,
            received,
            metrics,
            logs,
            ticking_vms,
        },
        log_counts,
    }
}

/// `:status` then the reply's headers.
fn reply_headers(r: &Reply) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.add(":status", r.status.to_string());
    for (k, v) in &r.headers {
        h.add(k, v);
    }
    h
}

/// A gRPC reply from a wire-level [`Reply`]: the message without its frame, or the status.
fn grpc_reply(r: &Reply) -> GrpcReply {
    let status = r
        .trailers
        .iter()
        .find(|(k, _)| k == "grpc-status")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(2);
    if status == 0 {
        GrpcReply::ok(r.body.get(5..).unwrap_or_default().to_vec())
    } else {
        let msg = r
            .trailers
            .iter()
            .find(|(k, _)| k == "grpc-message")
            .map_or("", |(_, v)| v.as_str());
        GrpcReply::error(status, msg)
    }
}

fn received_from(
    c: &crate::scenario::Compare,
    h: &HeaderMap,
    body: &[u8],
    trailers: Vec<(String, String)>,
) -> Received {
    let get = |k: &str| h.get(k).unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for name in &c.received_headers {
        for v in h.get_all(name) {
            headers.push(((*name).to_owned(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Received {
        method: get(":method"),
        path: get(":path"),
        authority: get(":authority"),
        headers,
        body: crate::observe::body_text(body),
        trailers,
    }
}

/// Sends one request as the client does (the h2 client: pseudo-headers as hyper sends them;
/// the HTTP/1.1 client: what Envoy's codec makes of its head), then lets virtual time run
/// until it completes.
fn send(envoy: &mut Envoy, r: &Request, http1: bool) -> StreamId {
    let id = envoy.new_stream();
    let mut h = HeaderMap::new();
    h.add(":method", &r.method);
    if http1 {
        // Envoy's HTTP/1 codec: `:authority` from `host`, then the request line.
        h = HeaderMap::new();
        h.add(":authority", AUTHORITY);
        h.add(":path", &r.path);
        h.add(":method", &r.method);
    } else {
        h.add(":scheme", "http");
        h.add(":authority", AUTHORITY);
        h.add(":path", &r.path);
    }
    for (k, v) in &r.headers {
        h.add(k, v);
    }
    if http1 && !r.body.is_empty() {
        let len: usize = r.body.iter().map(Vec::len).sum();
        h.add("content-length", len.to_string());
    }
    let no_body = r.body.is_empty() && r.trailers.is_empty();
    envoy
        .send_request_headers(id, h, no_body)
        .expect("request headers");
    for (i, chunk) in r.body.iter().enumerate() {
        let last = i + 1 == r.body.len() && r.trailers.is_empty();
        envoy
            .send_request_body(id, chunk, last)
            .expect("request body");
    }
    if !r.trailers.is_empty() {
        envoy
            .send_request_trailers(id, HeaderMap::from_pairs(r.trailers.clone()))
            .expect("request trailers");
    }
    let deadline = envoy.now() + REQUEST_CAP;
    while !envoy.stream(id).is_some_and(|s| s.complete) {
        match envoy.next_event_in() {
            Some(d) if envoy.now() + d <= deadline => envoy.advance(d),
            _ => break,
        }
    }
    id
}

fn count_on_log(envoy: &Envoy) -> usize {
    envoy
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("probe:log:"))
        .count()
}

/// `tick=<ms>` from the probe's configuration.
pub fn tick_period(config: &str) -> Duration {
    config
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tick="))
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}
