//! Two workers: VMs start and configure (canary included), ticks fire in every VM, metrics
//! aggregate across workers.

use crate::real::run_group;
use crate::scenario::{Mask, Request, Scenario};

fn ticks_in_every_vm() -> Scenario {
    Scenario::new("ticks")
        .workers(2)
        .config("tick=50")
        .ticks(3)
        .ticking_vms()
        .logs(&["probe:configure:"])
}

fn metrics_across_workers() -> Scenario {
    let mut s = Scenario::new("metrics_workers")
        .workers(2)
        .metrics(&["probe.requests", "probe.inflight"])
        .logs(&["probe:metrics:"])
        .mask(Mask::Field("ids"));
    for _ in 0..4 {
        s = s.request(Request::get("/m").probe("metrics"));
    }
    s
}

#[test]
fn two_workers() {
    run_group(&[ticks_in_every_vm(), metrics_across_workers()]);
}
