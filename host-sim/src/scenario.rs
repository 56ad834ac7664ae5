//! Scenario files: a simulated Envoy, streams described as data, time advances, callout
//! responders and expectations, in one JSON document. The `host-sim run` CLI executes them and
//! prints a JSON-lines trace, so filters written in any language can be tested, and the same
//! description can later be replayed against a real Envoy (requests are what a client sends,
//! responses what the upstream answers, `advance` is waiting).
//!
//! ```json
//! {
//!   "workers": 2,
//!   "plugin_config": {"mode": "enforce"},
//!   "clusters": [{"name": "auth"}],
//!   "http_responders": {"auth": {"status": 200, "body": "ok", "delay": "20ms"}},
//!   "steps": [
//!     {"request": {"id": "a", "headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"]]}},
//!     {"advance": "50ms"},
//!     {"response": {"id": "a", "headers": [[":status", "200"]]}},
//!     {"expect": {"stream": "a", "status": 200, "complete": true}},
//!     {"expect": {"counter": "meshguard.x.requests", "value": 1}}
//!   ]
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::callout::{GrpcEvent, GrpcReply, HttpCallReply};
use crate::config::{ClusterSpec, FailurePolicy, NodeSpec, RouteSpec};
use crate::error::{Error, Result};
use crate::headers::HeaderMap;
use crate::upstream::{UpstreamAction, UpstreamReply};
use crate::{Envoy, Module, StreamId, Verdict};

/// A whole scenario.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Worker VMs (default 2).
    pub workers: Option<usize>,
    /// Plugin configuration: a string as-is, anything else serialized as JSON.
    pub plugin_config: Option<Value>,
    /// VM configuration (same rules).
    pub vm_config: Option<Value>,
    /// `vm_id`.
    pub vm_id: Option<String>,
    /// `root_id`.
    pub root_id: Option<String>,
    /// Plugin name.
    pub plugin_name: Option<String>,
    /// Failure policy.
    pub failure_policy: Option<FailurePolicy>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Extra clusters (the default cluster `upstream` always exists).
    pub clusters: Vec<ClusterSpec>,
    /// Routes (default: everything to `upstream`).
    pub routes: Option<Vec<RouteSpec>>,
    /// Node.
    pub node: Option<NodeSpec>,
    /// Seed.
    pub seed: Option<u64>,
    /// Route timeout (`"0s"` disables).
    #[serde(with = "opt_duration")]
    pub route_timeout: Option<Duration>,
    /// Responders for http callouts, by cluster.
    pub http_responders: BTreeMap<String, HttpResponderSpec>,
    /// Responders for gRPC calls, by cluster.
    pub grpc_responders: BTreeMap<String, GrpcResponderSpec>,
    /// An automatic upstream answering every forwarded request.
    pub upstream: Option<UpstreamSpec>,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// A fixed http callout answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpResponderSpec {
    /// Status (default 200).
    pub status: Option<u16>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Trailers.
    pub trailers: Vec<(String, String)>,
    /// Latency.
    #[serde(with = "opt_duration")]
    pub delay: Option<Duration>,
    /// Reset after the response started (the module sees zero headers, `reset`).
    pub reset: bool,
    /// The endpoint refuses connections (the router answers 503).
    pub connect_failure: bool,
    /// The endpoint resets before headers (the router answers 503).
    pub reset_before_headers: bool,
    /// Never answer.
    pub never: bool,
}

/// A fixed gRPC unary answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcResponderSpec {
    /// Response message (for status 0).
    pub message: String,
    /// gRPC status (non-zero = failure delivered as close).
    pub status: u32,
    /// Status message.
    pub status_message: String,
    /// Latency.
    #[serde(with = "opt_duration")]
    pub delay: Option<Duration>,
}

/// Automatic upstream answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Status (default 200).
    pub status: Option<u16>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Latency.
    #[serde(with = "opt_duration")]
    pub delay: Option<Duration>,
    /// Reset instead of answering.
    pub reset: bool,
}

/// A request from the client (headers, then optional body chunks and trailers).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestStep {
    /// Name used by later steps.
    pub id: String,
    /// Worker (default round-robin).
    pub worker: Option<usize>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body chunks.
    pub body: Vec<String>,
    /// Trailers.
    pub trailers: Option<Vec<(String, String)>>,
}

/// An upstream response to a request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseStep {
    /// Which request.
    pub id: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body chunks.
    pub body: Vec<String>,
    /// Trailers.
    pub trailers: Option<Vec<(String, String)>>,
}

/// One step.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Client request.
    Request(RequestStep),
    /// Upstream response.
    Response(ResponseStep),
    /// Advance virtual time.
    Advance(#[serde(with = "crate::scenario::duration_serde")] Duration),
    /// The client resets a stream.
    Reset(String),
    /// Check something.
    Expect(Box<Expect>),
}

/// An expectation. Set the fields to check; unset fields are ignored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    /// Stream to check.
    pub stream: Option<String>,
    /// Downstream `:status`.
    pub status: Option<u16>,
    /// Answered by a local reply.
    pub local_reply: Option<bool>,
    /// Local reply details.
    pub details: Option<String>,
    /// gRPC status seen downstream.
    pub grpc_status: Option<u32>,
    /// The request reached the upstream.
    pub forwarded: Option<bool>,
    /// The stream finished.
    pub complete: Option<bool>,
    /// Downstream body.
    pub body: Option<String>,
    /// Downstream header `[name, value]`.
    pub header: Option<(String, String)>,
    /// Header the upstream received `[name, value]` (value `null`: absent).
    pub upstream_header: Option<(String, Option<String>)>,
    /// Counter name (with `value`).
    pub counter: Option<String>,
    /// Gauge name (with `value`).
    pub gauge: Option<String>,
    /// Expected metric value.
    pub value: Option<u64>,
    /// Some log line contains this.
    pub log_contains: Option<String>,
    /// Number of callouts (optionally to `cluster`).
    pub callouts: Option<usize>,
    /// Cluster for `callouts`.
    pub cluster: Option<String>,
    /// A worker VM failed (true) or not.
    pub worker_failed: Option<(usize, bool)>,
}

/// Result of running a scenario.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Expectations that held.
    pub passed: usize,
    /// Expectations that failed.
    pub failed: usize,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::duration_serde")] Duration);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

fn config_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

fn map(pairs: &[(String, String)]) -> HeaderMap {
    HeaderMap::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

impl Scenario {
    /// Parses a scenario from JSON.
    ///
    /// # Errors
    /// [`Error::Scenario`] with the JSON error.
    pub fn from_json(s: &str) -> Result<Scenario> {
        serde_json::from_str(s).map_err(|e| Error::Scenario(e.to_string()))
    }

    /// Builds the simulated Envoy this scenario describes.
    ///
    /// # Errors
    /// As [`crate::EnvoyBuilder::build`].
    pub fn build(&self, module: Module, plugin_config_override: Option<Vec<u8>>) -> Result<Envoy> {
        let mut b = Envoy::builder(module);
        if let Some(w) = self.workers {
            b = b.workers(w);
        }
        if let Some(c) =
            plugin_config_override.or_else(|| self.plugin_config.as_ref().map(config_bytes))
        {
            b = b.plugin_config(c);
        }
        if let Some(c) = &self.vm_config {
            b = b.vm_config(config_bytes(c));
        }
        if let Some(v) = &self.vm_id {
            b = b.vm_id(v);
        }
        if let Some(v) = &self.root_id {
            b = b.root_id(v);
        }
        if let Some(v) = &self.plugin_name {
            b = b.plugin_name(v);
        }
        if let Some(p) = self.failure_policy {
            b = b.failure_policy(p);
        }
        for (k, v) in &self.env {
            b = b.env(k, v);
        }
        for c in &self.clusters {
            b = b.cluster(c.clone());
        }
        if let Some(r) = &self.routes {
            b = b.routes(r.clone());
        }
        if let Some(n) = &self.node {
            b = b.node(n.clone());
        }
        if let Some(s) = self.seed {
            b = b.seed(s);
        }
        if let Some(t) = self.route_timeout {
            b = b.route_timeout(if t.is_zero() { None } else { Some(t) });
        }
        let mut envoy = b.build()?;
        for (cluster, spec) in &self.http_responders {
            let spec = spec.clone();
            envoy.on_http_call(cluster, move |_| {
                if spec.never {
                    return HttpCallReply::never();
                }
                let mut r = if spec.reset {
                    HttpCallReply::reset()
                } else if spec.connect_failure {
                    HttpCallReply::connect_failure()
                } else if spec.reset_before_headers {
                    HttpCallReply::reset_before_headers()
                } else {
                    HttpCallReply::status(spec.status.unwrap_or(200))
                };
                for (k, v) in &spec.headers {
                    r = r.header(k, v);
                }
                for (k, v) in &spec.trailers {
                    r = r.trailer(k, v);
                }
                r.body(spec.body.clone())
                    .after(spec.delay.unwrap_or_default())
            });
        }
        for (cluster, spec) in &self.grpc_responders {
            let spec = spec.clone();
            envoy.on_grpc(cluster, move |ev| match ev {
                GrpcEvent::Open(_) => {
                    let r = if spec.status == 0 {
                        GrpcReply::ok(spec.message.clone())
                    } else {
                        GrpcReply::error(spec.status, &spec.status_message)
                    };
                    r.after(spec.delay.unwrap_or_default())
                }
                _ => GrpcReply::none(),
            });
        }
        if let Some(u) = &self.upstream {
            let u = u.clone();
            envoy.set_upstream(move |_: &crate::UpstreamRequest<'_>, _| {
                let reply = if u.reset {
                    UpstreamReply::Reset
                } else {
                    let mut r = UpstreamReply::status(u.status.unwrap_or(200), u.body.clone());
                    if let UpstreamReply::Response { headers, .. } = &mut r {
                        for (k, v) in &u.headers {
                            headers.add(k, v);
                        }
                    }
                    r
                };
                UpstreamAction::Respond {
                    after: u.delay.unwrap_or_default(),
                    reply,
                }
            });
        }
        Ok(envoy)
    }

    /// Runs the scenario, sending every trace event and expectation result to `out` as JSON.
    ///
    /// # Errors
    /// Start-up errors, or a step that the simulator cannot perform.
    pub fn run(
        &self,
        module: Module,
        plugin_config_override: Option<Vec<u8>>,
        out: &mut dyn FnMut(Value),
    ) -> Result<Outcome> {
        let mut envoy = self.build(module, plugin_config_override)?;
        let mut streams: BTreeMap<String, StreamId> = BTreeMap::new();
        let mut outcome = Outcome::default();
        flush(&mut envoy, out);
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Request(r) => {
                    let s = match r.worker {
                        Some(w) => envoy.new_stream_on(w),
                        None => envoy.new_stream(),
                    };
                    streams.insert(r.id.clone(), s);
                    let no_more = r.body.is_empty() && r.trailers.is_none();
                    let mut v = envoy.send_request_headers(s, map(&r.headers), no_more)?;
                    let n = r.body.len();
                    for (j, chunk) in r.body.iter().enumerate() {
                        if matches!(v, Verdict::LocalReply(_) | Verdict::Reset(_)) {
                            break;
                        }
                        v = envoy.send_request_body(
                            s,
                            chunk,
                            j + 1 == n && r.trailers.is_none(),
                        )?;
                    }
                    if let (Some(t), false) = (
                        &r.trailers,
                        matches!(v, Verdict::LocalReply(_) | Verdict::Reset(_)),
                    ) {
                        v = envoy.send_request_trailers(s, map(t))?;
                    }
                    flush(&mut envoy, out);
                    out(
                        json!({"ev": "step", "step": i, "request": r.id, "stream": s.0, "verdict": verdict_str(&v)}),
                    );
                }
                Step::Response(r) => {
                    let s = *streams.get(&r.id).ok_or_else(|| {
                        Error::Scenario(format!("step {i}: unknown request id {:?}", r.id))
                    })?;
                    let no_more = r.body.is_empty() && r.trailers.is_none();
                    let mut v = envoy.send_response_headers(s, map(&r.headers), no_more)?;
                    let n = r.body.len();
                    for (j, chunk) in r.body.iter().enumerate() {
                        v = envoy.send_response_body(
                            s,
                            chunk,
                            j + 1 == n && r.trailers.is_none(),
                        )?;
                    }
                    if let Some(t) = &r.trailers {
                        v = envoy.send_response_trailers(s, map(t))?;
                    }
                    flush(&mut envoy, out);
                    out(
                        json!({"ev": "step", "step": i, "response": r.id, "stream": s.0, "verdict": verdict_str(&v)}),
                    );
                }
                Step::Advance(d) => {
                    envoy.advance(*d);
                    flush(&mut envoy, out);
                    out(json!({"ev": "step", "step": i, "advance_ms": d.as_secs_f64() * 1e3}));
                }
                Step::Reset(id) => {
                    let s = *streams.get(id).ok_or_else(|| {
                        Error::Scenario(format!("step {i}: unknown request id {id:?}"))
                    })?;
                    envoy.reset_stream(s)?;
                    flush(&mut envoy, out);
                }
                Step::Expect(e) => {
                    let failures = check::check(&envoy, &streams, e);
                    let ok = failures.is_empty();
                    if ok {
                        outcome.passed += 1;
                    } else {
                        outcome.failed += 1;
                    }
                    out(json!({"ev": "expect", "step": i, "ok": ok, "failures": failures}));
                }
            }
        }
        let metrics: BTreeMap<String, Value> = envoy
            .metrics()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::to_value(v).unwrap_or(Value::Null),
                )
            })
            .collect();
        out(json!({"ev": "metrics", "metrics": metrics}));
        out(json!({"ev": "summary", "passed": outcome.passed, "failed": outcome.failed}));
        Ok(outcome)
    }
}

fn verdict_str(v: &Verdict) -> Value {
    match v {
        Verdict::Forwarded => json!("forwarded"),
        Verdict::Paused => json!("paused"),
        Verdict::LocalReply(r) => json!({"local_reply": r.status, "details": r.details}),
        Verdict::Reset(d) => json!({"reset": d}),
    }
}

fn flush(envoy: &mut Envoy, out: &mut dyn FnMut(Value)) {
    for ev in envoy.take_trace() {
        out(serde_json::to_value(&ev).unwrap_or(Value::Null));
    }
}

mod check;
/// Durations as strings: `"250ms"`, `"1s"`, `"1.5s"`, `"2m"`, `"100us"`, `"10ns"` (a bare
/// number is milliseconds).
pub mod duration_serde;
