//! Upstream-wide knobs: latency (service time), capacity (workers + FIFO queue) and injected
//! failures. Per-request knobs travel in request headers instead (see [`crate::knob`]).
//!
//! The JSON form is what `--config` and `PUT /_upstream/config` accept; every field has a
//! default and the defaults together mean "plain fast echo":
//!
//! ```json
//! {
//!   "seed": 7,
//!   "latency": { "lognormal": { "median_ms": 20.0, "sigma": 0.25 } },
//!   "capacity": { "concurrency": 20, "queue": "unbounded" },
//!   "failure": {
//!     "rate": 0.1,
//!     "kind": { "status": 503 },
//!     "windows": [ { "from_ms": 1000, "to_ms": 2000, "kind": "reset" } ]
//!   }
//! }
//! ```
//!
//! `latency` is `"none"`, `{"fixed":{"ms":N}}` or `{"lognormal":{"median_ms":M,"sigma":S}}`;
//! `queue` is `"unbounded"` or `{"bounded":M}`; a failure `kind` is `{"status":CODE}`, `"reset"`
//! or `{"grpc":CODE}`.

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

/// Largest latency, delay or window bound accepted (one hour): keeps `Instant + Duration`
/// arithmetic far from overflow and catches seconds-vs-milliseconds mistakes.
pub const MAX_MS: u64 = 3_600_000;

/// Largest `capacity.concurrency` accepted (tokio's `Semaphore::MAX_PERMITS` is far larger; a
/// test upstream with more workers than this is a typo).
pub const MAX_CONCURRENCY: usize = 1 << 20;

/// Runtime knobs of an [`crate::Upstream`]. `Default` is a plain fast echo: no latency, no
/// capacity limit, no failures, seed 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Seed of every random draw (lognormal latency, failure rate). Two upstreams with the
    /// same config see the same sequence of draws, one draw of each kind per request.
    pub seed: u64,
    /// Service time of each request, counted from the moment it gets a worker slot.
    pub latency: Latency,
    /// Worker slots and the FIFO queue in front of them; `None` = unlimited.
    pub capacity: Option<Capacity>,
    /// Injected failures; `None` = never fail.
    pub failure: Option<Failure>,
}

/// Service-time model. Sleeps use tokio's timer, which has millisecond granularity and rounds
/// deadlines up: a service time lasts on average about 0.5 ms longer than drawn (≈ 2.5% at a
/// 20 ms median), never shorter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Answer as soon as the request body is read.
    #[default]
    None,
    /// Always `ms` milliseconds.
    Fixed {
        /// Service time in milliseconds.
        ms: u64,
    },
    /// Lognormal with the given median (`exp(mu)`) and shape `sigma`, drawn from the seeded RNG.
    Lognormal {
        /// Median service time in milliseconds (> 0).
        median_ms: f64,
        /// Shape parameter (standard deviation of the underlying normal), >= 0.
        sigma: f64,
    },
}

/// At most `concurrency` requests are in service; the rest wait in a strict FIFO queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Number of worker slots (>= 1).
    pub concurrency: usize,
    /// Waiting room in front of the slots.
    #[serde(default)]
    pub queue: Queue,
}

/// Queue in front of the worker slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    /// Every request waits for a slot.
    #[default]
    Unbounded,
    /// At most this many requests wait; one more is answered `503` with
    /// `x-upstream-queue-full: 1` at once. `0` = reject whenever all slots are busy.
    Bounded(usize),
}

/// Injected failures: random (seeded) with probability `rate`, and always inside `windows`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Failure {
    /// Probability in `[0, 1]` that a request fails with `kind`.
    pub rate: f64,
    /// How a randomly chosen request fails. Default `{"status":503}`.
    pub kind: FailureKind,
    /// Periods, in milliseconds since start or since the last `set_config`, during which every
    /// request fails with the window's kind. The first matching window wins.
    pub windows: Vec<FailureWindow>,
}

impl Default for Failure {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kind: FailureKind::Status(503),
            windows: Vec::new(),
        }
    }
}

/// How an injected failure looks on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Answer with this HTTP status (body `injected failure\n`, header
    /// `x-upstream-failure: injected`).
    Status(u16),
    /// Reset before response headers (HTTP/1.1: close the connection; h2: `RST_STREAM`).
    Reset,
    /// Answer HTTP 200, `content-type: application/grpc`, no message, then trailers with this
    /// `grpc-status` (also for non-gRPC requests).
    Grpc(u32),
}

/// A period during which every request fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureWindow {
    /// Start (inclusive), ms since start or the last `set_config`.
    pub from_ms: u64,
    /// End (exclusive).
    pub to_ms: u64,
    /// How requests fail inside the window.
    pub kind: FailureKind,
}

// === impl UpstreamConfig ===

impl UpstreamConfig {
    /// Parses and validates the JSON form.
    ///
    /// # Errors
    ///
    /// Malformed JSON, unknown fields, or values [`UpstreamConfig::validate`] rejects.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let config: Self = serde_json::from_str(text).context("invalid upstream config JSON")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every bound documented on the fields.
    ///
    /// # Errors
    ///
    /// Names the first field out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.latency {
            Latency::None => {}
            Latency::Fixed { ms } => ensure!(ms <= MAX_MS, "latency.fixed.ms must be <= {MAX_MS}"),
            Latency::Lognormal { median_ms, sigma } => {
                ensure!(
                    median_ms.is_finite() && median_ms > 0.0 && median_ms <= ms_f64(MAX_MS),
                    "latency.lognormal.median_ms must be in (0, {MAX_MS}]"
                );
                ensure!(
                    sigma.is_finite() && (0.0..=10.0).contains(&sigma),
                    "latency.lognormal.sigma must be in [0, 10]"
                );
            }
        }
        if let Some(capacity) = &self.capacity {
            ensure!(
                (1..=MAX_CONCURRENCY).contains(&capacity.concurrency),
                "capacity.concurrency must be in [1, {MAX_CONCURRENCY}]"
            );
        }
        if let Some(failure) = &self.failure {
            ensure!(
                failure.rate.is_finite() && (0.0..=1.0).contains(&failure.rate),
                "failure.rate must be in [0, 1]"
            );
            failure.kind.validate().context("failure.kind")?;
            for (i, window) in failure.windows.iter().enumerate() {
                ensure!(
                    window.from_ms <= window.to_ms && window.to_ms <= MAX_MS,
                    "failure.windows[{i}]: need from_ms <= to_ms <= {MAX_MS}"
                );
                window
                    .kind
                    .validate()
                    .with_context(|| format!("failure.windows[{i}].kind"))?;
            }
        }
        Ok(())
    }
}

impl FailureKind {
    fn validate(self) -> anyhow::Result<()> {
        match self {
            Self::Status(code) => {
                ensure!((200..=599).contains(&code), "status must be in [200, 599]")
            }
            Self::Reset => {}
            Self::Grpc(code) => {
                if !(1..=16).contains(&code) {
                    bail!("grpc status must be a non-OK code in [1, 16]");
                }
            }
        }
        Ok(())
    }
}

/// Exact for every value up to `MAX_MS` (< 2^53).
fn ms_f64(ms: u64) -> f64 {
    // u32 -> f64 is lossless; MAX_MS fits in u32.
    f64::from(u32::try_from(ms).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_plain_echo() {
        let config = UpstreamConfig::default();
        assert_eq!(config.seed, 0);
        assert_eq!(config.latency, Latency::None);
        assert_eq!(config.capacity, None);
        assert_eq!(config.failure, None);
        assert_eq!(UpstreamConfig::from_json("{}").unwrap(), config);
        let failure = Failure::default();
        assert_eq!(failure.rate, 0.0);
        assert_eq!(failure.kind, FailureKind::Status(503));
        assert!(failure.windows.is_empty());
    }

    #[test]
    fn parses_every_variant() {
        let config = UpstreamConfig::from_json(
            r#"{"seed":7,
                "latency":{"lognormal":{"median_ms":20,"sigma":0.25}},
                "capacity":{"concurrency":20,"queue":{"bounded":5}},
                "failure":{"rate":0.5,"kind":"reset",
                           "windows":[{"from_ms":10,"to_ms":20,"kind":{"grpc":14}}]}}"#,
        )
        .unwrap();
        assert_eq!(config.seed, 7);
        assert_eq!(
            config.latency,
            Latency::Lognormal {
                median_ms: 20.0,
                sigma: 0.25
            }
        );
        let capacity = config.capacity.clone().unwrap();
        assert_eq!(capacity.concurrency, 20);
        assert_eq!(capacity.queue, Queue::Bounded(5));
        let failure = config.failure.clone().unwrap();
        assert_eq!(failure.kind, FailureKind::Reset);
        assert_eq!(failure.windows[0].kind, FailureKind::Grpc(14));
        // Round trip through the JSON form.
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(UpstreamConfig::from_json(&text).unwrap(), config);

        let fixed = UpstreamConfig::from_json(
            r#"{"latency":{"fixed":{"ms":100}},"capacity":{"concurrency":2}}"#,
        )
        .unwrap();
        assert_eq!(fixed.latency, Latency::Fixed { ms: 100 });
        assert_eq!(fixed.capacity.unwrap().queue, Queue::Unbounded);
        let none = UpstreamConfig::from_json(r#"{"latency":"none"}"#).unwrap();
        assert_eq!(none.latency, Latency::None);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        for bad in [
            r#"{"latancy":"none"}"#,
            r#"{"latency":{"fixed":{"ms":1,"extra":2}}}"#,
            r#"{"capacity":{"concurrency":1,"queue":"unbounded","x":1}}"#,
            r#"{"failure":{"rate":0.1,"typo":1}}"#,
            r#"{"latency":{"fixed":{"ms":3600001}}}"#,
            r#"{"latency":{"lognormal":{"median_ms":0,"sigma":0.2}}}"#,
            r#"{"latency":{"lognormal":{"median_ms":5,"sigma":-1}}}"#,
            r#"{"capacity":{"concurrency":0}}"#,
            r#"{"failure":{"rate":1.5}}"#,
            r#"{"failure":{"rate":0.1,"kind":{"status":99}}}"#,
            r#"{"failure":{"rate":0.1,"kind":{"grpc":0}}}"#,
            r#"{"failure":{"windows":[{"from_ms":5,"to_ms":1,"kind":"reset"}]}}"#,
        ] {
            assert!(UpstreamConfig::from_json(bad).is_err(), "accepted {bad}");
        }
    }
}
