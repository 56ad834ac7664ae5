//! The upstream model: `capacity` servers behind one FIFO queue, a latency distribution, and
//! failures by rate or in time windows.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use crate::clock::ns;
use crate::rng::Rng;
use crate::upstream::{UpstreamAction, UpstreamReply, UpstreamRequest};

/// Service-time distribution.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// Always the same.
    Fixed(#[serde(with = "crate::scenario::duration_serde")] Duration),
    /// Log-normal with the given median and sigma (of the underlying normal).
    LogNormal {
        /// Median.
        #[serde(with = "crate::scenario::duration_serde")]
        median: Duration,
        /// Shape (0.5 is a moderately long tail).
        sigma: f64,
    },
}

/// How a failing upstream fails.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Answers this HTTP status after the service time.
    Status(u16),
    /// Resets the stream immediately (Envoy answers 503, flag UR).
    Reset,
    /// Refuses connections (Envoy answers 503, flag UF).
    ConnectFailure,
}

/// A time window `[from, to)` since the run's start.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailureWindow {
    /// Start.
    #[serde(with = "crate::scenario::duration_serde")]
    pub from: Duration,
    /// End (exclusive).
    #[serde(with = "crate::scenario::duration_serde")]
    pub to: Duration,
}

/// Upstream model parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UpstreamModel {
    /// Requests served concurrently.
    pub capacity: usize,
    /// Maximum waiting requests (None = unbounded); beyond it the upstream answers 503 at once.
    pub queue_limit: Option<usize>,
    /// Service time.
    pub latency: Latency,
    /// Probability that a request fails.
    pub failure_rate: f64,
    /// Time windows (since the run's start) in which every request fails.
    pub failure_windows: Vec<FailureWindow>,
    /// How failures look.
    pub failure: FailureMode,
    /// Per-class latency multipliers by request header value: `(header, value, factor)`.
    pub class_latency: Vec<(String, String, f64)>,
    /// For gRPC requests (content-type application/grpc), answer with gRPC framing.
    pub grpc: bool,
}

impl Default for UpstreamModel {
    fn default() -> Self {
        Self {
            capacity: 100,
            queue_limit: None,
            latency: Latency::Fixed(Duration::from_millis(10)),
            failure_rate: 0.0,
            failure_windows: Vec::new(),
            failure: FailureMode::Status(503),
            class_latency: Vec::new(),
            grpc: false,
        }
    }
}

/// Runtime state of the model.
pub(crate) struct State {
    spec: UpstreamModel,
    rng: Rng,
    free_at: BinaryHeap<Reverse<u64>>,
    waiting: VecDeque<u64>,
    pub served: u64,
    start: Option<u64>,
}

impl State {
    pub fn new(spec: UpstreamModel, rng: Rng) -> Self {
        let cap = spec.capacity.max(1);
        Self {
            spec,
            rng,
            free_at: (0..cap).map(|_| Reverse(0)).collect(),
            waiting: VecDeque::new(),
            served: 0,
            start: None,
        }
    }

    fn service(&mut self, req: &UpstreamRequest<'_>) -> u64 {
        let base = match &self.spec.latency {
            Latency::Fixed(d) => ns(*d) as f64,
            Latency::LogNormal { median, sigma } => {
                ns(*median) as f64 * (sigma * self.rng.normal()).exp()
            }
        };
        let factor = self
            .spec
            .class_latency
            .iter()
            .find(|(h, v, _)| req.headers.get(h) == Some(v.as_str()))
            .map_or(1.0, |(_, _, f)| *f);
        (base * factor).max(0.0) as u64
    }

    /// Requests waiting for a server at `now`.
    pub fn queued(&mut self, now: u64) -> usize {
        while self.waiting.front().is_some_and(|s| *s <= now) {
            self.waiting.pop_front();
        }
        self.waiting.len()
    }

    pub fn on_request(&mut self, req: &UpstreamRequest<'_>, now: Duration) -> UpstreamAction {
        let now = ns(now);
        let start = *self.start.get_or_insert(now);
        let rel = Duration::from_nanos(now - start);
        let in_window = self
            .spec
            .failure_windows
            .iter()
            .any(|w| w.from <= rel && rel < w.to);
        let fails = in_window
            || (self.spec.failure_rate > 0.0 && self.rng.next_f64() < self.spec.failure_rate);
        if fails {
            match self.spec.failure {
                FailureMode::Reset => {
                    return UpstreamAction::Respond {
                        after: Duration::ZERO,
                        reply: UpstreamReply::Reset,
                    };
                }
                FailureMode::ConnectFailure => {
                    return UpstreamAction::Respond {
                        after: Duration::ZERO,
                        reply: UpstreamReply::ConnectFailure,
                    };
                }
                FailureMode::Status(_) => {}
            }
        }
        if let Some(limit) = self.spec.queue_limit
            && self.queued(now) >= limit
            && self.free_at.peek().is_some_and(|Reverse(t)| *t > now)
        {
            return UpstreamAction::Respond {
                after: Duration::ZERO,
                reply: UpstreamReply::status(503, "overloaded"),
            };
        }
        let service = self.service(req);
        let Reverse(free) = self.free_at.pop().unwrap_or(Reverse(now));
        let begin = free.max(now);
        let end = begin.saturating_add(service);
        self.free_at.push(Reverse(end));
        if begin > now {
            self.waiting.push_back(begin);
        }
        self.served += 1;
        let grpc = self.spec.grpc
            && req
                .headers
                .get("content-type")
                .is_some_and(|c| c.starts_with("application/grpc"));
        let reply = match (fails, &self.spec.failure, grpc) {
            (true, FailureMode::Status(code), false) => {
                UpstreamReply::status(*code, "upstream failure")
            }
            (true, FailureMode::Status(_), true) => UpstreamReply::grpc(14, Vec::new()),
            (_, _, true) => UpstreamReply::grpc(0, b"ok".to_vec()),
            _ => UpstreamReply::status(200, "ok"),
        };
        UpstreamAction::Respond {
            after: Duration::from_nanos(end - now),
            reply,
        }
    }
}
