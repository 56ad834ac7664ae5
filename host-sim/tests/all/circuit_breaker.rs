//! The circuit_breaker module under simulated failures (issue 5): two worker VMs, virtual time.

use std::time::Duration;

use host_sim::load::{
    self, Arrivals, FailureMode, FailureWindow, Latency, LoadSpec, UpstreamModel,
};
use host_sim::{Envoy, Module};

use crate::support::Result;

fn envoy(config: &str) -> Result<Envoy> {
    Ok(Envoy::builder(Module::load("circuit_breaker")?)
        .workers(2)
        .plugin_config(config)
        .tracing(false)
        .build()?)
}

/// 500 rps against a fast upstream that fails as a whole from 5 s to 15 s.
fn outage(failure: FailureMode, secs: u64) -> LoadSpec {
    LoadSpec {
        duration: Duration::from_secs(secs),
        arrivals: Arrivals::Poisson { rps: 500.0 },
        upstream: UpstreamModel {
            capacity: 100,
            latency: Latency::Fixed(Duration::from_millis(5)),
            failure_windows: vec![FailureWindow {
                from: Duration::from_secs(5),
                to: Duration::from_secs(15),
            }],
            failure,
            ..Default::default()
        },
        window: Duration::from_millis(500),
        drain: Duration::from_secs(2),
        seed: 3,
        ..Default::default()
    }
}

#[test]
fn a_dead_dependency_sees_only_the_trip_and_the_probes() -> Result {
    for failure in [
        FailureMode::Status(500),
        FailureMode::Reset,
        FailureMode::ConnectFailure,
    ] {
        let mut e = envoy(r#"{"open": {"base_duration": "2s"}}"#)?;
        let r = load::run(&mut e, &outage(failure.clone(), 30));
        let line = r.summary_line(&format!("{failure:?}"));
        // Requests that reached the failing upstream: the 5 that tripped it (counted across
        // both workers), those already in flight (500 rps x 5 ms), and the probes of each
        // half-open period (3 each; periods at ~2 s, +4 s, +8 s within the 10 s outage).
        let during: u64 = r
            .series
            .iter()
            .filter(|w| w.t_s > 5.0 && w.t_s <= 15.5)
            .map(|w| w.errors)
            .sum();
        assert!(
            during <= 5 + 3 + 3 * 3,
            "{line}: {during} failed calls reached the upstream"
        );
        assert!(r.rejected > 4000, "{line}");
        // Healed at 15 s; the open period running then ends by ~15 + 8 s (+10 % jitter), then
        // three probes close it: no rejections in the last windows.
        let late: u64 = r
            .series
            .iter()
            .filter(|w| w.t_s > 25.0)
            .map(|w| w.rejected)
            .sum();
        assert_eq!(late, 0, "{line}");
        assert_eq!(e.counter("meshguard.circuit_breaker.closed"), 1, "{line}");
        assert_eq!(
            e.counter("meshguard.circuit_breaker.opened.consecutive_failures"),
            1,
            "{line}"
        );
        assert!(
            e.counter("meshguard.circuit_breaker.half_opened") >= 2,
            "{line}"
        );
    }
    Ok(())
}

#[test]
fn probes_are_bounded_across_workers() -> Result {
    let mut e = envoy(
        r#"{"open": {"base_duration": "1s", "jitter_percent": 0}, "half_open": {"permitted_calls": 4}}"#,
    )?;
    // The outage never ends: every half-open period lets exactly 4 probes through, whatever the
    // worker.
    let mut spec = outage(FailureMode::Status(503), 20);
    spec.upstream.failure_windows = vec![FailureWindow {
        from: Duration::ZERO,
        to: Duration::from_secs(3600),
    }];
    let r = load::run(&mut e, &spec);
    let half_opens = e.counter("meshguard.circuit_breaker.half_opened");
    let probe_failures = e.counter("meshguard.circuit_breaker.opened.probe_failed");
    assert_eq!(half_opens, probe_failures);
    // errors = 5 (trip) + in-flight at the trip + at most 4 probes per half-open period.
    assert!(
        r.errors <= 5 + 3 + 4 * half_opens,
        "{} errors, {half_opens} half-opens",
        r.errors
    );
    assert!(half_opens >= 3, "backoff 1, 2, 4, 8 s: {half_opens}");
    Ok(())
}

#[test]
fn a_failure_rate_trips_where_consecutive_failures_never_would() -> Result {
    let config = r#"{"trip": {"consecutive_failures": 0,
                              "failure_rate": {"threshold_percent": 20, "minimum_calls": 200,
                                               "window": {"duration": "10s"}}}}"#;
    let mut e = envoy(config)?;
    let mut spec = outage(FailureMode::Status(503), 10);
    spec.upstream.failure_windows.clear();
    spec.upstream.failure_rate = 0.3;
    let r = load::run(&mut e, &spec);
    assert_eq!(
        e.counter("meshguard.circuit_breaker.opened.failure_rate"),
        1,
        "{}",
        r.summary_line("30 % failing")
    );
    assert!(r.rejected > 0);
    // A healthy upstream with 5 % errors never trips it.
    let mut e = envoy(config)?;
    spec.upstream.failure_rate = 0.05;
    let r = load::run(&mut e, &spec);
    assert_eq!(r.rejected, 0, "{}", r.summary_line("5 % failing"));
    Ok(())
}
