//! `circuit_breaker` configuration: the JSON a service owner writes, and its validated form.
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "key": {"header": ":authority", "max_keys": 100},
//!   "failure": {
//!     "http_statuses": [{"start": 500, "end": 599}],
//!     "grpc_statuses": ["UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "DATA_LOSS"],
//!     "no_response": true,
//!     "slow_call_duration": "2s"
//!   },
//!   "trip": {
//!     "consecutive_failures": 5,
//!     "failure_rate": {"threshold_percent": 50, "minimum_calls": 100, "window": {"calls": 100}},
//!     "slow_call_rate": {"threshold_percent": 100, "minimum_calls": 100, "window": {"duration": "10s"}}
//!   },
//!   "open": {"base_duration": "5s", "max_duration": "60s", "jitter_percent": 10},
//!   "half_open": {"permitted_calls": 3},
//!   "max_requests": 1000,
//!   "evaluation_interval": "100ms",
//!   "status": 503,
//!   "response_body": "upstream unavailable: circuit open",
//!   "cluster_header": "x-meshguard-sandbox-cluster"
//! }
//! ```
//! Every field is optional. Defaults: no extra key (one breaker per cluster), failures = 5xx,
//! the five gRPC statuses above and no response; trip on 5 consecutive failures only (the rate
//! conditions are off unless given, with resilience4j's 50 % / 100 calls when given without
//! values); open 5 s doubling up to 60 s ± 10 %; 3 probes; no `max_requests`; 503.

use core::time::Duration;

use serde::Deserialize;

use super::outcome::Classifier;
use super::state::Params;
use crate::duration::ConfigDuration;
use crate::grpc::GrpcStatus;
use crate::invalid::{Invalid, ensure};
use crate::mode::Mode;

/// Raw JSON (first phase).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `enforce` or `dry_run`.
    pub mode: Mode,
    /// Key breakers further by a request header.
    pub key: Option<RawKey>,
    /// What counts as a failure.
    pub failure: RawFailure,
    /// When to open.
    pub trip: RawTrip,
    /// How long to stay open.
    pub open: RawOpen,
    /// Probing.
    pub half_open: RawHalfOpen,
    /// Concurrent calls allowed per breaker.
    pub max_requests: Option<u32>,
    /// How often workers merge their window counts. Default `100ms`.
    pub evaluation_interval: Option<ConfigDuration>,
    /// Rejection status. Default 503.
    pub status: Option<u16>,
    /// Rejection body (and `grpc-message`).
    pub response_body: Option<String>,
    /// Read route metadata (`filter_metadata.meshguard.circuit_breaker`: `on`/`off`) to turn the
    /// breaker on or off per route (e.g. `{"default": "off"}` and `on` on one dependency's route).
    pub per_route: Option<crate::per_route::PerRoute>,
    /// A request header that, when present, names the cluster the request goes to instead of
    /// the route's `xds.cluster_name` — the sandbox router's routing header
    /// (`x-meshguard-sandbox-cluster`) when it runs earlier in the chain: after it reroutes,
    /// Envoy 1.40 still answers `xds.cluster_name` with the old route's cluster until the
    /// router runs. Only set it where client copies of the header are removed (the sandbox
    /// router's default, or the listener's `request_headers_to_remove`).
    pub cluster_header: Option<String>,
}

/// `key`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Request header whose value keys the breaker (with the cluster).
    pub header: String,
    /// Distinct values tracked per cluster; the rest share one breaker. Default 100.
    pub max_keys: Option<u32>,
}

/// An inclusive status range.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRange {
    /// First status.
    pub start: u16,
    /// Last status.
    pub end: u16,
}

/// `failure`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFailure {
    /// HTTP status ranges that are failures.
    pub http_statuses: Option<Vec<RawRange>>,
    /// gRPC status names that are failures (from headers or trailers).
    pub grpc_statuses: Option<Vec<String>>,
    /// A call without a response is a failure.
    pub no_response: Option<bool>,
    /// Calls longer than this are slow.
    pub slow_call_duration: Option<ConfigDuration>,
}

/// A rate condition.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRate {
    /// Trip when the rate reaches this percentage. Default 50 (failure) / 100 (slow).
    pub threshold_percent: Option<f64>,
    /// Calls the window needs before the rate counts. Default 100.
    pub minimum_calls: Option<u32>,
    /// The window. Default the last 100 calls.
    pub window: Option<RawWindow>,
}

/// `{"calls": N}` or `{"duration": "10s"}`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawWindow {
    /// The last N calls.
    Calls(u32),
    /// The last period.
    Duration(ConfigDuration),
}

/// `trip`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrip {
    /// Failures in a row; 0 disables. Default 5.
    pub consecutive_failures: Option<u32>,
    /// Failure rate condition.
    pub failure_rate: Option<RawRate>,
    /// Slow-call rate condition.
    pub slow_call_rate: Option<RawRate>,
}

/// `open`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOpen {
    /// First open period. Default `5s`.
    pub base_duration: Option<ConfigDuration>,
    /// Longest open period. Default `60s`.
    pub max_duration: Option<ConfigDuration>,
    /// ± jitter in percent. Default 10.
    pub jitter_percent: Option<f64>,
}

/// `half_open`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHalfOpen {
    /// Probe calls; that many successes close. Default 3.
    pub permitted_calls: Option<u32>,
}

/// A validated rate condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Threshold as a fraction in (0, 1].
    pub threshold: f64,
    /// Minimum calls in the window.
    pub minimum_calls: u32,
    /// Window span.
    pub span: super::window::Span,
}

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// Enforce or dry run.
    pub mode: Mode,
    /// Header keying breakers further, lower-cased.
    pub key_header: Option<String>,
    /// Distinct header values per cluster.
    pub max_keys: u32,
    /// Outcome classification.
    pub classifier: Classifier,
    /// Slow-call threshold (ns).
    pub slow_call_ns: Option<u64>,
    /// Failure-rate condition.
    pub failure_rate: Option<Rate>,
    /// Slow-call-rate condition.
    pub slow_call_rate: Option<Rate>,
    /// State-machine parameters.
    pub params: Params,
    /// Window merge interval.
    pub evaluation_interval: Duration,
    /// Rejection status.
    pub status: u16,
    /// Rejection body.
    pub body: String,
    /// Per-route on/off.
    pub per_route: Option<crate::per_route::PerRoute>,
    /// Header naming the cluster when present, lower-cased.
    pub cluster_header: Option<String>,
}

impl Config {
    /// Width of one window bucket (ns): a tenth of a time window, else the evaluation interval.
    pub fn bucket_ns(&self, rate: &Rate) -> u64 {
        let tick = u64::try_from(self.evaluation_interval.as_nanos()).unwrap_or(u64::MAX);
        match rate.span {
            super::window::Span::Duration(d) => (d / 10).max(tick),
            super::window::Span::Calls(_) => tick,
        }
    }
}

fn grpc_from_name(name: &str) -> Option<GrpcStatus> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let i = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name))?;
    GrpcStatus::ALL.get(i).copied()
}

fn rate(raw: &RawRate, field: &str, default_threshold: f64) -> Result<Rate, Invalid> {
    let threshold = raw.threshold_percent.unwrap_or(default_threshold);
    ensure(
        threshold.is_finite() && threshold > 0.0 && threshold <= 100.0,
        &format!("{field}.threshold_percent"),
        || "must be in (0, 100]".into(),
    )?;
    let minimum_calls = raw.minimum_calls.unwrap_or(100);
    ensure(
        minimum_calls >= 1,
        &format!("{field}.minimum_calls"),
        || "must be at least 1".into(),
    )?;
    let span = match raw.window.unwrap_or(RawWindow::Calls(100)) {
        RawWindow::Calls(n) => {
            ensure(
                (1..=1_000_000).contains(&n),
                &format!("{field}.window.calls"),
                || "must be between 1 and 1000000".into(),
            )?;
            super::window::Span::Calls(n)
        }
        RawWindow::Duration(d) => {
            ensure(
                (Duration::from_secs(1)..=Duration::from_secs(600)).contains(&d.get()),
                &format!("{field}.window.duration"),
                || "must be between 1s and 10m".into(),
            )?;
            super::window::Span::Duration(d.as_nanos_u64())
        }
    };
    Ok(Rate {
        threshold: threshold / 100.0,
        minimum_calls,
        span,
    })
}

impl TryFrom<RawConfig> for Config {
    type Error = Invalid;

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn try_from(raw: RawConfig) -> Result<Self, Invalid> {
        let mut classifier = Classifier::default();
        if let Some(ranges) = &raw.failure.http_statuses {
            for (i, r) in ranges.iter().enumerate() {
                ensure(
                    r.start <= r.end && (100..=599).contains(&r.start) && r.end <= 599,
                    &format!("failure.http_statuses[{i}]"),
                    || "needs 100 <= start <= end <= 599".into(),
                )?;
            }
            classifier.http_failures = ranges.iter().map(|r| (r.start, r.end)).collect();
        }
        if let Some(names) = &raw.failure.grpc_statuses {
            let mut codes = Vec::new();
            for (i, n) in names.iter().enumerate() {
                match grpc_from_name(n) {
                    Some(c) => codes.push(c),
                    None => {
                        return Err(Invalid::new(
                            format!("failure.grpc_statuses[{i}]"),
                            format!("unknown gRPC status {n:?}"),
                        ));
                    }
                }
            }
            classifier.grpc_failures = codes;
        }
        classifier.no_response_is_failure = raw.failure.no_response.unwrap_or(true);
        let slow_call_ns = raw
            .failure
            .slow_call_duration
            .map(ConfigDuration::as_nanos_u64);
        ensure(
            slow_call_ns != Some(0),
            "failure.slow_call_duration",
            || "must be positive".into(),
        )?;

        let failure_rate = raw
            .trip
            .failure_rate
            .as_ref()
            .map(|r| rate(r, "trip.failure_rate", 50.0))
            .transpose()?;
        let slow_call_rate = raw
            .trip
            .slow_call_rate
            .as_ref()
            .map(|r| rate(r, "trip.slow_call_rate", 100.0))
            .transpose()?;
        ensure(
            slow_call_rate.is_none() || slow_call_ns.is_some(),
            "trip.slow_call_rate",
            || "needs failure.slow_call_duration".into(),
        )?;
        let consecutive = raw.trip.consecutive_failures.unwrap_or(5);
        ensure(
            consecutive > 0 || failure_rate.is_some() || slow_call_rate.is_some(),
            "trip",
            || {
                "every trip condition is off: set consecutive_failures, failure_rate or slow_call_rate".into()
            },
        )?;

        let d = Params::default();
        let base = raw
            .open
            .base_duration
            .map_or(d.base_wait_ns, ConfigDuration::as_nanos_u64);
        let max = raw
            .open
            .max_duration
            .map_or(d.max_wait_ns.max(base), ConfigDuration::as_nanos_u64);
        ensure(base >= 1_000_000, "open.base_duration", || {
            "must be at least 1ms".into()
        })?;
        ensure(max >= base, "open.max_duration", || {
            "must be at least open.base_duration".into()
        })?;
        let jitter = raw.open.jitter_percent.unwrap_or(10.0);
        ensure(
            jitter.is_finite() && (0.0..100.0).contains(&jitter),
            "open.jitter_percent",
            || "must be in [0, 100)".into(),
        )?;
        let probes = raw.half_open.permitted_calls.unwrap_or(3);
        ensure(
            (1..=1000).contains(&probes),
            "half_open.permitted_calls",
            || "must be between 1 and 1000".into(),
        )?;
        ensure(raw.max_requests != Some(0), "max_requests", || {
            "must be at least 1".into()
        })?;
        let interval = raw
            .evaluation_interval
            .map_or(Duration::from_millis(100), ConfigDuration::get);
        ensure(
            (Duration::from_millis(10)..=Duration::from_secs(10)).contains(&interval),
            "evaluation_interval",
            || "must be between 10ms and 10s".into(),
        )?;
        let status = raw.status.unwrap_or(503);
        ensure((400..=599).contains(&status), "status", || {
            "must be a 4xx or 5xx status".into()
        })?;
        let (key_header, max_keys) = match raw.key {
            Some(k) => {
                let h = k.header.to_ascii_lowercase();
                ensure(
                    !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()),
                    "key.header",
                    || format!("{:?} is not a header name", k.header),
                )?;
                let m = k.max_keys.unwrap_or(100);
                ensure((1..=10_000).contains(&m), "key.max_keys", || {
                    "must be between 1 and 10000".into()
                })?;
                (Some(h), m)
            }
            None => (None, 0),
        };
        let cluster_header = match raw.cluster_header {
            Some(h) => {
                let lower = h.to_ascii_lowercase();
                ensure(
                    !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_graphic()),
                    "cluster_header",
                    || format!("{h:?} is not a header name"),
                )?;
                Some(lower)
            }
            None => None,
        };
        Ok(Self {
            mode: raw.mode,
            cluster_header,
            key_header,
            max_keys,
            classifier,
            slow_call_ns,
            failure_rate,
            slow_call_rate,
            params: Params {
                consecutive_failures: (consecutive > 0).then_some(consecutive),
                base_wait_ns: base,
                max_wait_ns: max,
                jitter: jitter / 100.0,
                permitted_probes: probes,
                max_requests: raw.max_requests,
            },
            evaluation_interval: interval,
            status,
            per_route: raw.per_route,
            body: raw
                .response_body
                .unwrap_or_else(|| "upstream unavailable: circuit open".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn parse(json: &str) -> Result<Config, String> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Config::try_from(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.params.consecutive_failures, Some(5));
        assert_eq!(
            c.params,
            Params {
                consecutive_failures: Some(5),
                ..Params::default()
            }
        );
        assert_eq!(c.classifier, Classifier::default());
        assert!(c.failure_rate.is_none() && c.slow_call_rate.is_none() && c.key_header.is_none());
        assert_eq!(c.cluster_header, None);
        let c = parse(r#"{"cluster_header": "X-Meshguard-Sandbox-Cluster"}"#).unwrap();
        assert_eq!(
            c.cluster_header.as_deref(),
            Some("x-meshguard-sandbox-cluster")
        );
        assert_eq!(
            (c.status, c.evaluation_interval),
            (503, Duration::from_millis(100))
        );
        // A rate condition given without values takes resilience4j's defaults.
        let c = parse(r#"{"trip": {"failure_rate": {}}}"#).unwrap();
        assert_eq!(
            c.failure_rate,
            Some(Rate {
                threshold: 0.5,
                minimum_calls: 100,
                span: super::super::window::Span::Calls(100)
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"failure": {"http_statuses": [{"start": 600, "end": 700}]}}"#,
                "failure.http_statuses[0]",
            ),
            (
                r#"{"failure": {"grpc_statuses": ["UNAVAILABLE", "BROKEN"]}}"#,
                "failure.grpc_statuses[1]: unknown gRPC status \"BROKEN\"",
            ),
            (
                r#"{"trip": {"failure_rate": {"threshold_percent": 0}}}"#,
                "trip.failure_rate.threshold_percent",
            ),
            (
                r#"{"trip": {"slow_call_rate": {}}}"#,
                "trip.slow_call_rate: needs failure.slow_call_duration",
            ),
            (
                r#"{"trip": {"consecutive_failures": 0}}"#,
                "trip: every trip condition is off",
            ),
            (
                r#"{"open": {"base_duration": "10s", "max_duration": "5s"}}"#,
                "open.max_duration",
            ),
            (
                r#"{"half_open": {"permitted_calls": 0}}"#,
                "half_open.permitted_calls",
            ),
            (
                r#"{"trip": {"failure_rate": {"window": {"duration": "100ms"}}}}"#,
                "trip.failure_rate.window.duration",
            ),
            (r#"{"status": 200}"#, "status"),
            (r#"{"cluster_header": "bad header"}"#, "cluster_header"),
        ];
        for (json, want) in cases {
            let e = parse(json).unwrap_err();
            assert!(e.starts_with(want), "{json}: {e}");
        }
        assert!(
            parse(r#"{"trip": {"failure_rate": {"window": {"calls": 10, "duration": "1s"}}}}"#)
                .is_err()
        );
    }

    #[test]
    fn grpc_names_are_case_insensitive() {
        let c = parse(r#"{"failure": {"grpc_statuses": ["resource_exhausted"]}}"#).unwrap();
        assert_eq!(
            c.classifier.grpc_failures,
            vec![GrpcStatus::ResourceExhausted]
        );
    }
}
