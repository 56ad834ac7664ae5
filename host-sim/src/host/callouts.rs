//! `proxy_http_call`, `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel`, `proxy_grpc_close`: validation and statuses as in Envoy; the call is
//! recorded and handed to the Envoy's responders after the callback returns.

use std::time::Duration;

use super::{C, GrpcState, Registry, check_restricted, mem};
use crate::abi::{KIND_GRPC_CALL, KIND_GRPC_STREAM, KIND_HTTP, Status};
use crate::callout::{CalloutKind, CalloutRecord, Outbound};
use crate::headers::{HeaderMap, deserialize_pairs};
use crate::trace::TraceKind;

type R = wasmtime::Result<i32>;

pub(super) fn register(r: &mut Registry) {
    r.func("env", "proxy_http_call", http_call);
    r.func("env", "proxy_grpc_call", grpc_call);
    r.func("env", "proxy_grpc_stream", grpc_stream);
    r.func("env", "proxy_grpc_send", grpc_send);
    r.func("env", "proxy_grpc_cancel", grpc_cancel);
    r.func("env", "proxy_grpc_close", grpc_close);
}

fn to_map(buf: &[u8]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in deserialize_pairs(buf) {
        m.add(&String::from_utf8_lossy(&k), v);
    }
    m
}

/// Records the attempt; returns its record index.
fn record(c: &C<'_>, mut rec: CalloutRecord) -> usize {
    let st = c.data();
    rec.vm = st.vm_name.clone();
    rec.vm_ref = Some(st.vm);
    rec.root_ctx = st.root_of(st.ctx());
    let mut w = st.world();
    rec.t_ns = w.now();
    if w.rec.tracing {
        let target = match rec.kind {
            CalloutKind::Http => format!(
                "{} {}",
                rec.headers.get(":method").unwrap_or(""),
                rec.headers.get(":path").unwrap_or("")
            ),
            _ => format!("{}/{}", rec.service, rec.method),
        };
        let kind = match rec.kind {
            CalloutKind::Http => "http",
            CalloutKind::GrpcCall => "grpc",
            CalloutKind::GrpcStream => "grpc_stream",
        };
        let ev = TraceKind::Callout {
            kind: kind.into(),
            token: rec.token,
            cluster: rec.cluster.clone(),
            status: format!("{:?}", rec.status),
            target,
        };
        let t = rec.t_ns;
        w.rec.event(t, &st.vm_name, ev);
    }
    let idx = w.callouts.len();
    let ok = rec.status == Status::Ok;
    w.callouts.push(rec);
    if ok {
        w.outbox.push(Outbound::NewCall(idx));
    }
    idx
}

fn blank(kind: CalloutKind, cluster: String) -> CalloutRecord {
    CalloutRecord {
        t_ns: 0,
        vm: String::new(),
        root_ctx: 0,
        token: 0,
        kind,
        cluster,
        status: Status::Ok,
        headers: HeaderMap::new(),
        body: Vec::new(),
        trailers: HeaderMap::new(),
        service: String::new(),
        method: String::new(),
        timeout: None,
        stream_messages: Vec::new(),
        closed_by_module: false,
        outcome: None,
        vm_ref: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut c: C<'_>,
    up: i32,
    up_len: i32,
    hp: i32,
    hl: i32,
    bp: i32,
    bl: i32,
    tp: i32,
    tl: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> R {
    check_restricted(&c, "proxy_http_call")?;
    let (Some(cluster), Some(hdrs), Some(body), Some(trl)) = (
        mem::read_str(&c, up, up_len),
        mem::read(&c, hp, hl),
        mem::read(&c, bp, bl),
        mem::read(&c, tp, tl),
    ) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    // Envoy writes the token once first to validate the pointer.
    if !mem::write_u32(&mut c, token_ptr, 0) {
        return Ok(Status::InvalidMemoryAccess.code());
    }
    let mut rec = blank(CalloutKind::Http, cluster.clone());
    rec.headers = to_map(&hdrs);
    rec.body = body;
    rec.trailers = to_map(&trl);
    rec.timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
    let known = c.data().cfg.clusters.contains_key(&cluster);
    let pseudo_ok = [":path", ":method", ":authority"]
        .iter()
        .all(|h| rec.headers.contains(h));
    rec.status = if timeout_ms < 0 || !known || !pseudo_ok {
        Status::BadArgument
    } else {
        Status::Ok
    };
    if rec.status == Status::Ok {
        if !rec.body.is_empty() {
            rec.headers
                .set("content-length", rec.body.len().to_string());
        }
        rec.token = c.data_mut().next_callout_id(KIND_HTTP);
    }
    let status = rec.status;
    let token = rec.token;
    let idx = record(&c, rec);
    if status == Status::Ok {
        c.data_mut().http_calls.insert(token, idx);
        mem::write_u32(&mut c, token_ptr, token);
    }
    Ok(status.code())
}

/// The cluster of a gRPC target: a serialized `GrpcService` with `envoy_grpc.cluster_name`,
/// or (when the bytes do not parse as one) the bytes as a cluster name.
fn grpc_cluster(target: &[u8]) -> String {
    crate::proto::grpc_service_cluster(target)
        .unwrap_or_else(|| String::from_utf8_lossy(target).into_owned())
}

#[allow(clippy::too_many_arguments)]
fn grpc_call(
    mut c: C<'_>,
    sp: i32,
    sl: i32,
    np: i32,
    nl: i32,
    mp: i32,
    ml: i32,
    mdp: i32,
    mdl: i32,
    rp: i32,
    rl: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> R {
    check_restricted(&c, "proxy_grpc_call")?;
    let (Some(target), Some(service), Some(method), Some(md), Some(msg)) = (
        mem::read(&c, sp, sl),
        mem::read_str(&c, np, nl),
        mem::read_str(&c, mp, ml),
        mem::read(&c, mdp, mdl),
        mem::read(&c, rp, rl),
    ) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let cluster = grpc_cluster(&target);
    let mut rec = blank(CalloutKind::GrpcCall, cluster.clone());
    rec.service = service;
    rec.method = method;
    rec.headers = to_map(&md);
    rec.body = msg;
    rec.timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
    if !c.data().cfg.clusters.contains_key(&cluster) {
        rec.status = Status::ParseFailure;
        record(&c, rec);
        return Ok(Status::ParseFailure.code());
    }
    rec.token = c.data_mut().next_callout_id(KIND_GRPC_CALL);
    let token = rec.token;
    let idx = record(&c, rec);
    c.data_mut().grpc.insert(
        token,
        GrpcState {
            record: idx,
            ..GrpcState::default()
        },
    );
    Ok(if mem::write_u32(&mut c, token_ptr, token) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

#[allow(clippy::too_many_arguments)]
fn grpc_stream(
    mut c: C<'_>,
    sp: i32,
    sl: i32,
    np: i32,
    nl: i32,
    mp: i32,
    ml: i32,
    mdp: i32,
    mdl: i32,
    token_ptr: i32,
) -> R {
    check_restricted(&c, "proxy_grpc_stream")?;
    let (Some(target), Some(service), Some(method), Some(md)) = (
        mem::read(&c, sp, sl),
        mem::read_str(&c, np, nl),
        mem::read_str(&c, mp, ml),
        mem::read(&c, mdp, mdl),
    ) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let cluster = grpc_cluster(&target);
    let mut rec = blank(CalloutKind::GrpcStream, cluster.clone());
    rec.service = service;
    rec.method = method;
    rec.headers = to_map(&md);
    if !c.data().cfg.clusters.contains_key(&cluster) {
        rec.status = Status::ParseFailure;
        record(&c, rec);
        return Ok(Status::ParseFailure.code());
    }
    rec.token = c.data_mut().next_callout_id(KIND_GRPC_STREAM);
    let token = rec.token;
    let idx = record(&c, rec);
    c.data_mut().grpc.insert(
        token,
        GrpcState {
            record: idx,
            ..GrpcState::default()
        },
    );
    Ok(if mem::write_u32(&mut c, token_ptr, token) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

fn grpc_send(c: C<'_>, token: i32, mp: i32, ml: i32, end_stream: i32) -> R {
    check_restricted(&c, "proxy_grpc_send")?;
    let token = token as u32;
    let Some(msg) = mem::read(&c, mp, ml) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    if token & 3 != KIND_GRPC_STREAM {
        return Ok(Status::BadArgument.code());
    }
    let Some(g) = c.data().grpc.get(&token).copied() else {
        return Ok(Status::NotFound.code());
    };
    let st = c.data();
    let mut w = st.world();
    if let Some(r) = w.callouts.get_mut(g.record) {
        r.stream_messages.push(msg.clone());
    }
    w.outbox.push(Outbound::StreamMessage(g.record, msg));
    if end_stream != 0 {
        w.outbox.push(Outbound::StreamClose(g.record));
    }
    Ok(Status::Ok.code())
}

fn finish_local(c: &mut C<'_>, token: u32, cancel: bool) -> Status {
    let kind = token & 3;
    if kind != KIND_GRPC_CALL && kind != KIND_GRPC_STREAM {
        return Status::BadArgument;
    }
    let st = c.data_mut();
    let Some(g) = st.grpc.get(&token).copied() else {
        return Status::NotFound;
    };
    if kind == KIND_GRPC_CALL || cancel || g.remote_closed {
        st.grpc.remove(&token);
    } else if let Some(g) = st.grpc.get_mut(&token) {
        g.local_closed = true;
    }
    let mut w = st.world();
    if let Some(r) = w.callouts.get_mut(g.record) {
        r.closed_by_module = true;
        if cancel || kind == KIND_GRPC_CALL {
            r.outcome.get_or_insert_with(|| "cancelled".into());
        }
    }
    if kind == KIND_GRPC_STREAM && !cancel {
        w.outbox.push(Outbound::StreamClose(g.record));
    }
    Status::Ok
}

fn grpc_cancel(mut c: C<'_>, token: i32) -> R {
    check_restricted(&c, "proxy_grpc_cancel")?;
    Ok(finish_local(&mut c, token as u32, true).code())
}

fn grpc_close(mut c: C<'_>, token: i32) -> R {
    check_restricted(&c, "proxy_grpc_close")?;
    Ok(finish_local(&mut c, token as u32, false).code())
}
