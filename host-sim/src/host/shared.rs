//! Shared data and shared queue host functions (rules in [`crate::shared`]).

use super::{C, Registry, check_restricted, mem};
use crate::abi::Status;
use crate::sched::Event;

type R = wasmtime::Result<i32>;

pub(super) fn register(r: &mut Registry) {
    r.func("env", "proxy_get_shared_data", get_shared_data);
    r.func("env", "proxy_set_shared_data", set_shared_data);
    r.func("env", "proxy_register_shared_queue", register_queue);
    r.func("env", "proxy_resolve_shared_queue", resolve_queue);
    r.func("env", "proxy_enqueue_shared_queue", enqueue);
    r.func("env", "proxy_dequeue_shared_queue", dequeue);
}

fn get_shared_data(mut c: C<'_>, kp: i32, kl: i32, vpp: i32, vlp: i32, cas_ptr: i32) -> R {
    check_restricted(&c, "proxy_get_shared_data")?;
    let Some(key) = mem::read(&c, kp, kl) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let found = {
        let st = c.data();
        let vm_id = st.cfg.vm_id.clone();
        st.world().shared.get(&vm_id, &key)
    };
    let Some((value, cas)) = found else {
        return Ok(Status::NotFound.code());
    };
    let s = mem::copy_out(&mut c, &value, vpp, vlp)?;
    if s != Status::Ok {
        return Ok(s.code());
    }
    Ok(if mem::write_u32(&mut c, cas_ptr, cas) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

fn set_shared_data(c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32) -> R {
    check_restricted(&c, "proxy_set_shared_data")?;
    let (Some(key), Some(value)) = (mem::read(&c, kp, kl), mem::read(&c, vp, vl)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let st = c.data();
    let vm_id = st.cfg.vm_id.clone();
    Ok(st
        .world()
        .shared
        .set(&vm_id, &key, &value, cas as u32)
        .code())
}

fn register_queue(mut c: C<'_>, np: i32, nl: i32, token_ptr: i32) -> R {
    check_restricted(&c, "proxy_register_shared_queue")?;
    let Some(name) = mem::read_str(&c, np, nl) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let token = {
        let st = c.data();
        // A stream context registers on behalf of its root context (on_queue_ready is a root
        // callback); the last registrant becomes the owner.
        let owner_ctx = st.root_of(st.ctx());
        let vm_id = st.cfg.vm_id.clone();
        let vm = st.vm;
        st.world().queues.register(&vm_id, &name, vm, owner_ctx)
    };
    Ok(if mem::write_u32(&mut c, token_ptr, token) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

fn resolve_queue(mut c: C<'_>, vp: i32, vl: i32, np: i32, nl: i32, token_ptr: i32) -> R {
    check_restricted(&c, "proxy_resolve_shared_queue")?;
    let (Some(vm_id), Some(name)) = (mem::read_str(&c, vp, vl), mem::read_str(&c, np, nl)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let token = {
        let st = c.data();
        // An empty vm_id means "my own vm_id".
        let vm_id = if vm_id.is_empty() {
            st.cfg.vm_id.clone()
        } else {
            vm_id
        };
        st.world().queues.resolve(&vm_id, &name)
    };
    let Some(token) = token else {
        return Ok(Status::NotFound.code());
    };
    Ok(if mem::write_u32(&mut c, token_ptr, token) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

fn enqueue(c: C<'_>, token: i32, vp: i32, vl: i32) -> R {
    check_restricted(&c, "proxy_enqueue_shared_queue")?;
    let Some(value) = mem::read(&c, vp, vl) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let st = c.data();
    let mut w = st.world();
    match w.queues.enqueue(token as u32, &value) {
        Ok((owner, root)) => {
            // Posted to the owner's dispatcher: runs after the current callback.
            let now = w.now();
            w.sched.at(
                now,
                Event::QueueReady {
                    vm: owner,
                    root,
                    token: token as u32,
                },
            );
            Ok(Status::Ok.code())
        }
        Err(s) => Ok(s.code()),
    }
}

fn dequeue(mut c: C<'_>, token: i32, vpp: i32, vlp: i32) -> R {
    check_restricted(&c, "proxy_dequeue_shared_queue")?;
    let item = c.data().world().queues.dequeue(token as u32);
    match item {
        Ok(v) => Ok(mem::copy_out(&mut c, &v, vpp, vlp)?.code()),
        Err(s) => Ok(s.code()),
    }
}
