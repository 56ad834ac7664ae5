//! What a load run measured.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::LoadSpec;
use super::model::State;
use crate::{Envoy, StreamRecord};

/// Counters for one request class.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClassStats {
    /// Requests sent.
    pub sent: u64,
    /// Answered 2xx by the upstream (gRPC: and grpc-status 0).
    pub ok: u64,
    /// Answered by a local reply from the filter (not Envoy's router or failure replies).
    pub rejected: u64,
    /// Upstream errors (5xx from upstream, resets, connect failures).
    pub errors: u64,
    /// Route timeouts (504 `response_timeout`).
    pub timeouts: u64,
}

/// One time-series bucket.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Window {
    /// Window end, seconds since the run started.
    pub t_s: f64,
    /// Requests sent in the window.
    pub sent: u64,
    /// Completed OK in the window.
    pub ok: u64,
    /// Rejected by the filter in the window.
    pub rejected: u64,
    /// Upstream errors in the window.
    pub errors: u64,
    /// Timeouts in the window.
    pub timeouts: u64,
    /// p50 latency of OK requests completed in the window, ms.
    pub p50_ms: f64,
    /// p99 latency of OK requests completed in the window, ms.
    pub p99_ms: f64,
    /// Upstream requests queued at the window end.
    pub upstream_queued: usize,
    /// Streams in flight in Envoy at the window end.
    pub in_flight: usize,
    /// Sampled metrics at the window end.
    pub metrics: BTreeMap<String, u64>,
}

/// Result of [`super::run`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests that finished.
    pub completed: u64,
    /// Upstream 2xx answers.
    pub ok: u64,
    /// Filter local replies.
    pub rejected: u64,
    /// Upstream errors.
    pub errors: u64,
    /// Route timeouts.
    pub timeouts: u64,
    /// `wasm_fail_stream` replies (the VM failed).
    pub wasm_failures: u64,
    /// Streams still open at the end.
    pub unfinished: u64,
    /// OK answers completed while arrivals were running, per second of the run's duration.
    pub goodput_rps: f64,
    /// Latency percentiles of OK requests, ms.
    pub p50_ms: f64,
    /// p90.
    pub p90_ms: f64,
    /// p99.
    pub p99_ms: f64,
    /// Max.
    pub max_ms: f64,
    /// p50 latency of rejected requests (how fast shedding answers), ms.
    pub rejected_p50_ms: f64,
    /// Per class.
    pub classes: BTreeMap<String, ClassStats>,
    /// Time series.
    pub series: Vec<Window>,
    #[serde(skip)]
    start_ns: u64,
    #[serde(skip)]
    end_ns: u64,
    #[serde(skip)]
    ok_in_run: u64,
    #[serde(skip)]
    duration_s: f64,
    #[serde(skip)]
    class_names: Vec<String>,
    #[serde(skip)]
    ok_lat: Vec<u64>,
    #[serde(skip)]
    rej_lat: Vec<u64>,
    #[serde(skip)]
    cur: Window,
    #[serde(skip)]
    cur_lat: Vec<u64>,
    #[serde(skip)]
    sample: Vec<String>,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(i.min(sorted.len() - 1))
        .map_or(0.0, |v| *v as f64 / 1e6)
}

enum Outcome {
    Ok,
    Rejected,
    Error,
    Timeout,
    WasmFailure,
}

fn classify(rec: &StreamRecord) -> Outcome {
    if let Some(lr) = &rec.local_reply {
        return match lr.details.as_str() {
            "response_timeout" => Outcome::Timeout,
            "wasm_fail_stream" => Outcome::WasmFailure,
            d if d.starts_with("upstream_reset") => Outcome::Error,
            _ => Outcome::Rejected,
        };
    }
    if rec.reset.is_some() {
        return Outcome::Error;
    }
    let status = rec.downstream.status().unwrap_or(0);
    let grpc_ok = rec.downstream.grpc_status().is_none_or(|s| s == 0);
    if (200..300).contains(&status) && grpc_ok {
        Outcome::Ok
    } else {
        Outcome::Error
    }
}

impl LoadReport {
    pub(crate) fn new(spec: &LoadSpec, start_ns: u64) -> Self {
        let mut r = LoadReport {
            start_ns,
            end_ns: start_ns.saturating_add(crate::clock::ns(spec.duration)),
            duration_s: spec.duration.as_secs_f64(),
            class_names: spec.classes.iter().map(|c| c.name.clone()).collect(),
            sample: spec.sample_metrics.clone(),
            ..Default::default()
        };
        for c in &r.class_names {
            r.classes.insert(c.clone(), ClassStats::default());
        }
        r
    }

    fn class(&mut self, i: usize) -> &mut ClassStats {
        let name = self
            .class_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| "default".into());
        self.classes.entry(name).or_default()
    }

    pub(crate) fn on_sent(&mut self, _t: u64, class: usize) {
        self.sent += 1;
        self.cur.sent += 1;
        self.class(class).sent += 1;
    }

    pub(crate) fn on_finished(&mut self, rec: &StreamRecord, class: usize) {
        self.completed += 1;
        let lat = rec
            .end_ns
            .unwrap_or(rec.start_ns)
            .saturating_sub(rec.start_ns);
        match classify(rec) {
            Outcome::Ok => {
                self.ok += 1;
                if rec.end_ns.is_some_and(|t| t <= self.end_ns) {
                    self.ok_in_run += 1;
                }
                self.cur.ok += 1;
                self.class(class).ok += 1;
                self.ok_lat.push(lat);
                self.cur_lat.push(lat);
            }
            Outcome::Rejected => {
                self.rejected += 1;
                self.cur.rejected += 1;
                self.class(class).rejected += 1;
                self.rej_lat.push(lat);
            }
            Outcome::Error => {
                self.errors += 1;
                self.cur.errors += 1;
                self.class(class).errors += 1;
            }
            Outcome::Timeout => {
                self.timeouts += 1;
                self.cur.timeouts += 1;
                self.class(class).timeouts += 1;
            }
            Outcome::WasmFailure => {
                self.wasm_failures += 1;
                self.cur.errors += 1;
                self.class(class).errors += 1;
            }
        }
    }

    pub(crate) fn close_window(&mut self, envoy: &Envoy, model: &Arc<Mutex<State>>, t: u64) {
        let mut w = std::mem::take(&mut self.cur);
        let mut lat = std::mem::take(&mut self.cur_lat);
        lat.sort_unstable();
        w.t_s = Duration::from_nanos(t.saturating_sub(self.start_ns)).as_secs_f64();
        w.p50_ms = pct(&lat, 0.5);
        w.p99_ms = pct(&lat, 0.99);
        w.upstream_queued = model.lock().unwrap_or_else(|e| e.into_inner()).queued(t);
        w.in_flight = envoy.active_streams();
        let m = envoy.metrics();
        for name in &self.sample {
            let v = match m.get(name) {
                Some(
                    crate::MetricValue::Counter { value } | crate::MetricValue::Gauge { value },
                ) => *value,
                _ => 0,
            };
            w.metrics.insert(name.clone(), v);
        }
        self.series.push(w);
    }

    pub(crate) fn finish(&mut self, unfinished: u64) {
        self.unfinished = unfinished;
        self.ok_lat.sort_unstable();
        self.rej_lat.sort_unstable();
        self.p50_ms = pct(&self.ok_lat, 0.5);
        self.p90_ms = pct(&self.ok_lat, 0.9);
        self.p99_ms = pct(&self.ok_lat, 0.99);
        self.max_ms = self.ok_lat.last().map_or(0.0, |v| *v as f64 / 1e6);
        self.rejected_p50_ms = pct(&self.rej_lat, 0.5);
        self.goodput_rps = if self.duration_s > 0.0 {
            self.ok_in_run as f64 / self.duration_s
        } else {
            0.0
        };
    }

    /// One machine-readable line in the project's benchmark format.
    pub fn summary_line(&self, config: &str) -> String {
        format!(
            "config={config} sent={} goodput_rps={:.0} rejected={} errors={} timeouts={} p50_ms={:.1} p99_ms={:.1}",
            self.sent,
            self.goodput_rps,
            self.rejected,
            self.errors,
            self.timeouts,
            self.p50_ms,
            self.p99_ms
        )
    }
}
