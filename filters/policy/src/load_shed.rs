//! Load shedding: an adaptive concurrency limit from observed latency, and admission by
//! criticality under that limit.
//!
//! - [`gradient`]: the limit algorithm (no probe blackout, no re-baselining under overload).
//! - [`criticality`]: request classes and per-class admission thresholds.

pub mod config;
pub mod criticality;
pub mod gradient;
pub mod shared;
pub mod worker;

#[cfg(test)]
mod sim_tests;
