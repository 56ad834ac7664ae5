//! Logging, time, timers, contexts, stream control, local replies, foreign functions and
//! `proxy_get_status`, plus the v0.1 aliases (`proxy_continue_request`, ...).

use super::mem::{self, copy_out, read, read_str};
use super::{AfterAction, C, LocalReplySpec, Registry, check_restricted};
use crate::abi::{LogLevel, Status, StreamType};
use crate::headers::deserialize_pairs;
use crate::trace::TraceKind;
use crate::world::{ForeignCall, Timer};

type R = wasmtime::Result<i32>;

pub(super) fn register(r: &mut Registry) {
    r.func("env", "proxy_log", proxy_log);
    r.func("env", "proxy_get_log_level", get_log_level);
    r.func(
        "env",
        "proxy_get_current_time_nanoseconds",
        get_current_time,
    );
    r.func("env", "proxy_set_tick_period_milliseconds", set_tick_period);
    r.func("env", "proxy_set_effective_context", set_effective_context);
    r.func("env", "proxy_done", done);
    r.func("env", "proxy_continue_stream", continue_stream);
    r.func("env", "proxy_close_stream", close_stream);
    r.func("env", "proxy_send_local_response", send_local_response);
    r.func("env", "proxy_call_foreign_function", call_foreign_function);
    r.func("env", "proxy_get_status", get_status);
    // ABI v0.1.0 names (Envoy registers them for 0.1.0 modules).
    r.func("env", "proxy_continue_request", |c: C<'_>| {
        continue_stream(c, 0)
    });
    r.func("env", "proxy_continue_response", |c: C<'_>| {
        continue_stream(c, 1)
    });
    r.func("env", "proxy_clear_route_cache", clear_route_cache_v01);
    r.func("env", "proxy_get_configuration", get_configuration_v01);
}

fn proxy_log(mut c: C<'_>, level: i32, ptr: i32, len: i32) -> R {
    let Some(level) = LogLevel::from_raw(level) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(msg) = read_str(&c, ptr, len) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    log_line(&mut c, level, msg);
    Ok(Status::Ok.code())
}

/// Records a module log line if Envoy's log level lets it through.
pub(super) fn log_line(c: &mut C<'_>, level: LogLevel, msg: String) {
    let st = c.data();
    if level < st.cfg.log_level {
        return;
    }
    let vm = st.vm_name.clone();
    let mut w = st.world();
    let t = w.now();
    w.rec.log(t, &vm, level, msg);
}

fn get_log_level(mut c: C<'_>, ptr: i32) -> R {
    check_restricted(&c, "proxy_get_log_level")?;
    let level = c.data().cfg.log_level.raw();
    Ok(if mem::write_u32(&mut c, ptr, level) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

fn get_current_time(mut c: C<'_>, ptr: i32) -> R {
    check_restricted(&c, "proxy_get_current_time_nanoseconds")?;
    let now = c.data().world().clock.wall_ns();
    Ok(if mem::write_u64(&mut c, ptr, now) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

fn set_tick_period(c: C<'_>, period_ms: i32) -> R {
    check_restricted(&c, "proxy_set_tick_period_milliseconds")?;
    let st = c.data();
    // Envoy stores the period on the root context, even when a stream context sets it.
    let root = st.root_of(st.ctx());
    let vm = st.vm;
    let period_ns = u64::from(period_ms as u32).saturating_mul(1_000_000);
    let mut w = st.world();
    w.timer_generation += 1;
    let generation = w.timer_generation;
    w.timers.insert(
        (vm, root),
        Timer {
            period_ns,
            generation,
        },
    );
    if period_ns > 0 {
        let at = w.now().saturating_add(period_ns);
        w.sched.at(
            at,
            crate::sched::Event::Tick {
                vm,
                root,
                generation,
            },
        );
    }
    Ok(Status::Ok.code())
}

fn set_effective_context(mut c: C<'_>, id: i32) -> R {
    check_restricted(&c, "proxy_set_effective_context")?;
    let id = id as u32;
    let st = c.data_mut();
    if id != 0 && !st.contexts.contains_key(&id) {
        return Ok(Status::BadArgument.code());
    }
    st.effective_ctx = id;
    Ok(Status::Ok.code())
}

fn done(c: C<'_>) -> R {
    check_restricted(&c, "proxy_done")?;
    // Envoy ignores on_done's result for HTTP streams, and host-sim does not simulate a
    // shutdown with pending root contexts, so there is never a pending context to finish.
    Ok(Status::NotFound.code())
}

fn continue_stream(mut c: C<'_>, ty: i32) -> R {
    check_restricted(&c, "proxy_continue_stream")?;
    let Some(ty) = StreamType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let st = c.data_mut();
    let ctx = st.ctx();
    match ty {
        StreamType::Upstream => return Ok(Status::Unimplemented.code()),
        StreamType::Downstream => return Ok(Status::Ok.code()),
        StreamType::Request | StreamType::Response => {}
    }
    if let Some(s) = st.streams.get_mut(&ctx) {
        st.after.push(AfterAction::Continue { ctx, stream: ty });
        // Envoy drops its request pointers here for both directions.
        s.req_headers_live = false;
        s.req_body_live = false;
        s.req_trailers_live = false;
    }
    Ok(Status::Ok.code())
}

fn close_stream(mut c: C<'_>, ty: i32) -> R {
    check_restricted(&c, "proxy_close_stream")?;
    let Some(ty) = StreamType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let st = c.data_mut();
    let ctx = st.ctx();
    if matches!(ty, StreamType::Request | StreamType::Response)
        && let Some(s) = st.streams.get_mut(&ctx)
    {
        if s.info.response_code_details.is_none() {
            s.info.response_code_details = Some("wasm_close_stream".into());
        }
        st.after.push(AfterAction::Close { ctx });
    }
    Ok(Status::Ok.code())
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut c: C<'_>,
    status: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    hdrs_ptr: i32,
    hdrs_len: i32,
    grpc_status: i32,
) -> R {
    check_restricted(&c, "proxy_send_local_response")?;
    let (Some(details), Some(body), Some(hdrs)) = (
        read(&c, details_ptr, details_len),
        read(&c, body_ptr, body_len),
        read(&c, hdrs_ptr, hdrs_len),
    ) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let st = c.data_mut();
    let ctx = st.ctx();
    if st.streams.contains_key(&ctx) {
        // Envoy replaces any whitespace in details (`replaceAllEmptySpace`).
        let details: String = String::from_utf8_lossy(&details)
            .chars()
            .map(|ch| if ch.is_whitespace() { '_' } else { ch })
            .collect();
        let reply = LocalReplySpec {
            status: status as u32,
            body,
            headers: deserialize_pairs(&hdrs),
            grpc_status,
            details,
        };
        st.after.push(AfterAction::LocalReply { ctx, reply });
    }
    st.stop_next_iteration = true;
    Ok(Status::Ok.code())
}

fn call_foreign_function(
    mut c: C<'_>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> R {
    check_restricted(&c, "proxy_call_foreign_function")?;
    let Some(name) = read_str(&c, name_ptr, name_len) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let Some(args) = read(&c, args_ptr, args_len) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let status = foreign(&mut c, &name, &args);
    {
        let st = c.data();
        let ctx = st.ctx();
        let stream = st.streams.get(&ctx).map(|s| s.info.stream_id);
        let vm = st.vm_name.clone();
        let mut w = st.world();
        let t = w.now();
        w.foreign.push(ForeignCall {
            t_ns: t,
            vm: vm.clone(),
            ctx,
            stream,
            name: name.clone(),
            args: String::from_utf8_lossy(&args).into_owned(),
        });
        if w.rec.tracing {
            w.rec.event(
                t,
                &vm,
                TraceKind::ForeignFunction {
                    ctx,
                    name,
                    status: format!("{status:?}"),
                },
            );
        }
    }
    if status == Status::Ok {
        if ret_ptr != 0 && !mem::write_u32(&mut c, ret_ptr, 0) {
            return Ok(Status::InvalidMemoryAccess.code());
        }
        if ret_len != 0 && !mem::write_u32(&mut c, ret_len, 0) {
            return Ok(Status::InvalidMemoryAccess.code());
        }
    }
    Ok(status.code())
}

/// Envoy's registered foreign functions. Returns the status; results are always empty.
fn foreign(c: &mut C<'_>, name: &str, args: &[u8]) -> Status {
    let st = c.data_mut();
    let ctx = st.ctx();
    match name {
        "clear_route_cache" => {
            if let Some(s) = st.streams.get_mut(&ctx) {
                s.info.route_dirty = true;
            }
            Status::Ok
        }
        "set_envoy_filter_state" => {
            // Envoy looks the key up among the registered filter-state object factories
            // (NOT_FOUND when none) and lets the factory parse the value (BAD_ARGUMENT when
            // it cannot).
            let (path, value) = crate::proto::parse_filter_state_args(args);
            match (st.streams.get_mut(&ctx), filter_state_factory(&path)) {
                (Some(s), Some(parse)) => {
                    if parse.accepts(&value) {
                        s.info.filter_state.insert(path, value);
                        Status::Ok
                    } else {
                        Status::BadArgument
                    }
                }
                _ => Status::NotFound,
            }
        }
        "declare_property" => Status::Ok,
        // Registered in Envoy but not simulated: the call is recorded and answered UNIMPLEMENTED.
        "verify_signature" | "compress" | "uncompress" | "expr_create" | "expr_evaluate"
        | "expr_delete" => Status::Unimplemented,
        _ => Status::NotFound,
    }
}

/// How a filter-state object factory parses the bytes it is given.
#[derive(Clone, Copy, Debug)]
enum FilterStateValue {
    /// Any bytes (string accessors, comma-separated lists).
    Any,
    /// A decimal port (0..=65535).
    Port,
    /// A decimal unsigned 32-bit number.
    Uint,
    /// An IP address.
    Ip,
    /// An `ip:port` socket address.
    SocketAddress,
    /// `true` or anything else (a boolean accessor).
    Bool,
}

impl FilterStateValue {
    fn accepts(self, v: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(v) else {
            return matches!(self, Self::Any | Self::Bool);
        };
        match self {
            Self::Any | Self::Bool => true,
            Self::Port => text.parse::<u16>().is_ok(),
            Self::Uint => text.parse::<u32>().is_ok(),
            Self::Ip => text.parse::<std::net::IpAddr>().is_ok(),
            Self::SocketAddress => text.parse::<std::net::SocketAddr>().is_ok(),
        }
    }
}

/// Filter-state object factories registered in a stock Envoy 1.40 build that the differential
/// suite checked (`set_envoy_filter_state` answers NOT_FOUND for any other key, as Envoy does
/// for keys without a factory; a factory Envoy has that is missing here is a host-sim gap).
fn filter_state_factory(key: &str) -> Option<FilterStateValue> {
    use FilterStateValue as V;
    Some(match key {
        "envoy.string"
        | "envoy.hashable_string"
        | "envoy.network.upstream_server_name"
        | "envoy.network.application_protocols"
        | "envoy.network.upstream_subject_alt_names"
        | "envoy.tcp_proxy.cluster"
        | "envoy.upstream.dynamic_host" => V::Any,
        "envoy.tcp_proxy.disable_tunneling" => V::Bool,
        "envoy.upstream.dynamic_port" => V::Port,
        "envoy.ratelimit.hits_addend" => V::Uint,
        "envoy.network.ip" => V::Ip,
        "envoy.network.transport_socket.original_dst_address" => V::SocketAddress,
        _ => return None,
    })
}

fn get_status(mut c: C<'_>, code_ptr: i32, msg_ptr_ptr: i32, msg_len_ptr: i32) -> R {
    check_restricted(&c, "proxy_get_status")?;
    let (code, msg) = c.data().status.clone();
    if !mem::write_u32(&mut c, code_ptr, code) {
        return Ok(Status::InvalidMemoryAccess.code());
    }
    Ok(copy_out(&mut c, &msg, msg_ptr_ptr, msg_len_ptr)?.code())
}

fn clear_route_cache_v01(mut c: C<'_>) -> R {
    check_restricted(&c, "proxy_clear_route_cache")?;
    let st = c.data_mut();
    let ctx = st.ctx();
    if let Some(s) = st.streams.get_mut(&ctx) {
        s.info.route_dirty = true;
    }
    Ok(Status::Ok.code())
}

fn get_configuration_v01(mut c: C<'_>, ptr_ptr: i32, size_ptr: i32) -> R {
    check_restricted(&c, "proxy_get_configuration")?;
    let st = c.data();
    let data = if st.config_phase == super::ConfigPhase::Plugin {
        st.cfg.plugin_config.clone()
    } else {
        st.cfg.vm_config.clone()
    };
    Ok(copy_out(&mut c, &data, ptr_ptr, size_ptr)?.code())
}
