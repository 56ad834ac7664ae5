//! State shared by every VM of one simulated Envoy: the clock, the RNG, shared data and queues,
//! metrics, the event queue, the recorder, callout records and foreign-function calls.
//!
//! It lives behind one mutex that host functions hold only briefly and never across a call
//! into a guest.

use crate::callout::CalloutRecord;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rng::Rng;
use crate::sched::Scheduler;
use crate::shared::{SharedData, SharedQueues};
use crate::trace::Recorder;

/// A foreign function call made by the module.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ForeignCall {
    /// Virtual time of the call (ns since start).
    pub t_ns: u64,
    /// VM name.
    pub vm: String,
    /// Context id.
    pub ctx: u32,
    /// Stream id, when called on a stream.
    pub stream: Option<u64>,
    /// Function name.
    pub name: String,
    /// Arguments (lossy UTF-8).
    pub args: String,
}

#[derive(Debug)]
pub(crate) struct Timer {
    pub period_ns: u64,
    pub generation: u64,
}

#[derive(Debug)]
pub(crate) struct World {
    pub clock: Clock,
    pub rng: Rng,
    pub shared: SharedData,
    pub queues: SharedQueues,
    pub metrics: Metrics,
    pub sched: Scheduler,
    pub rec: Recorder,
    pub callouts: Vec<CalloutRecord>,
    /// Callout work created during the current VM call, dispatched after it returns.
    pub outbox: Vec<crate::callout::Outbound>,
    pub foreign: Vec<ForeignCall>,
    pub timers: std::collections::HashMap<(crate::host::VmRef, u32), Timer>,
    pub timer_generation: u64,
    pub host_calls: crate::metrics::HostCalls,
}

impl World {
    pub fn new(seed: u64, wall_start_ns: u64, tracing: bool, log_cap: usize) -> Self {
        Self {
            clock: Clock::new(wall_start_ns),
            rng: Rng::new(seed),
            shared: SharedData::default(),
            queues: SharedQueues::default(),
            metrics: Metrics::default(),
            sched: Scheduler::default(),
            rec: Recorder::new(tracing, log_cap),
            host_calls: crate::metrics::HostCalls::default(),
            callouts: Vec::new(),
            outbox: Vec::new(),
            foreign: Vec::new(),
            timers: std::collections::HashMap::new(),
            timer_generation: 0,
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.elapsed_ns()
    }
}
