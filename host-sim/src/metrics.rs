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

/// Host calls made by the module, by import name, since the last reset: those made while an
/// HTTP stream's callback ran (what a request costs) apart from those of root contexts
/// (configuration, ticks, callout answers to the root).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCalls {
    /// Calls from HTTP stream callbacks, by import name.
    pub stream: std::collections::BTreeMap<&'static str, u64>,
    /// Calls from root contexts (and VM start), by import name.
    pub root: std::collections::BTreeMap<&'static str, u64>,
    /// Calls *into* the module (callbacks it exports), by export name: in Envoy each is a VM
    /// entry, and a callback the module does not export is never called.
    pub callbacks: std::collections::BTreeMap<&'static str, u64>,
    /// Wasm work done inside each callback, by export name, in wasmtime fuel units (about one
    /// per Wasm instruction executed): the guest's own CPU cost, deterministic, apart from
    /// what its host calls cost Envoy.
    pub fuel: std::collections::BTreeMap<&'static str, u64>,
}

impl HostCalls {
    pub(crate) fn count(&mut self, name: &'static str, stream: bool) {
        let map = if stream {
            &mut self.stream
        } else {
            &mut self.root
        };
        let n = map.entry(name).or_insert(0);
        *n = n.saturating_add(1);
    }

    pub(crate) fn count_callback(&mut self, name: &'static str) {
        let n = self.callbacks.entry(name).or_insert(0);
        *n = n.saturating_add(1);
    }

    pub(crate) fn add_fuel(&mut self, name: &'static str, used: u64) {
        let n = self.fuel.entry(name).or_insert(0);
        *n = n.saturating_add(used);
    }

    /// Fuel used by every callback except ticks (the work of requests).
    pub fn request_fuel(&self) -> u64 {
        self.fuel
            .iter()
            .filter(|(k, _)| !k.starts_with("proxy_on_tick"))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Every call from stream callbacks.
    pub fn stream_total(&self) -> u64 {
        self.stream.values().sum()
    }

    /// `name=count` pairs of the stream calls, sorted by name, space-separated.
    pub fn stream_summary(&self) -> String {
        self.stream
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
