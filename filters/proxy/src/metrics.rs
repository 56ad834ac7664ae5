//! `meshguard.<filter>.<name>` metrics on Envoy's stats.
//!
//! Metrics are defined once per VM from the root context (`on_configure`) and the handles are
//! cheap copies the HTTP contexts use. Envoy aggregates a metric across all worker VMs. In Envoy
//! 1.40 (checked end to end) `/stats` lists it as `wasmcustom.meshguard.<filter>.<name>` and
//! `/stats/prometheus` as `meshguard_<filter>_<name>` (the internal namespace dropped). A metric
//! the host refuses to define becomes a no-op handle and one warning; metrics never fail a
//! request.

use crate::abi::{self, MetricType};

/// Defines metrics under `meshguard.<filter>.`.
#[derive(Clone, Debug)]
pub struct Metrics {
    prefix: String,
}

impl Metrics {
    /// A registry for one filter, e.g. `Metrics::new("load_shed")`.
    pub fn new(filter: &str) -> Self {
        Self {
            prefix: format!("meshguard.{filter}."),
        }
    }

    /// The full name of a metric of this filter.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn define(&self, kind: MetricType, name: &str) -> Option<u32> {
        let full = self.name(name);
        match abi::define_metric(kind, &full) {
            Ok(id) => Some(id),
            Err(status) => {
                log::warn!("meshguard: cannot define metric {full}: {status}; it will read 0");
                None
            }
        }
    }

    /// A counter (only goes up).
    pub fn counter(&self, name: &str) -> Counter {
        Counter(self.define(MetricType::Counter, name))
    }

    /// A gauge (set, or moved up and down).
    pub fn gauge(&self, name: &str) -> Gauge {
        Gauge(self.define(MetricType::Gauge, name))
    }

    /// A histogram (Envoy computes percentiles per flush interval).
    pub fn histogram(&self, name: &str) -> Histogram {
        Histogram(self.define(MetricType::Histogram, name))
    }
}

/// A counter handle; a no-op if the host refused to define it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Adds one.
    pub fn inc(self) {
        self.add(1);
    }

    /// Adds `n` (Envoy rejects a zero delta, so zero is skipped).
    pub fn add(self, n: u64) {
        if let (Some(id), Ok(delta @ 1..)) = (self.0, i64::try_from(n)) {
            let _ = abi::increment_metric(id, delta);
        }
    }

    /// The process-wide value (all workers).
    pub fn get(self) -> u64 {
        self.0.and_then(|id| abi::get_metric(id).ok()).unwrap_or(0)
    }
}

/// A gauge handle; a no-op if the host refused to define it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauge(Option<u32>);

impl Gauge {
    /// Sets the value.
    pub fn set(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = abi::record_metric(id, value);
        }
    }

    /// Moves the value by `delta` (may be negative).
    pub fn add(self, delta: i64) {
        if let Some(id) = self.0
            && delta != 0
        {
            let _ = abi::increment_metric(id, delta);
        }
    }

    /// The process-wide value.
    pub fn get(self) -> u64 {
        self.0.and_then(|id| abi::get_metric(id).ok()).unwrap_or(0)
    }
}

/// A histogram handle; a no-op if the host refused to define it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Histogram(Option<u32>);

impl Histogram {
    /// Records one sample.
    pub fn record(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = abi::record_metric(id, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed() {
        assert_eq!(
            Metrics::new("load_shed").name("rejected"),
            "meshguard.load_shed.rejected"
        );
    }

    #[test]
    fn undefined_handles_are_no_ops() {
        // Natively there is no host: definition fails and handles read 0 without panicking.
        let m = Metrics::new("x");
        let c = m.counter("c");
        c.inc();
        assert_eq!(c.get(), 0);
        m.gauge("g").set(3);
        m.histogram("h").record(3);
    }
}
