//! Where the counters live: in this process (limitador's in-memory storage) or in Redis (shared
//! by every server pointing at it).
//!
//! Both are fixed windows that start at a counter's first hit and both are **all or nothing**:
//! a request is admitted only if every counter it touches has room for `hits_addend` more, and
//! then all of them are incremented; a rejected request increments none. That is limitador's
//! in-memory semantics (`check_and_update`), and the Redis script keeps it so the two modes
//! answer the same sequence of requests identically.

use std::time::Duration;

use limitador::counter::Counter;

mod memory;
mod redis;

pub(crate) use memory::MemoryCounters;
pub(crate) use redis::RedisCounters;

/// Which storage a server counts in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// limitador's `InMemoryStorage`: counters of this process only. `cache_size` bounds the
    /// number of per-value (variable) counters kept; the least recently used are evicted past
    /// it, which forgets their count.
    Memory {
        /// Maximum number of per-value counters (see [`Storage::DEFAULT_CACHE_SIZE`]).
        cache_size: u64,
    },
    /// Redis at `url` (e.g. `redis://127.0.0.1:6379`): every server using the same Redis
    /// enforces the same limits together.
    Redis {
        /// The Redis URL.
        url: String,
    },
}

impl Storage {
    /// limitador's default in-memory cache size.
    pub const DEFAULT_CACHE_SIZE: u64 = 10_000;

    /// In memory with [`Storage::DEFAULT_CACHE_SIZE`].
    pub fn memory() -> Self {
        Self::Memory {
            cache_size: Self::DEFAULT_CACHE_SIZE,
        }
    }

    /// In the Redis at `url`.
    pub fn redis(url: impl Into<String>) -> Self {
        Self::Redis { url: url.into() }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Self::memory()
    }
}

/// A counter as it was before this request, as the storage reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CounterState {
    /// `max_value - value` before this request's hits (0 when already past the limit).
    pub remaining_before: u64,
    /// Time left in the counter's window (a full window for a fresh counter).
    pub expires_in: Duration,
}

/// The storage's answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Every counter had room; all were incremented.
    pub admitted: bool,
    /// One state per counter, in the order given.
    pub states: Vec<CounterState>,
}

/// A storage failure (Redis unreachable, a script error, ...); answered as gRPC UNAVAILABLE
/// so the client applies its failure mode.
#[derive(Debug, thiserror::Error)]
#[error("counter storage: {0}")]
pub(crate) struct StorageError(pub String);

/// The running storage.
#[derive(Debug)]
pub(crate) enum Backend {
    Memory(MemoryCounters),
    Redis(RedisCounters),
}

impl Backend {
    /// Connects (Redis) or creates (memory) the storage, registering the limits.
    pub(crate) async fn open(storage: &Storage, limits: &crate::Limits) -> anyhow::Result<Self> {
        Ok(match storage {
            Storage::Memory { cache_size } => {
                Self::Memory(MemoryCounters::new(*cache_size, limits)?)
            }
            Storage::Redis { url } => Self::Redis(RedisCounters::connect(url).await?),
        })
    }

    /// Checks every counter for room for `delta` more hits and, if all have it, adds `delta`
    /// to each, atomically.
    pub(crate) async fn check_and_update(
        &self,
        counters: &[Counter],
        delta: u64,
    ) -> Result<Outcome, StorageError> {
        if counters.is_empty() {
            return Ok(Outcome {
                admitted: true,
                states: Vec::new(),
            });
        }
        match self {
            Self::Memory(m) => m.check_and_update(counters, delta),
            Self::Redis(r) => r.check_and_update(counters, delta).await,
        }
    }
}
