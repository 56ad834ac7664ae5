//! One `ShouldRateLimit` call: which limits apply, what the storage says, and the response.
//! The rules are in the crate docs ("Matching and answers").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use limitador::counter::Counter;
use limitador::limit::Context;

use crate::limits::{LimitDef, Limits};
use crate::proto::rls::rate_limit_response::rate_limit::Unit;
use crate::proto::rls::rate_limit_response::{Code, DescriptorStatus, RateLimit};
use crate::proto::rls::{RateLimitRequest, RateLimitResponse};
use crate::storage::{Backend, CounterState, StorageError};

/// A counter this request touches, and the limit it belongs to.
struct Hit<'a> {
    counter: Counter,
    def: &'a LimitDef,
}

/// Answers one request against `limits`, counting in `backend`.
pub(crate) async fn should_rate_limit(
    limits: &Limits,
    backend: &Backend,
    request: &RateLimitRequest,
) -> Result<RateLimitResponse, StorageError> {
    if request.domain.is_empty() {
        return Ok(RateLimitResponse {
            overall_code: Code::Unknown.into(),
            ..RateLimitResponse::default()
        });
    }
    let delta = u64::from(request.hits_addend.max(1));
    let ctx = context(request);
    let hits = matching_counters(limits.namespace(&request.domain), &ctx);
    let counters: Vec<Counter> = hits.iter().map(|h| h.counter.clone()).collect();
    let outcome = backend.check_and_update(&counters, delta).await?;
    let views: Vec<CounterView<'_>> = hits
        .iter()
        .zip(&outcome.states)
        .map(|(hit, state)| CounterView::new(hit.def, *state, delta, outcome.admitted))
        .collect();
    let statuses = (0..request.descriptors.len())
        .map(|i| descriptor_status(&views, i))
        .collect();
    Ok(RateLimitResponse {
        overall_code: if outcome.admitted {
            Code::Ok.into()
        } else {
            Code::OverLimit.into()
        },
        statuses,
        ..RateLimitResponse::default()
    })
}

/// Binds the descriptors as Limitador does: `descriptors[i][key] = value`.
fn context(request: &RateLimitRequest) -> Context<'static> {
    let descriptors = request
        .descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect::<HashMap<_, _>>()
        })
        .collect();
    let mut ctx = Context::default();
    ctx.list_binding("descriptors".to_owned(), descriptors);
    ctx
}

fn matching_counters<'a>(limits: &'a [Arc<LimitDef>], ctx: &Context<'_>) -> Vec<Hit<'a>> {
    limits
        .iter()
        .filter(|def| {
            def.conditions
                .iter()
                .all(|p| matches!(p.test(ctx), Ok(true)))
        })
        .filter_map(|def| {
            // `Ok(None)`: a variable is missing (the limit does not apply); `Err`: a variable
            // failed to evaluate, treated the same.
            let counter = Counter::new(Arc::clone(&def.limit), ctx).ok().flatten()?;
            Some(Hit { counter, def })
        })
        .collect()
}

/// One counter after this request.
struct CounterView<'a> {
    def: &'a LimitDef,
    over: bool,
    remaining_after: u64,
    expires_in: Duration,
}

impl<'a> CounterView<'a> {
    fn new(def: &'a LimitDef, state: CounterState, delta: u64, admitted: bool) -> Self {
        let remaining_after = if admitted {
            state.remaining_before.saturating_sub(delta)
        } else {
            state.remaining_before
        };
        Self {
            def,
            over: state.remaining_before < delta,
            remaining_after,
            expires_in: state.expires_in,
        }
    }

    fn reads(&self, descriptor: usize) -> bool {
        self.def.descriptors.is_empty() || self.def.descriptors.contains(&descriptor)
    }
}

fn descriptor_status(views: &[CounterView<'_>], descriptor: usize) -> DescriptorStatus {
    // The most constrained: over the limit first, then the least remaining, then the one
    // resetting last.
    let Some(view) = views.iter().filter(|v| v.reads(descriptor)).min_by(|a, b| {
        b.over
            .cmp(&a.over)
            .then(a.remaining_after.cmp(&b.remaining_after))
            .then(b.expires_in.cmp(&a.expires_in))
    }) else {
        return DescriptorStatus {
            code: Code::Ok.into(),
            ..DescriptorStatus::default()
        };
    };
    DescriptorStatus {
        code: if view.over {
            Code::OverLimit.into()
        } else {
            Code::Ok.into()
        },
        current_limit: Some(rate_limit(view.def)),
        limit_remaining: saturate(view.remaining_after),
        duration_until_reset: Some(duration(view.expires_in)),
        quota: None,
    }
}

/// The limit in RLS terms: `max_value` per unit when `seconds` is exactly one unit (1, 60,
/// 3600 or 86400), else `UNKNOWN` (RLS units cannot express other windows).
fn rate_limit(def: &LimitDef) -> RateLimit {
    let unit = match def.window().as_secs() {
        1 => Unit::Second,
        60 => Unit::Minute,
        3600 => Unit::Hour,
        86_400 => Unit::Day,
        _ => Unit::Unknown,
    };
    RateLimit {
        name: def.name().unwrap_or_default().to_owned(),
        requests_per_unit: saturate(def.max_value()),
        unit: unit.into(),
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below 10^9 by construction.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
