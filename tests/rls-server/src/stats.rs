//! Counters of what the server answered.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the server has seen and answered since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `ShouldRateLimit` calls received (including faulted ones).
    pub requests: u64,
    /// Answered `OK`.
    pub ok: u64,
    /// Answered `OVER_LIMIT`.
    pub over_limit: u64,
    /// Answered `UNKNOWN` (empty domain).
    pub unknown: u64,
    /// Answered gRPC `UNAVAILABLE` because the counter storage failed.
    pub storage_errors: u64,
    /// Handled by the [`FaultMode`](crate::FaultMode) in force instead (delayed calls are
    /// counted here and also by their answer).
    pub faulted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsCell {
    requests: AtomicU64,
    ok: AtomicU64,
    over_limit: AtomicU64,
    unknown: AtomicU64,
    storage_errors: AtomicU64,
    faulted: AtomicU64,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Request,
    Ok,
    OverLimit,
    Unknown,
    StorageError,
    Faulted,
}

impl StatsCell {
    pub(crate) fn count(&self, event: Event) {
        let cell = match event {
            Event::Request => &self.requests,
            Event::Ok => &self.ok,
            Event::OverLimit => &self.over_limit,
            Event::Unknown => &self.unknown,
            Event::StorageError => &self.storage_errors,
            Event::Faulted => &self.faulted,
        };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: get(&self.requests),
            ok: get(&self.ok),
            over_limit: get(&self.over_limit),
            unknown: get(&self.unknown),
            storage_errors: get(&self.storage_errors),
            faulted: get(&self.faulted),
        }
    }
}
