//! `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`, `proxy_get_metric`
//! with Envoy's statuses (see [`crate::metrics`] for the rules).

use super::{C, Registry, check_restricted, mem};
use crate::abi::{MetricType, Status};
use crate::metrics::MetricValue;
use crate::trace::TraceKind;

type R = wasmtime::Result<i32>;

pub(super) fn register(r: &mut Registry) {
    r.func("env", "proxy_define_metric", define);
    r.func("env", "proxy_increment_metric", increment);
    r.func("env", "proxy_record_metric", record);
    r.func("env", "proxy_get_metric", get);
}

fn kind_of(id: u32) -> Option<MetricType> {
    MetricType::from_raw(id & 3)
}

fn define(mut c: C<'_>, ty: i32, name_ptr: i32, name_len: i32, id_ptr: i32) -> R {
    check_restricted(&c, "proxy_define_metric")?;
    let Some(kind) = MetricType::from_raw(ty as u32) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(name) = mem::read_str(&c, name_ptr, name_len) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let st = c.data_mut();
    let slot = &mut st.next_metric[kind as usize];
    *slot = slot.wrapping_add(4);
    let id = *slot;
    st.metric_ids.insert(id, name.clone());
    st.world().metrics.define(kind, &name);
    Ok(if mem::write_u32(&mut c, id_ptr, id) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}

fn trace(c: &C<'_>, name: &str, op: &str, value: i64) {
    let st = c.data();
    let mut w = st.world();
    if w.rec.tracing {
        let t = w.now();
        w.rec.event(
            t,
            &st.vm_name,
            TraceKind::Metric {
                name: name.to_string(),
                op: op.to_string(),
                value,
            },
        );
    }
}

fn increment(c: C<'_>, id: i32, delta: i64) -> R {
    check_restricted(&c, "proxy_increment_metric")?;
    let id = id as u32;
    let kind = kind_of(id);
    let Some(name) = c.data().metric_ids.get(&id).cloned() else {
        return Ok(match kind {
            Some(MetricType::Counter | MetricType::Gauge) => Status::NotFound,
            _ => Status::BadArgument,
        }
        .code());
    };
    let status = {
        let st = c.data();
        let mut w = st.world();
        match (kind, w.metrics.get_mut(&name)) {
            (Some(MetricType::Counter), Some(MetricValue::Counter { value })) => {
                if delta > 0 {
                    *value = value.wrapping_add(delta as u64);
                    Status::Ok
                } else {
                    Status::BadArgument
                }
            }
            (Some(MetricType::Gauge), Some(MetricValue::Gauge { value })) => {
                *value = if delta >= 0 {
                    value.wrapping_add(delta as u64)
                } else {
                    value.wrapping_sub(delta.unsigned_abs())
                };
                Status::Ok
            }
            (Some(MetricType::Counter | MetricType::Gauge), _) => Status::NotFound,
            _ => Status::BadArgument,
        }
    };
    if status == Status::Ok {
        trace(&c, &name, "increment", delta);
    }
    Ok(status.code())
}

fn record(c: C<'_>, id: i32, value: i64) -> R {
    check_restricted(&c, "proxy_record_metric")?;
    let id = id as u32;
    let v = value as u64;
    let Some(name) = c.data().metric_ids.get(&id).cloned() else {
        return Ok(Status::NotFound.code());
    };
    let status = {
        let st = c.data();
        let mut w = st.world();
        match (kind_of(id), w.metrics.get_mut(&name)) {
            // Envoy: record on a counter *adds*.
            (Some(MetricType::Counter), Some(MetricValue::Counter { value })) => {
                *value = value.wrapping_add(v);
                Status::Ok
            }
            (Some(MetricType::Gauge), Some(MetricValue::Gauge { value })) => {
                *value = v;
                Status::Ok
            }
            (Some(MetricType::Histogram), Some(MetricValue::Histogram { samples })) => {
                samples.push(v);
                Status::Ok
            }
            _ => Status::NotFound,
        }
    };
    if status == Status::Ok {
        trace(&c, &name, "record", value);
    }
    Ok(status.code())
}

fn get(mut c: C<'_>, id: i32, ptr: i32) -> R {
    check_restricted(&c, "proxy_get_metric")?;
    let id = id as u32;
    let kind = kind_of(id);
    if !matches!(kind, Some(MetricType::Counter | MetricType::Gauge)) {
        return Ok(Status::BadArgument.code());
    }
    let Some(name) = c.data().metric_ids.get(&id).cloned() else {
        return Ok(Status::NotFound.code());
    };
    let value = match c.data().world().metrics.get(&name) {
        Some(MetricValue::Counter { value } | MetricValue::Gauge { value }) => *value,
        _ => return Ok(Status::NotFound.code()),
    };
    Ok(if mem::write_u64(&mut c, ptr, value) {
        Status::Ok
    } else {
        Status::InvalidMemoryAccess
    }
    .code())
}
