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

/// The router's own reply to a gRPC request: trailers-only, status from the HTTP code.
fn grpc_route_timeout() -> Scenario {
    Scenario::new("grpc_route_timeout")
        .route_timeout(Duration::from_millis(300))
        .routes(vec![Route::new("slow", "slow_grpc")])
        .cluster(
            "slow_grpc",
            Server::Reply(Reply::grpc(0, b"late").after(Duration::from_secs(2))),
        )
        .request(Request::grpc("/svc.Echo/Say"))
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

/// The filter buffers a response body bigger than the buffer limit (1 MiB, Envoy's default).
fn response_body_too_large() -> Scenario {
    Scenario::new("response_too_large")
        .routes(vec![Route::new("big", "big_upstream")])
        .cluster("big_upstream", Server::Reply(Reply::text(200, &BIG)))
        .request(Request::get("/big").probe("resp_buffer_body"))
        .logs(&["probe:log:"])
}

/// A buffered request body over 1 MiB: over HTTP/2 the stream's limit is the h2 stream window
/// (256 MiB), so it passes.
fn request_body_buffered_h2() -> Scenario {
    Scenario::new("request_buffered_h2")
        .request(big_request("body_pause"))
        .logs(&["probe:log:"])
}

/// The same over HTTP/1.1: the limit is the connection's 1 MiB, so a 413.
fn request_body_too_large_h1() -> Scenario {
    Scenario::new("request_too_large_h1")
        .http1()
        .request(big_request("body_pause,dump_headers"))
        .request(Request::get("/small").probe("dump_headers"))
        .logs(&["probe:log:", "probe:dump_headers:"])
}

fn big_request(cmds: &str) -> Request {
    let mut r = Request::get("/big").probe(cmds);
    for c in BIG.as_bytes().chunks(16 * 1024) {
        r.body.push(c.to_vec());
    }
    r
}

/// A body over the 1 MiB buffer limit.
static BIG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| "x".repeat(1536 * 1024));

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
        grpc_route_timeout(),
        upstream_down(),
        upstream_reset(),
        response_body_too_large(),
        request_body_buffered_h2(),
        request_body_too_large_h1(),
    ]);
}
