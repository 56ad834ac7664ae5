//! `proxy_get_property` / `proxy_set_property` (see [`crate::properties`]).

use super::{C, Registry, check_restricted, mem};
use crate::abi::Status;

type R = wasmtime::Result<i32>;

pub(super) fn register(r: &mut Registry) {
    r.func("env", "proxy_get_property", get_property);
    r.func("env", "proxy_set_property", set_property);
}

fn get_property(mut c: C<'_>, pp: i32, pl: i32, vpp: i32, vlp: i32) -> R {
    check_restricted(&c, "proxy_get_property")?;
    let Some(path) = mem::read(&c, pp, pl) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    match crate::properties::get(c.data(), &path) {
        Ok(v) => Ok(mem::copy_out(&mut c, &v.serialize(), vpp, vlp)?.code()),
        Err(s) => Ok(s.code()),
    }
}

fn set_property(mut c: C<'_>, pp: i32, pl: i32, vp: i32, vl: i32) -> R {
    check_restricted(&c, "proxy_set_property")?;
    let (Some(path), Some(value)) = (mem::read(&c, pp, pl), mem::read(&c, vp, vl)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let st = c.data_mut();
    let ctx = st.ctx();
    // Stored as filter state `wasm.<path>` on the stream; a root context has no stream info.
    match st.streams.get_mut(&ctx) {
        Some(s) => {
            let key = format!("wasm.{}", String::from_utf8_lossy(&path));
            s.info.filter_state.insert(key, value);
            Ok(Status::Ok.code())
        }
        None => Ok(Status::NotFound.code()),
    }
}
