//! Header maps and bodies: lower-cased keys, first-value reads, request headers after Continue,
//! body buffering and `set_buffer_bytes`, trailers added from the last body callback.

use crate::real::run_group;
use crate::scenario::{Mask, Reply, Request, Route, Scenario, Server};

/// Adds, replaces and removes request headers (mixed-case names from the module), reads the
/// first of a repeated header, the map size, and dumps the map Envoy hands the filter.
fn header_case_and_first_value() -> Scenario {
    Scenario::new("header_case")
        .request(
            Request::get("/h")
                .probe("headers,dump_headers")
                .header("x-multi", "a")
                .header("x-multi", "b")
                .header("x-replace", "old")
                .header("x-remove", "gone"),
        )
        .received_headers(&["x-probe-added", "x-replace", "x-remove", "x-multi"])
}

/// Request headers are readable in `on_request_headers` and `on_log`, not in
/// `on_response_headers` (BAD_ARGUMENT, empty pairs).
fn request_headers_by_phase() -> Scenario {
    Scenario::new("header_phase")
        .request(Request::get("/phase"))
        .request(Request::get("/phase?q=1").probe("none"))
}

/// Pause on body chunks buffers them; at the end the filter sees the whole body and may only
/// prepend or append.
fn body_pause_and_set_buffer() -> Scenario {
    Scenario::new("body_pause")
        .request(
            Request::get("/b")
                .probe("body_pause")
                .chunk("ab")
                .chunk("cd"),
        )
        .logs(&[
            "probe:request_body:full=",
            "probe:request_body:set",
            "probe:log:",
        ])
}

/// Trailers added from the last request body callback reach the upstream.
fn request_trailers_added() -> Scenario {
    Scenario::new("trailers_add")
        .request(Request::get("/t").probe("trailers_add").chunk("xy"))
        .logs(&["probe:request_body:add_trailer", "probe:log:"])
}

/// Client trailers reach the upstream; the filter sees them in `on_request_trailers`.
fn request_trailers() -> Scenario {
    Scenario::new("request_trailers").request(
        Request::get("/t")
            .chunk("xy")
            .trailer("x-client-trailer", "1"),
    )
}

/// A gRPC error in trailers after a 200: `on_log` reads the status from the trailers.
fn grpc_error_passthrough() -> Scenario {
    Scenario::new("grpc_error_pass")
        .routes(vec![Route::new("grpc", "grpc_not_found")])
        .cluster(
            "grpc_not_found",
            Server::Reply(Reply::grpc(5, b"").trailer("grpc-message", "no such thing")),
        )
        .request(Request::grpc("/svc.Echo/Say").probe("log_properties"))
        .mask(Mask::Value("request.duration"))
        .mask(Mask::Value("upstream.address"))
}

/// A gRPC call through the filter: the upstream's trailers reach the client, and `on_log` sees
/// the gRPC status from them.
fn grpc_passthrough() -> Scenario {
    Scenario::new("grpc_pass")
        .routes(vec![Route::new("grpc", "grpc_upstream")])
        .cluster("grpc_upstream", Server::Reply(Reply::grpc(0, b"pong")))
        .request(Request::grpc("/svc.Echo/Say").probe("log_properties"))
        .mask(Mask::Value("request.duration"))
        .mask(Mask::Value("upstream.address"))
}

#[test]
fn headers_and_bodies() {
    run_group(&[
        header_case_and_first_value(),
        request_headers_by_phase(),
        body_pause_and_set_buffer(),
        request_trailers_added(),
        grpc_passthrough(),
        request_trailers(),
        grpc_error_passthrough(),
    ]);
}
