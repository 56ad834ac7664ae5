//! Header/trailer/metadata map host functions with Envoy's availability rules
//! (see [`crate::stream_state`]).

use super::{C, HostState, Registry, check_restricted, mem};
use crate::abi::{MapType, Status};
use crate::headers::{HeaderMap, deserialize_pairs, serialize_pairs};
use crate::trace::TraceKind;

type R = wasmtime::Result<i32>;

pub(super) fn register(r: &mut Registry) {
    r.func("env", "proxy_get_header_map_value", get_value);
    r.func("env", "proxy_get_header_map_pairs", get_pairs);
    r.func("env", "proxy_set_header_map_pairs", set_pairs);
    r.func("env", "proxy_add_header_map_value", add_value);
    r.func("env", "proxy_replace_header_map_value", replace_value);
    r.func("env", "proxy_remove_header_map_value", remove_value);
    r.func("env", "proxy_get_header_map_size", get_size);
}

/// Envoy `getConstMap`: the map readable right now, if any.
pub(crate) fn const_map(st: &HostState, ty: MapType) -> Option<&HeaderMap> {
    let cd = &st.call_data;
    match ty {
        MapType::GrpcInitialMetadata => return cd.grpc_initial.as_ref(),
        MapType::GrpcTrailingMetadata => return cd.grpc_trailing.as_ref(),
        MapType::HttpCallResponseHeaders => return cd.http_headers.as_ref(),
        MapType::HttpCallResponseTrailers => return cd.http_trailers.as_ref(),
        _ => {}
    }
    let s = st.streams.get(&st.ctx())?;
    match ty {
        MapType::RequestHeaders => {
            (s.access_log_phase || s.req_headers_live).then_some(&s.req_headers)
        }
        MapType::RequestTrailers => {
            if s.access_log_phase {
                None
            } else if s.req_trailers_live {
                s.req_trailers.as_ref()
            } else {
                None
            }
        }
        MapType::ResponseHeaders => {
            if s.access_log_phase {
                s.has_response.then_some(&s.resp_headers)
            } else {
                s.resp_headers_live.then_some(&s.resp_headers)
            }
        }
        MapType::ResponseTrailers => {
            if s.access_log_phase || s.resp_trailers_live {
                s.resp_trailers.as_ref()
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Envoy `getMap`: the map writable right now (creating trailers from a body callback at
/// end of stream).
fn mut_map(st: &mut HostState, ty: MapType) -> Option<&mut HeaderMap> {
    let ctx = st.ctx();
    let s = st.streams.get_mut(&ctx)?;
    match ty {
        MapType::RequestHeaders => s.req_headers_live.then_some(&mut s.req_headers),
        MapType::RequestTrailers => {
            if s.req_trailers.is_none() && s.req_body_live && s.end_of_stream {
                s.req_trailers = Some(HeaderMap::new());
                s.req_trailers_live = true;
                s.req_trailers_added = true;
            }
            if s.req_trailers_live {
                s.req_trailers.as_mut()
            } else {
                None
            }
        }
        MapType::ResponseHeaders => s.resp_headers_live.then_some(&mut s.resp_headers),
        MapType::ResponseTrailers => {
            if s.resp_trailers.is_none() && s.resp_body_live && s.end_of_stream {
                s.resp_trailers = Some(HeaderMap::new());
                s.resp_trailers_live = true;
                s.resp_trailers_added = true;
            }
            if s.resp_trailers_live {
                s.resp_trailers.as_mut()
            } else {
                None
            }
        }
        _ => None,
    }
}

fn trace_change(c: &C<'_>, ty: MapType, op: &str, key: &[u8], value: Option<&[u8]>) {
    let st = c.data();
    let mut w = st.world();
    if w.rec.tracing {
        let t = w.now();
        let kind = TraceKind::HeaderChange {
            ctx: st.ctx(),
            map: ty.name().to_string(),
            op: op.to_string(),
            key: String::from_utf8_lossy(key).to_ascii_lowercase(),
            value: value.map(|v| String::from_utf8_lossy(v).into_owned()),
        };
        w.rec.event(t, &st.vm_name, kind);
    }
}

fn key_str(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn get_value(mut c: C<'_>, ty: i32, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32) -> R {
    check_restricted(&c, "proxy_get_header_map_value")?;
    let Some(ty) = MapType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(key) = mem::read(&c, kp, kl) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let st = c.data();
    let value = match const_map(st, ty) {
        None => {
            let log = st
                .streams
                .get(&st.ctx())
                .is_some_and(|s| s.access_log_phase);
            return Ok(if log {
                Status::NotFound
            } else {
                Status::BadArgument
            }
            .code());
        }
        Some(m) => match m.get_bytes(&key_str(&key)) {
            // Only the first value of a repeated header (Envoy TODO: "potential security issue").
            Some(v) => v.to_vec(),
            None => return Ok(Status::NotFound.code()),
        },
    };
    Ok(mem::copy_out(&mut c, &value, ret_ptr, ret_len)?.code())
}

fn get_pairs(mut c: C<'_>, ty: i32, ret_ptr: i32, ret_len: i32) -> R {
    check_restricted(&c, "proxy_get_header_map_pairs")?;
    let Some(ty) = MapType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let buf = match const_map(c.data(), ty) {
        Some(m) if !m.is_empty() => m.serialize(),
        _ => Vec::new(),
    };
    Ok(mem::copy_out(&mut c, &buf, ret_ptr, ret_len)?.code())
}

fn set_pairs(mut c: C<'_>, ty: i32, ptr: i32, len: i32) -> R {
    check_restricted(&c, "proxy_set_header_map_pairs")?;
    let Some(ty) = MapType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(buf) = mem::read(&c, ptr, len) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    // Malformed or oversized buffers read as no pairs: the map is cleared.
    let pairs = deserialize_pairs(&buf);
    let Some(m) = mut_map(c.data_mut(), ty) else {
        return Ok(Status::BadArgument.code());
    };
    m.clear();
    for (k, v) in &pairs {
        m.add(&key_str(k), v);
    }
    let summary = serialize_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    trace_change(
        &c,
        ty,
        "set_pairs",
        b"",
        Some(format!("{} pairs, {} bytes", pairs.len(), summary.len()).as_bytes()),
    );
    Ok(Status::Ok.code())
}

fn add_value(mut c: C<'_>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> R {
    check_restricted(&c, "proxy_add_header_map_value")?;
    let Some(ty) = MapType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let (Some(key), Some(value)) = (mem::read(&c, kp, kl), mem::read(&c, vp, vl)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let Some(m) = mut_map(c.data_mut(), ty) else {
        return Ok(Status::BadArgument.code());
    };
    m.add(&key_str(&key), &value);
    trace_change(&c, ty, "add", &key, Some(&value));
    Ok(Status::Ok.code())
}

fn replace_value(mut c: C<'_>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> R {
    check_restricted(&c, "proxy_replace_header_map_value")?;
    let Some(ty) = MapType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let (Some(key), Some(value)) = (mem::read(&c, kp, kl), mem::read(&c, vp, vl)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let Some(m) = mut_map(c.data_mut(), ty) else {
        return Ok(Status::BadArgument.code());
    };
    m.set(&key_str(&key), &value);
    trace_change(&c, ty, "replace", &key, Some(&value));
    Ok(Status::Ok.code())
}

fn remove_value(mut c: C<'_>, ty: i32, kp: i32, kl: i32) -> R {
    check_restricted(&c, "proxy_remove_header_map_value")?;
    let Some(ty) = MapType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(key) = mem::read(&c, kp, kl) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let Some(m) = mut_map(c.data_mut(), ty) else {
        return Ok(Status::BadArgument.code());
    };
    m.remove(&key_str(&key));
    trace_change(&c, ty, "remove", &key, None);
    Ok(Status::Ok.code())
}

fn get_size(mut c: C<'_>, ty: i32, ret: i32) -> R {
    check_restricted(&c, "proxy_get_header_map_size")?;
    let Some(ty) = MapType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    // Envoy answers HeaderMap::byteSize() of the *mutable* map (so BAD_ARGUMENT wherever the
    // map is not writable, including on_log).
    let Some(m) = mut_map(c.data_mut(), ty) else {
        return Ok(Status::BadArgument.code());
    };
    let size = m.byte_size() as u32;
    Ok(if mem::write_u32(&mut c, ret, size) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}
