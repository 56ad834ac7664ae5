//! Envoy's stats for Wasm metrics: one store for the whole simulated Envoy, keyed by name, so
//! every worker VM that defines `x` updates the same counter (Envoy aggregates across workers
//! because all of them use the plugin's stats scope).
//!
//! Rules (Envoy `context.cc`): names get the `wasmcustom.` namespace (stripped from `/stats`
//! output); counter increments must be > 0; `record` on a counter *adds*; gauges accept negative
//! increments; histograms can be recorded but not read (`get_metric` is BAD_ARGUMENT).

use std::collections::BTreeMap;

use crate::abi::MetricType;

/// The namespace Envoy puts in front of every Wasm metric name.
pub const CUSTOM_STAT_NAMESPACE: &str = "wasmcustom";

/// One metric's value.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetricValue {
    /// A counter.
    Counter {
        /// Value.
        value: u64,
    },
    /// A gauge (Envoy gauges are unsigned; a negative total wraps like Envoy's would).
    Gauge {
        /// Value.
        value: u64,
    },
    /// A histogram: every recorded sample, in order.
    Histogram {
        /// Samples.
        samples: Vec<u64>,
    },
}

/// All metrics of one simulated Envoy, by name (without the namespace).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    by_name: BTreeMap<String, MetricValue>,
}

impl Metrics {
    pub(crate) fn define(&mut self, kind: MetricType, name: &str) {
        self.by_name
            .entry(name.to_string())
            .or_insert_with(|| match kind {
                MetricType::Counter => MetricValue::Counter { value: 0 },
                MetricType::Gauge => MetricValue::Gauge { value: 0 },
                MetricType::Histogram => MetricValue::Histogram {
                    samples: Vec::new(),
                },
            });
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut MetricValue> {
        self.by_name.get_mut(name)
    }

    /// A metric by name; the `wasmcustom.` prefix is optional.
    pub fn get(&self, name: &str) -> Option<&MetricValue> {
        let name = strip_namespace(name);
        self.by_name.get(name)
    }

    /// Counter value (0 when the counter was never defined).
    pub fn counter(&self, name: &str) -> u64 {
        match self.get(name) {
            Some(MetricValue::Counter { value }) => *value,
            _ => 0,
        }
    }

    /// Gauge value as Envoy stores it (unsigned).
    pub fn gauge(&self, name: &str) -> u64 {
        match self.get(name) {
            Some(MetricValue::Gauge { value }) => *value,
            _ => 0,
        }
    }

    /// Histogram samples (empty when never defined).
    pub fn histogram(&self, name: &str) -> &[u64] {
        match self.get(name) {
            Some(MetricValue::Histogram { samples }) => samples,
            _ => &[],
        }
    }

    /// Every metric, by name (sorted).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetricValue)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }
}

fn strip_namespace(name: &str) -> &str {
    name.strip_prefix(CUSTOM_STAT_NAMESPACE)
        .and_then(|n| n.strip_prefix('.'))
        .unwrap_or(name)
}
