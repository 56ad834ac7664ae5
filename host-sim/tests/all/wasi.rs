//! WASI: virtual clocks, seeded randomness, plugin environment, stdout/stderr to the log.

use std::time::Duration;

use host_sim::LogLevel;

use crate::support::*;

fn time_line(seed: u64) -> Result<String> {
    let mut envoy = probe()?.workers(1).seed(seed).build()?;
    envoy.advance(Duration::from_millis(1500));
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("time"), true)?;
    Ok(probe_line(&envoy, "time").unwrap())
}

#[test]
fn clocks_are_virtual_and_random_is_seeded() -> Result {
    let line = time_line(1)?;
    let wall = host_sim::DEFAULT_WALL_START_NS + 1_500_000_000;
    assert_eq!(field(&line, "wall"), Some(wall.to_string()));
    assert_eq!(
        field(&line, "realtime"),
        Some(wall.to_string()),
        "WASI REALTIME = the same wall clock"
    );
    assert_eq!(
        field(&line, "monotonic"),
        Some((host_sim::MONOTONIC_START_NS + 1_500_000_000).to_string())
    );
    assert_eq!(
        field(&line, "level").as_deref(),
        Some("2"),
        "Envoy's default log level: info"
    );
    assert_eq!(line, time_line(1)?, "same seed, same random bytes");
    assert_ne!(field(&line, "random"), field(&time_line(2)?, "random"));
    Ok(())
}

#[test]
fn environment_and_stdio() -> Result {
    let mut envoy = probe()?.env("PROBE_ENV", "from-plugin").build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("env"), true)?;
    assert_eq!(
        probe_line(&envoy, "env").as_deref(),
        Some("PROBE_ENV=from-plugin")
    );
    let out = envoy.logs_containing("probe stdout line");
    assert_eq!(out[0].level, LogLevel::Info);
    let err = envoy.logs_containing("probe stderr line");
    assert_eq!(err[0].level, LogLevel::Error);
    Ok(())
}

#[test]
fn log_level_filters_and_is_reported() -> Result {
    let envoy = probe()?.log_level(LogLevel::Warn).build()?;
    assert!(
        probe_lines(&envoy, "configure").is_empty(),
        "info lines are below warn"
    );
    Ok(())
}
