//! Metrics with Envoy's rules, aggregated across workers.

use host_sim::MetricValue;

use crate::support::*;

#[test]
fn metric_statuses_follow_envoy() -> Result {
    let mut envoy = probe()?.build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("metrics"), true)?;
    let line = probe_line(&envoy, "metrics").unwrap();
    assert_eq!(
        field(&line, "ids").as_deref(),
        Some("4/5/6"),
        "type in the low 2 bits, step 4"
    );
    assert_eq!(field(&line, "inc").as_deref(), Some("0"));
    assert_eq!(
        field(&line, "neg").as_deref(),
        Some("2"),
        "counter delta < 0: BAD_ARGUMENT"
    );
    assert_eq!(
        field(&line, "zero").as_deref(),
        Some("2"),
        "counter delta 0: BAD_ARGUMENT"
    );
    assert_eq!(field(&line, "record_counter").as_deref(), Some("0"));
    assert_eq!(
        field(&line, "gauge_neg").as_deref(),
        Some("0"),
        "gauges go down"
    );
    assert_eq!(field(&line, "hist").as_deref(), Some("0"));
    assert_eq!(field(&line, "bad_type").as_deref(), Some("2"));
    assert_eq!(
        field(&line, "get_counter").as_deref(),
        Some("0/6"),
        "1 + record 5 (record adds on a counter)"
    );
    assert_eq!(
        field(&line, "get_hist").as_deref(),
        Some("2"),
        "histograms cannot be read"
    );
    assert_eq!(field(&line, "get_unknown").as_deref(), Some("1"));
    Ok(())
}

#[test]
fn metrics_aggregate_across_workers_by_name() -> Result {
    let mut envoy = probe()?.workers(2).build()?;
    for _ in 0..2 {
        let s = envoy.new_stream();
        envoy.send_request_headers(s, get("metrics"), true)?;
    }
    assert_eq!(
        envoy.counter("probe.requests"),
        12,
        "two workers, 6 each, one stat"
    );
    assert_eq!(
        envoy.counter("wasmcustom.probe.requests"),
        12,
        "the namespace prefix is optional"
    );
    assert_eq!(
        envoy.gauge("probe.inflight"),
        u64::MAX - 3,
        "Envoy gauges are unsigned: -2 twice wraps"
    );
    assert_eq!(envoy.histogram("probe.latency"), [42, 42]);
    assert!(matches!(
        envoy.metrics().get("probe.requests"),
        Some(MetricValue::Counter { value: 12 })
    ));
    Ok(())
}
