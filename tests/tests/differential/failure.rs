//! A trapping module: FAIL_CLOSED answers 503 `wasm_fail_stream` (gRPC: UNAVAILABLE) for the
//! failing stream and every later one on that VM; FAIL_OPEN skips the filter.

use crate::real::run_group;
use crate::scenario::{Policy, Request, Scenario};

fn trap_fail_closed() -> Scenario {
    Scenario::new("trap_closed")
        .request(Request::get("/x").probe("panic"))
        .request(Request::get("/y"))
}

fn trap_fail_closed_grpc() -> Scenario {
    Scenario::new("trap_closed_grpc")
        .request(Request::grpc("/svc.Echo/Say").probe("panic"))
        .request(Request::grpc("/svc.Echo/Say"))
}

fn trap_fail_open() -> Scenario {
    Scenario::new("trap_open")
        .policy(Policy::FailOpen)
        .request(Request::get("/x").probe("panic"))
        .request(Request::get("/y"))
}

#[test]
fn failure_policies() {
    run_group(&[
        trap_fail_closed(),
        trap_fail_closed_grpc(),
        trap_fail_open(),
    ]);
}
