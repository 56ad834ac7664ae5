//! Ticks per root context in every VM, re-armed after each tick, in virtual time.

use std::time::Duration;

use crate::support::*;

#[test]
fn every_vm_ticks_on_its_period() -> Result {
    let mut envoy = probe()?.workers(2).plugin_config("tick=100").build()?;
    envoy.advance(Duration::from_millis(99));
    assert!(probe_lines(&envoy, "tick").is_empty());
    envoy.advance(Duration::from_millis(151));
    let ticks: Vec<(String, String)> = envoy
        .logs()
        .into_iter()
        .filter(|l| l.message.starts_with("probe:tick:"))
        .map(|l| (l.vm, l.message))
        .collect();
    assert_eq!(
        ticks.len(),
        6,
        "main + 2 workers, at 100 ms and 200 ms (not the canary)"
    );
    assert!(ticks.iter().all(|(vm, _)| vm != "canary"));
    let at_200: Vec<_> = ticks.iter().filter(|(_, m)| m.contains("n=2")).collect();
    assert_eq!(at_200.len(), 3);
    let wall = envoy.wall_clock_ns();
    assert_eq!(wall, host_sim::DEFAULT_WALL_START_NS + 250_000_000);
    assert!(
        ticks[3].1.contains(&format!(
            "now={}",
            host_sim::DEFAULT_WALL_START_NS + 200_000_000
        )),
        "{:?}",
        ticks[3]
    );
    Ok(())
}

#[test]
fn a_panicking_tick_fails_only_that_vm() -> Result {
    let mut envoy = probe()?
        .workers(2)
        .plugin_config("tick=10 panic_on_tick")
        .build()?;
    envoy.advance(Duration::from_millis(35));
    assert!(envoy.worker_failure(0).is_some());
    assert!(envoy.worker_failure(1).is_some());
    assert!(envoy.main_failure().is_some());
    let ticks = probe_lines(&envoy, "tick");
    assert_eq!(
        ticks.len(),
        3,
        "one tick per VM, then each VM is failed and stops ticking"
    );
    assert!(
        envoy.logs_containing("probe panics on tick").len() >= 3,
        "the SDK's panic hook logs before the trap"
    );
    Ok(())
}
