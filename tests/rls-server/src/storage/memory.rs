//! Counters in this process: limitador's `InMemoryStorage`, used directly through its
//! `CounterStorage` trait. Not through limitador's `RateLimiter`, because that matches limits
//! with `Limit::applies`, which panics on conditions that fail to evaluate (see the crate docs,
//! "Matching and answers"); matching is done in `check` with limitador's own CEL types, and the
//! matched `Counter`s are handed to this storage as `RateLimiter` would.

use std::time::Duration;

use limitador::counter::Counter;
use limitador::storage::in_memory::InMemoryStorage;
use limitador::storage::{Authorization, CounterStorage};

use super::{CounterState, Outcome, StorageError};

pub(crate) struct MemoryCounters {
    storage: InMemoryStorage,
}

impl std::fmt::Debug for MemoryCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCounters").finish_non_exhaustive()
    }
}

impl MemoryCounters {
    pub(crate) fn new(cache_size: u64, limits: &crate::Limits) -> anyhow::Result<Self> {
        let storage = InMemoryStorage::new(cache_size);
        // Limits without variables have one counter each, created up front (limitador's
        // `RateLimiter::add_limit` does the same).
        for def in limits.iter() {
            storage
                .add_counter(&def.limit)
                .map_err(|e| anyhow::anyhow!("registering limit #{}: {e}", def.index))?;
        }
        Ok(Self { storage })
    }

    pub(crate) fn check_and_update(
        &self,
        counters: &[Counter],
        delta: u64,
    ) -> Result<Outcome, StorageError> {
        let mut counters = counters.to_vec();
        let auth = self
            .storage
            .check_and_update(&mut counters, delta)
            .map_err(|e| StorageError(e.to_string()))?;
        let states = counters
            .iter()
            .map(|c| CounterState {
                // limitador annotates every counter with its pre-request values.
                remaining_before: c.remaining().unwrap_or(c.max_value()),
                expires_in: c
                    .expires_in()
                    .unwrap_or_else(|| Duration::from_secs(c.limit().seconds())),
            })
            .collect();
        Ok(Outcome {
            admitted: matches!(auth, Authorization::Ok),
            states,
        })
    }
}
