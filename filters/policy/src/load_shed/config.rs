//! `load_shed` configuration: the JSON a service owner writes, and its validated form.
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "concurrency_limit_params": {
//!     "initial_concurrency_limit": 20, "min_concurrency_limit": 2,
//!     "max_concurrency_limit": 1000, "concurrency_update_interval": "100ms"
//!   },
//!   "gradient": {"sample_aggregate_percentile": 50, "buffer_percent": 25, "min_samples": 50},
//!   "criticality": {
//!     "header": "x-criticality",
//!     "header_values": {"batch": "SHEDDABLE"},
//!     "rules": [{"match": {"path": {"prefix": "/prefetch/"}}, "class": "SHEDDABLE"}],
//!     "default_class": "CRITICAL",
//!     "reserve_headroom": 1.5
//!   },
//!   "exempt": [{"path": {"exact": "/healthz"}}],
//!   "concurrency_limit_exceeded_status": 503,
//!   "response_body": "overloaded",
//!   "retry_after": "1s"
//! }
//! ```
//! Every field is optional; the values above are the defaults except `header_values`,
//! `rules`, `exempt` and `retry_after` (empty / absent by default). Names follow Envoy's
//! `adaptive_concurrency` where the concept is the same.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::criticality::{Criticality, ReserveParams};
use super::gradient::GradientParams;
use crate::duration::ConfigDuration;
use crate::invalid::{Invalid, ensure};
use crate::matcher::RequestMatch;
use crate::mode::Mode;

/// Raw JSON config (first phase: shape only).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `enforce` (default) or `dry_run`.
    pub mode: Mode,
    /// Bounds and cadence of the limit.
    pub concurrency_limit_params: RawLimitParams,
    /// How latency moves the limit.
    pub gradient: RawGradient,
    /// Request classes.
    pub criticality: RawCriticality,
    /// Requests never counted nor rejected (health checks).
    pub exempt: Vec<RequestMatch>,
    /// HTTP status of a rejection. Default 503 (values below 400 are refused).
    pub concurrency_limit_exceeded_status: Option<u16>,
    /// Body of a rejection (and `grpc-message` for gRPC). Default `overloaded`.
    pub response_body: Option<String>,
    /// `retry-after` sent with HTTP rejections, when set.
    pub retry_after: Option<ConfigDuration>,
    /// Read route metadata (`filter_metadata.meshguard.load_shed`: `on`/`off`) to exempt routes.
    pub per_route: Option<crate::per_route::PerRoute>,
}

/// `concurrency_limit_params`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimitParams {
    /// Default 20.
    pub initial_concurrency_limit: Option<u32>,
    /// Default 2.
    pub min_concurrency_limit: Option<u32>,
    /// Default 1000.
    pub max_concurrency_limit: Option<u32>,
    /// Default `100ms`.
    pub concurrency_update_interval: Option<ConfigDuration>,
}

/// `gradient`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGradient {
    /// Percentile of latency compared, 1–99. Default 50.
    pub sample_aggregate_percentile: Option<f64>,
    /// How far above the baseline latency may rise before the limit shrinks, in percent.
    /// Default 25.
    pub buffer_percent: Option<f64>,
    /// Latency samples a decision needs (older intervals are merged in at low traffic).
    /// Default 50.
    pub min_samples: Option<u32>,
}

/// A rule assigning a class.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Which requests.
    #[serde(rename = "match", default)]
    pub matches: RequestMatch,
    /// Their class.
    pub class: Criticality,
}

/// `criticality`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCriticality {
    /// Request header carrying the class. Unset: classes come from rules only.
    pub header: Option<String>,
    /// Extra header values and their classes (the four class names are always understood).
    pub header_values: BTreeMap<String, Criticality>,
    /// First matching rule wins when the header is absent or not understood.
    pub rules: Vec<RawRule>,
    /// Class of everything else. Default `CRITICAL`.
    pub default_class: Option<Criticality>,
    /// Reserve for a class = headroom × its recent peak in-flight. Default 1.5.
    pub reserve_headroom: Option<f64>,
}

/// A validated load-shed config.
#[derive(Clone, Debug)]
pub struct Config {
    /// Enforce or dry run.
    pub mode: Mode,
    /// Limit algorithm parameters.
    pub gradient: GradientParams,
    /// Update (and tick) interval.
    pub update_interval: Duration,
    /// Class reserve parameters.
    pub reserve: ReserveParams,
    /// Header carrying the class (lower-cased).
    pub criticality_header: Option<String>,
    /// Extra header values (exact, as configured).
    pub header_values: Vec<(String, Criticality)>,
    /// Class rules in order.
    pub rules: Vec<(RequestMatch, Criticality)>,
    /// Class when nothing else says.
    pub default_class: Criticality,
    /// Exempt requests.
    pub exempt: Vec<RequestMatch>,
    /// Rejection status.
    pub status: u16,
    /// Rejection body.
    pub body: String,
    /// `retry-after`.
    pub retry_after: Option<Duration>,
    /// Per-route on/off.
    pub per_route: Option<crate::per_route::PerRoute>,
}

/// Smallest update interval accepted: ticks faster than this cost more than they help.
pub const MIN_UPDATE_INTERVAL: Duration = Duration::from_millis(10);
/// Largest update interval accepted: slower than this the limit reacts too late to matter.
pub const MAX_UPDATE_INTERVAL: Duration = Duration::from_secs(10);

impl TryFrom<RawConfig> for Config {
    type Error = Invalid;

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn try_from(raw: RawConfig) -> Result<Self, Invalid> {
        let d = GradientParams::default();
        let lp = &raw.concurrency_limit_params;
        let initial = lp.initial_concurrency_limit.unwrap_or(20);
        let min = lp.min_concurrency_limit.unwrap_or(2);
        let max = lp.max_concurrency_limit.unwrap_or(1000);
        let f = "concurrency_limit_params";
        ensure(min >= 1, &format!("{f}.min_concurrency_limit"), || {
            "must be at least 1".into()
        })?;
        ensure(max >= min, &format!("{f}.max_concurrency_limit"), || {
            format!("must be at least min_concurrency_limit ({min})")
        })?;
        ensure(
            (min..=max).contains(&initial),
            &format!("{f}.initial_concurrency_limit"),
            || {
                format!(
                    "must be between min_concurrency_limit ({min}) and max_concurrency_limit ({max})"
                )
            },
        )?;
        let interval = lp
            .concurrency_update_interval
            .map_or(Duration::from_millis(100), ConfigDuration::get);
        ensure(
            (MIN_UPDATE_INTERVAL..=MAX_UPDATE_INTERVAL).contains(&interval),
            &format!("{f}.concurrency_update_interval"),
            || format!("must be between {MIN_UPDATE_INTERVAL:?} and {MAX_UPDATE_INTERVAL:?}"),
        )?;

        let g = &raw.gradient;
        let pct = g.sample_aggregate_percentile.unwrap_or(50.0);
        ensure(
            pct.is_finite() && (1.0..=99.0).contains(&pct),
            "gradient.sample_aggregate_percentile",
            || "must be between 1 and 99".into(),
        )?;
        let buffer = g.buffer_percent.unwrap_or(25.0);
        ensure(
            buffer.is_finite() && (0.0..=1000.0).contains(&buffer),
            "gradient.buffer_percent",
            || "must be between 0 and 1000".into(),
        )?;
        let min_samples = g.min_samples.unwrap_or(50);
        ensure(min_samples >= 1, "gradient.min_samples", || {
            "must be at least 1".into()
        })?;

        let c = raw.criticality;
        let headroom = c.reserve_headroom.unwrap_or(1.5);
        ensure(
            headroom.is_finite() && (1.0..=10.0).contains(&headroom),
            "criticality.reserve_headroom",
            || "must be between 1 and 10".into(),
        )?;
        let header = match c.header {
            Some(h) => {
                ensure(is_header_name(&h), "criticality.header", || {
                    format!("{h:?} is not a valid header name")
                })?;
                Some(h.to_ascii_lowercase())
            }
            None => None,
        };
        ensure(
            header.is_some() || c.header_values.is_empty(),
            "criticality.header_values",
            || "needs criticality.header".into(),
        )?;

        let status = raw.concurrency_limit_exceeded_status.unwrap_or(503);
        ensure(
            (400..=599).contains(&status),
            "concurrency_limit_exceeded_status",
            || "must be a 4xx or 5xx status".into(),
        )?;

        Ok(Self {
            mode: raw.mode,
            gradient: GradientParams {
                initial_limit: f64::from(initial),
                min_limit: f64::from(min),
                max_limit: f64::from(max),
                tolerance: 1.0 + buffer / 100.0,
                percentile: pct / 100.0,
                min_samples: u64::from(min_samples),
                ..d
            },
            update_interval: interval,
            reserve: ReserveParams {
                headroom,
                ..ReserveParams::default()
            },
            criticality_header: header,
            header_values: c.header_values.into_iter().collect(),
            rules: c.rules.into_iter().map(|r| (r.matches, r.class)).collect(),
            default_class: c.default_class.unwrap_or_default(),
            exempt: raw.exempt,
            status,
            body: raw.response_body.unwrap_or_else(|| "overloaded".into()),
            retry_after: raw.retry_after.map(ConfigDuration::get),
            per_route: raw.per_route,
        })
    }
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Config {
    /// The class of a request from its criticality header value (if any), path and method.
    pub fn classify(&self, header: Option<&[u8]>, path: &[u8], method: &[u8]) -> Criticality {
        if let Some(v) = header {
            if let Some(c) = Criticality::parse(v) {
                return c;
            }
            if let Some((_, c)) = self.header_values.iter().find(|(k, _)| k.as_bytes() == v) {
                return *c;
            }
        }
        self.rules
            .iter()
            .find(|(m, _)| m.matches(path, method))
            .map_or(self.default_class, |(_, c)| *c)
    }

    /// True when classification or exemption needs `:path`.
    pub fn needs_path(&self) -> bool {
        self.rules.iter().any(|(m, _)| m.needs_path())
            || self.exempt.iter().any(RequestMatch::needs_path)
    }

    /// True when classification or exemption needs `:method`.
    pub fn needs_method(&self) -> bool {
        self.rules.iter().any(|(m, _)| m.needs_method())
            || self.exempt.iter().any(RequestMatch::needs_method)
    }

    /// True when the request is exempt from load shedding.
    pub fn is_exempt(&self, path: &[u8], method: &[u8]) -> bool {
        self.exempt.iter().any(|m| m.matches(path, method))
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
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.gradient, GradientParams::default());
        assert_eq!(c.update_interval, Duration::from_millis(100));
        assert_eq!(c.reserve, ReserveParams::default());
        assert_eq!(
            (c.status, c.body.as_str(), c.retry_after),
            (503, "overloaded", None)
        );
        assert_eq!(c.default_class, Criticality::Critical);
        assert!(c.criticality_header.is_none() && c.rules.is_empty() && c.exempt.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"concurrency_limit_params": {"min_concurrency_limit": 0}}"#,
                "concurrency_limit_params.min_concurrency_limit: must be at least 1",
            ),
            (
                r#"{"concurrency_limit_params": {"min_concurrency_limit": 50, "max_concurrency_limit": 10}}"#,
                "concurrency_limit_params.max_concurrency_limit: must be at least min_concurrency_limit (50)",
            ),
            (
                r#"{"concurrency_limit_params": {"initial_concurrency_limit": 5000}}"#,
                "concurrency_limit_params.initial_concurrency_limit: must be between",
            ),
            (
                r#"{"concurrency_limit_params": {"concurrency_update_interval": "1ms"}}"#,
                "concurrency_limit_params.concurrency_update_interval: must be between",
            ),
            (
                r#"{"gradient": {"sample_aggregate_percentile": 100}}"#,
                "gradient.sample_aggregate_percentile",
            ),
            (
                r#"{"gradient": {"buffer_percent": -1}}"#,
                "gradient.buffer_percent",
            ),
            (
                r#"{"criticality": {"header": "bad header"}}"#,
                "criticality.header",
            ),
            (
                r#"{"criticality": {"header_values": {"x": "SHEDDABLE"}}}"#,
                "criticality.header_values: needs criticality.header",
            ),
            (
                r#"{"concurrency_limit_exceeded_status": 200}"#,
                "concurrency_limit_exceeded_status: must be a 4xx or 5xx status",
            ),
        ];
        for (json, want) in cases {
            let err = parse(json).unwrap_err();
            assert!(err.starts_with(want), "{json}: {err}");
        }
        assert!(parse(r#"{"criticality": {"default_class": "LOW"}}"#).is_err());
    }

    #[test]
    fn classification_order_is_header_then_rules_then_default() {
        let c = parse(
            r#"{"criticality": {
                "header": "X-Criticality",
                "header_values": {"batch": "SHEDDABLE"},
                "rules": [
                    {"match": {"path": {"prefix": "/prefetch/"}}, "class": "SHEDDABLE_PLUS"},
                    {"match": {"method": "DELETE"}, "class": "CRITICAL_PLUS"}
                ],
                "default_class": "CRITICAL"
            }}"#,
        )
        .unwrap();
        assert_eq!(c.criticality_header.as_deref(), Some("x-criticality"));
        use Criticality::*;
        assert_eq!(
            c.classify(Some(b"critical_plus"), b"/prefetch/a", b"GET"),
            CriticalPlus
        );
        assert_eq!(c.classify(Some(b"batch"), b"/", b"GET"), Sheddable);
        assert_eq!(
            c.classify(Some(b"unknown"), b"/prefetch/a", b"GET"),
            SheddablePlus
        );
        assert_eq!(c.classify(None, b"/x", b"DELETE"), CriticalPlus);
        assert_eq!(c.classify(None, b"/x", b"GET"), Critical);
        assert!(c.needs_path() && c.needs_method());
    }

    #[test]
    fn exemptions() {
        let c = parse(r#"{"exempt": [{"path": {"exact": "/healthz"}}]}"#).unwrap();
        assert!(c.is_exempt(b"/healthz", b"GET"));
        assert!(!c.is_exempt(b"/healthz2", b"GET"));
        assert!(c.needs_path() && !c.needs_method());
    }
}
