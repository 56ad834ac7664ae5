//! The event queue of virtual time: ticks, queue notifications, callout responses, upstream
//! responses and timeouts, fired in (time, insertion) order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::callout::{GrpcDelivery, HttpCallOutcome};
use crate::host::VmRef;
use crate::upstream::UpstreamReply;

#[derive(Debug)]
pub(crate) enum Event {
    /// `on_tick` for a root context, if the timer generation still matches.
    Tick {
        vm: VmRef,
        root: u32,
        generation: u64,
    },
    /// `on_queue_ready` on the queue owner.
    QueueReady { vm: VmRef, root: u32, token: u32 },
    /// An http callout finished.
    HttpCallDone {
        vm: VmRef,
        root: u32,
        token: u32,
        outcome: HttpCallOutcome,
    },
    /// A gRPC callout event (metadata, message, close).
    Grpc {
        vm: VmRef,
        root: u32,
        token: u32,
        delivery: GrpcDelivery,
    },
    /// The upstream answers a forwarded request.
    Upstream { stream: u64, reply: UpstreamReply },
    /// The route timeout of a forwarded request.
    RouteTimeout { stream: u64 },
}

struct Entry {
    t_ns: u64,
    seq: u64,
    ev: Event,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.t_ns == o.t_ns && self.seq == o.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: invert so the earliest (then first inserted) pops first.
        (o.t_ns, o.seq).cmp(&(self.t_ns, self.seq))
    }
}

#[derive(Default)]
pub(crate) struct Scheduler {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("pending", &self.heap.len())
            .finish()
    }
}

impl Scheduler {
    pub fn at(&mut self, t_ns: u64, ev: Event) {
        self.seq += 1;
        self.heap.push(Entry {
            t_ns,
            seq: self.seq,
            ev,
        });
    }

    pub fn next_time(&self) -> Option<u64> {
        self.heap.peek().map(|e| e.t_ns)
    }

    /// Pops the next event if it is due at or before `t_ns`.
    pub fn pop_due(&mut self, t_ns: u64) -> Option<(u64, Event)> {
        if self.heap.peek().is_some_and(|e| e.t_ns <= t_ns) {
            self.heap.pop().map(|e| (e.t_ns, e.ev))
        } else {
            None
        }
    }
}
