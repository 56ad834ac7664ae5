//! Load driver: open-loop arrivals in virtual time over the workers, against an upstream model,
//! reporting goodput, rejections, latency percentiles and a time series.
//!
//! Open loop means arrivals do not wait for responses (like real clients under overload), so a
//! filter that sheds too little lets the upstream queue grow and latency climb, exactly the
//! failure load shedding exists to prevent. Everything runs in virtual time: minutes of
//! overload take seconds.
//!
//! ```no_run
//! use std::time::Duration;
//! use host_sim::load::{Arrivals, LoadSpec, UpstreamModel, Latency};
//! # fn main() -> Result<(), host_sim::Error> {
//! let mut envoy = host_sim::Envoy::builder(host_sim::Module::load("noop")?).tracing(false).build()?;
//! let spec = LoadSpec {
//!     duration: Duration::from_secs(60),
//!     arrivals: Arrivals::Poisson { rps: 200.0 },
//!     upstream: UpstreamModel { capacity: 10, latency: Latency::Fixed(Duration::from_millis(20)), ..Default::default() },
//!     ..Default::default()
//! };
//! let report = host_sim::load::run(&mut envoy, &spec);
//! println!("{}", report.summary_line("noop"));
//! # Ok(()) }
//! ```

mod arrivals;
mod model;
mod report;

pub use arrivals::{Arrivals, Step};
pub use model::{FailureMode, FailureWindow, Latency, UpstreamModel};
pub use report::{ClassStats, LoadReport, Window};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Envoy;
use crate::clock::ns;
use crate::headers::HeaderMap;
use crate::rng::Rng;

/// A class of requests (e.g. by criticality), chosen at random by weight.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestClass {
    /// Name used in the report.
    pub name: String,
    /// Relative weight.
    pub weight: f64,
    /// Extra request headers for this class.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// One load run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoadSpec {
    /// How long arrivals continue.
    #[serde(with = "crate::scenario::duration_serde")]
    pub duration: Duration,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Request classes (default: one class `default`).
    pub classes: Vec<RequestClass>,
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// Headers on every request.
    pub headers: Vec<(String, String)>,
    /// The upstream.
    pub upstream: UpstreamModel,
    /// Time-series bucket width.
    #[serde(with = "crate::scenario::duration_serde")]
    pub window: Duration,
    /// After arrivals stop, how long to keep running so in-flight requests finish.
    #[serde(with = "crate::scenario::duration_serde")]
    pub drain: Duration,
    /// Metrics (gauges or counters) sampled at the end of every window.
    pub sample_metrics: Vec<String>,
    /// Seed for arrivals, classes and the upstream model.
    pub seed: u64,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            arrivals: Arrivals::Poisson { rps: 100.0 },
            classes: vec![RequestClass {
                name: "default".into(),
                weight: 1.0,
                headers: Vec::new(),
            }],
            method: "GET".into(),
            path: "/".into(),
            authority: "service".into(),
            headers: Vec::new(),
            upstream: UpstreamModel::default(),
            window: Duration::from_secs(1),
            drain: Duration::from_secs(30),
            sample_metrics: Vec::new(),
            seed: 7,
        }
    }
}

/// Runs `spec` against `envoy` (installs the upstream model as the Envoy's upstream and turns
/// the trace off). Deterministic for a given spec, seed and module.
pub fn run(envoy: &mut Envoy, spec: &LoadSpec) -> LoadReport {
    envoy.set_tracing(false);
    let mut rng = Rng::new(spec.seed);
    let model = Arc::new(Mutex::new(model::State::new(
        spec.upstream.clone(),
        rng.fork(),
    )));
    let shared = model.clone();
    envoy.set_upstream(move |req: &crate::UpstreamRequest<'_>, now: Duration| {
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_request(req, now)
    });
    let start = envoy.now();
    let start_ns = ns(start);
    let end_ns = start_ns.saturating_add(ns(spec.duration));
    let total_weight: f64 = spec.classes.iter().map(|c| c.weight.max(0.0)).sum();
    let mut report = LoadReport::new(spec, start_ns);
    let mut classes: HashMap<u64, usize> = HashMap::new();
    let mut arrivals = arrivals::Cursor::new(spec.arrivals.clone(), start_ns, rng.fork());
    let mut next_window = start_ns.saturating_add(ns(spec.window).max(1));
    while let Some(t) = arrivals.next_at().filter(|t| *t < end_ns) {
        while next_window <= t {
            envoy.advance_to(Duration::from_nanos(next_window));
            collect(envoy, &mut report, &mut classes);
            report.close_window(envoy, &model, next_window);
            next_window = next_window.saturating_add(ns(spec.window).max(1));
        }
        envoy.advance_to(Duration::from_nanos(t));
        collect(envoy, &mut report, &mut classes);
        let class = pick_class(spec, &mut rng, total_weight);
        let mut h = HeaderMap::new();
        h.add(":method", &spec.method);
        h.add(":path", &spec.path);
        h.add(":authority", &spec.authority);
        h.add(":scheme", "http");
        for (k, v) in &spec.headers {
            h.add(k, v);
        }
        if let Some(c) = spec.classes.get(class) {
            for (k, v) in &c.headers {
                h.add(k, v);
            }
        }
        let s = envoy.new_stream();
        classes.insert(s.0, class);
        report.on_sent(t, class);
        let _ = envoy.send_request_headers(s, h, true);
        collect(envoy, &mut report, &mut classes);
    }
    // Stop arrivals; let in-flight work finish.
    let stop = end_ns.saturating_add(ns(spec.drain));
    while next_window <= stop {
        envoy.advance_to(Duration::from_nanos(next_window));
        collect(envoy, &mut report, &mut classes);
        report.close_window(envoy, &model, next_window);
        next_window = next_window.saturating_add(ns(spec.window).max(1));
        if envoy.active_streams() == 0 && next_window > end_ns {
            break;
        }
    }
    collect(envoy, &mut report, &mut classes);
    report.finish(envoy.active_streams() as u64);
    envoy.clear_upstream();
    report
}

fn pick_class(spec: &LoadSpec, rng: &mut Rng, total: f64) -> usize {
    if spec.classes.len() <= 1 || total <= 0.0 {
        return 0;
    }
    let mut x = rng.next_f64() * total;
    for (i, c) in spec.classes.iter().enumerate() {
        x -= c.weight.max(0.0);
        if x < 0.0 {
            return i;
        }
    }
    spec.classes.len() - 1
}

fn collect(envoy: &mut Envoy, report: &mut LoadReport, classes: &mut HashMap<u64, usize>) {
    for rec in envoy.take_finished() {
        let class = classes.remove(&rec.id.0).unwrap_or(0);
        report.on_finished(&rec, class);
    }
}
