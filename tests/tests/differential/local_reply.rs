//! Local replies: from request headers (HTTP and gRPC), from response headers, after the
//! response started (a reset), `close_stream`, and the router's own replies (no route, route
//! timeout, upstream down).

use std::time::Duration;

use crate::real::run_group;
use crate::scenario::{Reply, Request, Route, Scenario, Server};

fn local_reply_http() -> Scenario {
    Scenario::new("local_reply_http").request(Request::get("/deny").probe("local_reply"))
}

fn local_reply_grpc() -> Scenario {
    Scenario::new("local_reply_grpc")
        .request(Request::grpc("/svc.Echo/Say").probe("grpc_reply"))
        .request(Request::grpc("/svc.Echo/Say").probe("local_reply"))
}

fn reply_from_response_headers() -> Scenario {
    Scenario::new("late_reply").request(Request::get("/late").probe("late_reply"))
}

fn reply_after_response_started() -> Scenario {
    Scenario::new("late_reply_body").request(Request::get("/late").probe("late_reply_body"))
}

fn close_stream() -> Scenario {
    Scenario::new("close_stream").request(Request::get("/close").probe("close"))
}

fn no_route() -> Scenario {
    Scenario::new("no_route")
        .routes(vec![Route::new("api", "upstream").prefix("/api")])
        .request(Request::get("/other"))
}

fn route_timeout() -> Scenario {
    Scenario::new("route_timeout")
        .route_timeout(Duration::from_millis(300))
        .routes(vec![Route::new("slow", "slow_upstream")])
        .cluster(
            "slow_upstream",
            Server::Reply(Reply::text(200, "late").after(Duration::from_secs(2))),
        )
        .request(Request::get("/slow"))
}

fn upstream_down() -> Scenario {
    Scenario::new("upstream_down")
        .routes(vec![Route::new("down", "down_upstream")])
        .cluster("down_upstream", Server::Down)
        .request(Request::get("/down"))
}

fn upstream_reset() -> Scenario {
    Scenario::new("upstream_reset")
        .routes(vec![Route::new("reset", "reset_upstream")])
        .cluster("reset_upstream", Server::ResetBeforeHeaders)
        .request(Request::get("/reset"))
}

/// The filter buffers a response bigger than the buffer limit (1 MiB, Envoy's default).
fn response_too_large() -> Scenario {
    let big = "x".repeat(1536 * 1024);
    Scenario::new("response_too_large")
        .routes(vec![Route::new("big", "big_upstream")])
        .cluster("big_upstream", Server::Reply(Reply::text(200, &big)))
        .request(Request::get("/big").probe("resp_pause_all"))
        .logs(&["probe:log:"])
}

#[test]
fn local_replies() {
    run_group(&[
        local_reply_http(),
        local_reply_grpc(),
        reply_from_response_headers(),
        reply_after_response_started(),
        close_stream(),
        no_route(),
        route_timeout(),
        upstream_down(),
        upstream_reset(),
        response_too_large(),
    ]);
}
