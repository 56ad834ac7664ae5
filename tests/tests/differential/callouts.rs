//! Callouts: pause on request headers until an HTTP callout answers, a local reply from the
//! callout callback, the errors `proxy_http_call` returns, a cluster whose endpoint is down, a
//! callout timeout, and a unary gRPC call.

use std::time::Duration;

use crate::real::run_group;
use crate::scenario::{Reply, Request, Scenario, Server};

fn auth() -> Server {
    Server::Reply(Reply::text(200, "allow").header("x-auth", "yes"))
}

fn callout_then_continue() -> Scenario {
    Scenario::new("callout")
        .cluster("auth", auth())
        .request(Request::get("/c").probe("callout,dump_headers"))
        .received_headers(&["content-length", "x-probe"])
}

fn callout_then_deny() -> Scenario {
    Scenario::new("callout_deny")
        .cluster("auth", auth())
        .request(Request::get("/c").probe("callout_deny"))
}

fn callout_errors() -> Scenario {
    Scenario::new("callout_errors")
        .cluster("auth", auth())
        .request(Request::get("/c").probe("callout_errors"))
}

fn callout_to_down_cluster() -> Scenario {
    Scenario::new("callout_down")
        .cluster("auth_down", Server::Down)
        .request(Request::get("/c").probe("callout_to:auth_down,dump_headers"))
}

fn callout_reset_before_headers() -> Scenario {
    Scenario::new("callout_reset_before")
        .cluster("auth_rst", Server::ResetBeforeHeaders)
        .request(Request::get("/c").probe("callout_to:auth_rst,dump_headers"))
}

fn callout_reset_after_headers() -> Scenario {
    Scenario::new("callout_reset_after")
        .cluster(
            "auth_rst_late",
            Server::ResetAfterHeaders(Reply::text(200, "partial")),
        )
        .request(Request::get("/c").probe("callout_to:auth_rst_late,dump_headers"))
}

fn callout_timeout() -> Scenario {
    Scenario::new("callout_timeout")
        .cluster(
            "auth_slow",
            Server::Reply(Reply::text(200, "late").after(Duration::from_secs(2))),
        )
        .request(Request::get("/c").probe("callout_to:auth_slow,dump_headers"))
}

fn grpc_callout() -> Scenario {
    Scenario::new("grpc_callout")
        .cluster("grpc", Server::Reply(Reply::grpc(0, b"pong")))
        .request(Request::get("/g").probe("grpc_call"))
        .received_headers(&["x-md", "content-type"])
}

fn callout_missing_pseudo_headers() -> Scenario {
    Scenario::new("callout_missing")
        .cluster("auth", auth())
        .request(Request::get("/c").probe("callout_missing"))
}

/// Pause on headers holds the body; after the callout the filter sees all of it at once. (The
/// callout takes 200 ms, so the whole body has surely arrived when it answers.)
fn callout_with_body() -> Scenario {
    Scenario::new("callout_body")
        .cluster(
            "auth_200ms",
            Server::Reply(Reply::text(200, "allow").after(Duration::from_millis(200))),
        )
        .request(
            Request::get("/cb")
                .probe("callout_to:auth_200ms")
                .chunk("ab")
                .chunk("cd"),
        )
}

fn grpc_callout_timeout() -> Scenario {
    Scenario::new("grpc_timeout")
        .cluster(
            "grpc_slow",
            Server::Reply(Reply::grpc(0, b"late").after(Duration::from_secs(3))),
        )
        .request(Request::get("/g").probe("grpc_call_to:grpc_slow"))
}

#[test]
fn callouts() {
    run_group(&[
        callout_then_continue(),
        callout_then_deny(),
        callout_errors(),
        callout_to_down_cluster(),
        callout_reset_before_headers(),
        callout_reset_after_headers(),
        callout_timeout(),
        grpc_callout(),
        callout_missing_pseudo_headers(),
        callout_with_body(),
        grpc_callout_timeout(),
    ]);
}
