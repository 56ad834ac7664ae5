//! Buffer host functions. Envoy only supports prepend (`start == 0`, after draining `size`
//! bytes) and append (`start >= length`) on HTTP bodies; anything else is BAD_ARGUMENT, and
//! configuration, callout and gRPC buffers are read-only.

use super::{C, ConfigPhase, HostState, Registry, check_restricted, mem};
use crate::abi::{BufferType, Status};

type R = wasmtime::Result<i32>;

pub(super) fn register(r: &mut Registry) {
    r.func("env", "proxy_get_buffer_bytes", get_bytes);
    r.func("env", "proxy_set_buffer_bytes", set_bytes);
    r.func("env", "proxy_get_buffer_status", get_status);
}

enum Buf<'a> {
    Mut(&'a mut Vec<u8>),
    Ro(&'a [u8]),
}

impl Buf<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Mut(v) => v,
            Buf::Ro(s) => s,
        }
    }
}

/// Envoy `Context::getBuffer`.
fn buffer(st: &mut HostState, ty: BufferType) -> Option<Buf<'_>> {
    let ctx = st.ctx();
    match ty {
        BufferType::VmConfiguration => Some(Buf::Ro(&st.cfg.vm_config)),
        BufferType::PluginConfiguration => {
            (st.config_phase == ConfigPhase::Plugin).then(|| Buf::Ro(&st.cfg.plugin_config))
        }
        BufferType::CallData => Some(Buf::Ro(st.call_data.foreign_args.as_deref().unwrap_or(&[]))),
        BufferType::HttpCallResponseBody => st.call_data.http_body.as_deref().map(Buf::Ro),
        BufferType::GrpcReceiveBuffer => {
            Some(Buf::Ro(st.call_data.grpc_message.as_deref().unwrap_or(&[])))
        }
        BufferType::DownstreamData | BufferType::UpstreamData => Some(Buf::Ro(&[])),
        BufferType::RequestBody => Some(match st.streams.get_mut(&ctx) {
            Some(s) if s.req_body_live => Buf::Mut(&mut s.req_body),
            _ => Buf::Ro(&[]),
        }),
        BufferType::ResponseBody => Some(match st.streams.get_mut(&ctx) {
            Some(s) if s.resp_body_live => Buf::Mut(&mut s.resp_body),
            _ => Buf::Ro(&[]),
        }),
    }
}

fn get_bytes(mut c: C<'_>, ty: i32, start: i32, len: i32, ptr_ptr: i32, size_ptr: i32) -> R {
    check_restricted(&c, "proxy_get_buffer_bytes")?;
    let Some(ty) = BufferType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let (start, len) = (start as u32 as usize, len as u32 as usize);
    let slice = {
        let Some(b) = buffer(c.data_mut(), ty) else {
            return Ok(Status::NotFound.code());
        };
        let data = b.bytes();
        let end = start.saturating_add(len).min(data.len());
        data.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
    };
    Ok(mem::copy_out(&mut c, &slice, ptr_ptr, size_ptr)?.code())
}

fn set_bytes(mut c: C<'_>, ty: i32, start: i32, size: i32, data_ptr: i32, data_len: i32) -> R {
    check_restricted(&c, "proxy_set_buffer_bytes")?;
    let Some(ty) = BufferType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    if buffer(c.data_mut(), ty).is_none() {
        return Ok(Status::NotFound.code());
    }
    let Some(data) = mem::read(&c, data_ptr, data_len) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let status = match buffer(c.data_mut(), ty) {
        Some(Buf::Mut(v)) => {
            if start == 0 {
                v.drain(..size.min(v.len()));
                v.splice(0..0, data);
                Status::Ok
            } else if start >= v.len() {
                v.extend_from_slice(&data);
                Status::Ok
            } else {
                Status::BadArgument
            }
        }
        Some(Buf::Ro(_)) => Status::BadArgument,
        None => Status::NotFound,
    };
    Ok(status.code())
}

fn get_status(mut c: C<'_>, ty: i32, len_ptr: i32, flags_ptr: i32) -> R {
    check_restricted(&c, "proxy_get_buffer_status")?;
    let Some(ty) = BufferType::from_raw(ty) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(len) = buffer(c.data_mut(), ty).map(|b| b.bytes().len()) else {
        return Ok(Status::NotFound.code());
    };
    if !mem::write_u32(&mut c, len_ptr, len as u32) || !mem::write_u32(&mut c, flags_ptr, 0) {
        return Ok(Status::InvalidMemoryAccess.code());
    }
    Ok(Status::Ok.code())
}
