//! State the module keeps in the host: metrics (Envoy's rules for counters, gauges and
//! histograms), shared data with its CAS rules, shared queues.

use crate::real::run_group;
use crate::scenario::{Request, Scenario};

fn metrics_rules() -> Scenario {
    Scenario::new("metrics_rules")
        .request(Request::get("/m").probe("metrics"))
        .request(Request::get("/m").probe("metrics"))
        .metrics(&["probe.requests", "probe.inflight"])
}

fn shared_data_cas() -> Scenario {
    Scenario::new("shared_cas")
        .config("shared_init")
        .request(Request::get("/s").probe("shared"))
        .request(Request::get("/s").probe("shared"))
        .logs(&["probe:shared:", "probe:configure:shared_init"])
}

fn shared_queue() -> Scenario {
    Scenario::new("shared_queue")
        .config("queue")
        .request(Request::get("/q").probe("enqueue"))
        .logs(&["probe:enqueue:", "probe:queue_ready:"])
}

#[test]
fn metrics_and_shared_state() {
    run_group(&[metrics_rules(), shared_data_cas(), shared_queue()]);
}
