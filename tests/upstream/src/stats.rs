//! Counters a test reads to see what the upstream saw, kept by RAII guards so every way a
//! request can end (answered, reset, client gone while queued) is counted exactly once.
//!
//! Invariant once traffic stops: `received == completed` and `in_flight == queued == 0`.
//! Control requests (`/_upstream/...`) are not counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Snapshot of the upstream's counters ([`crate::Upstream::stats`], `GET /_upstream/stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests that arrived (headers parsed).
    pub received: u64,
    /// Requests that ended, whatever the outcome (answered, reset, rejected, client gone).
    pub completed: u64,
    /// Requests holding a worker slot now (from slot grant until the response body ends).
    pub in_flight: u64,
    /// Largest `in_flight` seen.
    pub max_in_flight: u64,
    /// Requests waiting in the capacity queue now.
    pub queued: u64,
    /// Requests answered `503` because the bounded queue was full.
    pub queue_full: u64,
    /// Failures injected by the config (`failure.rate` or a window), all kinds.
    pub failures_injected: u64,
    /// Resets injected (config failures of kind `reset` and `x-upstream-reset`).
    pub resets_injected: u64,
    /// Responses by HTTP status (resets before headers have none).
    pub statuses: BTreeMap<u16, u64>,
}

/// Shared, lock-protected counters. The lock is held for a few increments only.
#[derive(Debug, Default)]
pub(crate) struct StatsCell(Mutex<Stats>);

impl StatsCell {
    fn lock(&self) -> MutexGuard<'_, Stats> {
        // A poisoned lock only means another request panicked mid-increment; counters stay usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.lock().clone()
    }

    /// Zeroes the cumulative counters; requests still alive stay counted as received so the
    /// invariant `received == completed` holds again once they end.
    pub(crate) fn reset(&self) {
        let mut stats = self.lock();
        let live = stats.received.saturating_sub(stats.completed);
        *stats = Stats {
            received: live,
            in_flight: stats.in_flight,
            max_in_flight: stats.in_flight,
            queued: stats.queued,
            ..Stats::default()
        };
    }

    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.lock().received += 1;
        RequestGuard(Arc::clone(self))
    }

    pub(crate) fn enqueue(self: &Arc<Self>) -> QueuedGuard {
        self.lock().queued += 1;
        QueuedGuard(Arc::clone(self))
    }

    pub(crate) fn start_service(self: &Arc<Self>) -> InFlightGuard {
        let mut stats = self.lock();
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        InFlightGuard(Arc::clone(self))
    }

    pub(crate) fn record_status(&self, status: u16) {
        *self.lock().statuses.entry(status).or_insert(0) += 1;
    }

    pub(crate) fn record_queue_full(&self) {
        self.lock().queue_full += 1;
    }

    pub(crate) fn record_failure(&self) {
        self.lock().failures_injected += 1;
    }

    pub(crate) fn record_reset(&self) {
        self.lock().resets_injected += 1;
    }
}

/// Counts a request as received; counts it completed when dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<StatsCell>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.lock().completed += 1;
    }
}

/// Counts a request as queued while alive.
#[derive(Debug)]
pub(crate) struct QueuedGuard(Arc<StatsCell>);

impl Drop for QueuedGuard {
    fn drop(&mut self) {
        let mut stats = self.0.lock();
        stats.queued = stats.queued.saturating_sub(1);
    }
}

/// Counts a request as in service while alive.
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<StatsCell>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut stats = self.0.lock();
        stats.in_flight = stats.in_flight.saturating_sub(1);
    }
}

/// Everything a request holds until its response body ends. Field order is drop order: the
/// in-flight count goes down before the slot is handed to the next waiter, and the request is
/// counted completed last, so `max_in_flight` never over-counts.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) _in_flight: InFlightGuard,
    pub(crate) _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(crate) _request: RequestGuard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_each_request_once() {
        let cell = Arc::new(StatsCell::default());
        let request = cell.begin();
        let queued = cell.enqueue();
        assert_eq!(cell.snapshot().queued, 1);
        drop(queued);
        let lease = Lease {
            _in_flight: cell.start_service(),
            _permit: None,
            _request: request,
        };
        let other = cell.begin();
        let other_in_flight = cell.start_service();
        let snapshot = cell.snapshot();
        assert_eq!((snapshot.received, snapshot.in_flight), (2, 2));
        assert_eq!(snapshot.max_in_flight, 2);
        drop(lease);
        drop(other_in_flight);
        cell.reset();
        let snapshot = cell.snapshot();
        assert_eq!((snapshot.received, snapshot.completed), (1, 0));
        assert_eq!((snapshot.in_flight, snapshot.max_in_flight), (0, 0));
        drop(other);
        let snapshot = cell.snapshot();
        assert_eq!((snapshot.received, snapshot.completed), (1, 1));
    }
}
