//! Properties (request, xds, plugin, source), `set_property` read back, foreign functions,
//! and `clear_route_cache` re-routing.

use serde_json::json;

use crate::real::run_group;
use crate::scenario::{Mask, Reply, Request, Route, Scenario, Server};

fn properties() -> Scenario {
    Scenario::new("properties")
        .routes(vec![
            Route::new("props_route", "upstream").metadata(json!({"probe": {"k": "v"}})),
        ])
        .request(Request::get("/p?x=1").probe("property"))
        .logs(&["probe:property:"])
        .mask(Mask::Digits("source.address"))
}

fn set_property() -> Scenario {
    Scenario::new("set_property").request(Request::get("/sp").probe("set_property"))
}

fn foreign_functions() -> Scenario {
    Scenario::new("foreign")
        .request(Request::get("/f").probe("foreign"))
        .request(Request::get("/f").probe("filter_state_keys"))
}

fn reroute() -> Scenario {
    Scenario::new("reroute")
        .routes(vec![
            Route::new("canary_route", "canary").header("x-route", "canary"),
            Route::new("default", "upstream"),
        ])
        .cluster("canary", Server::Reply(Reply::text(200, "canary")))
        .request(Request::get("/r").probe("reroute"))
        .request(Request::get("/r"))
        .received_headers(&["x-route"])
}

/// Properties in `on_log`: duration, gRPC status (derived from the HTTP status), upstream
/// address and request size, for a routed request, a local reply and a connect failure.
fn log_properties() -> Scenario {
    Scenario::new("log_properties")
        .routes(vec![
            Route::new("down", "props_down").header("x-route", "down"),
            Route::new("default", "upstream"),
        ])
        .cluster("props_down", Server::Down)
        .request(Request::get("/l").probe("log_properties").chunk("12345"))
        .request(Request::get("/l").probe("log_properties,local_reply"))
        .request(
            Request::get("/l")
                .probe("log_properties")
                .header("x-route", "down"),
        )
        .logs(&["probe:log"])
        .mask(Mask::Value("request.duration"))
        .mask(Mask::Value("upstream.address"))
}

#[test]
fn properties_and_routing() {
    run_group(&[
        properties(),
        set_property(),
        foreign_functions(),
        reroute(),
        log_properties(),
    ]);
}
