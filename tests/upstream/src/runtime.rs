//! The live form of an [`UpstreamConfig`]: seeded RNGs, the failure-window epoch and the worker
//! slots. A new `Runtime` replaces the old one on every `set_config`; requests keep the one they
//! arrived under.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{Capacity, FailureKind, Latency, MAX_MS, Queue, UpstreamConfig};
use crate::stats::{QueuedGuard, StatsCell};

/// Mixed into the seed for the failure RNG so latency and failure draws are independent streams.
const FAILURE_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) config: UpstreamConfig,
    epoch: Instant,
    latency: LatencyModel,
    latency_rng: Mutex<Xoshiro256PlusPlus>,
    failure_rng: Mutex<Xoshiro256PlusPlus>,
    capacity: Option<Arc<Slots>>,
}

#[derive(Debug)]
enum LatencyModel {
    None,
    Fixed(Duration),
    LogNormal(LogNormal<f64>),
}

/// Worker slots: a fair (FIFO) semaphore plus the count of waiters for the bounded queue.
#[derive(Debug)]
struct Slots {
    config: Capacity,
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Outcome of asking for a worker slot.
#[derive(Debug)]
pub(crate) enum Admission {
    /// In service; the permit (if capacity is limited) must be held until the response ends.
    Admitted(Option<OwnedSemaphorePermit>),
    /// The bounded queue is full.
    QueueFull,
}

impl Runtime {
    /// Builds the runtime for `config`, keeping `previous`'s slots (and their queue) when the
    /// capacity is unchanged so a `set_config` does not briefly double the worker count.
    pub(crate) fn new(config: UpstreamConfig, previous: Option<&Runtime>) -> anyhow::Result<Self> {
        config.validate()?;
        let latency = match config.latency {
            Latency::None => LatencyModel::None,
            Latency::Fixed { ms } => LatencyModel::Fixed(Duration::from_millis(ms)),
            Latency::Lognormal { median_ms, sigma } => {
                LatencyModel::LogNormal(LogNormal::new(median_ms.ln(), sigma)?)
            }
        };
        let capacity = config.capacity.as_ref().map(|capacity| {
            previous
                .and_then(|p| p.capacity.as_ref())
                .filter(|slots| slots.config == *capacity)
                .map_or_else(
                    || {
                        Arc::new(Slots {
                            config: capacity.clone(),
                            semaphore: Arc::new(Semaphore::new(capacity.concurrency)),
                            waiting: AtomicUsize::new(0),
                        })
                    },
                    Arc::clone,
                )
        });
        Ok(Self {
            epoch: Instant::now(),
            latency,
            latency_rng: Mutex::new(Xoshiro256PlusPlus::seed_from_u64(config.seed)),
            failure_rng: Mutex::new(Xoshiro256PlusPlus::seed_from_u64(
                config.seed ^ FAILURE_STREAM,
            )),
            capacity,
            config,
        })
    }

    /// Service time for the next request to get a slot (one latency draw per call).
    pub(crate) fn sample_latency(&self) -> Duration {
        match &self.latency {
            LatencyModel::None => Duration::ZERO,
            LatencyModel::Fixed(d) => *d,
            LatencyModel::LogNormal(dist) => {
                let mut rng = self
                    .latency_rng
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let ms = dist.sample(&mut *rng);
                Duration::try_from_secs_f64(ms / 1000.0)
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_millis(MAX_MS))
            }
        }
    }

    /// Whether the request arriving at `now` fails, and how. Draws from the failure RNG once
    /// per request whenever `failure` is configured, so the sequence of random outcomes does
    /// not depend on windows or timing.
    pub(crate) fn decide_failure(&self, now: Instant) -> Option<FailureKind> {
        let failure = self.config.failure.as_ref()?;
        let draw: f64 = self
            .failure_rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .random();
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        let in_window = failure
            .windows
            .iter()
            .find(|w| u128::from(w.from_ms) <= elapsed && elapsed < u128::from(w.to_ms));
        match in_window {
            Some(window) => Some(window.kind),
            None => (draw < failure.rate).then_some(failure.kind),
        }
    }

    /// Waits (FIFO) for a worker slot, or reports a full bounded queue at once.
    pub(crate) async fn admit(&self, stats: &Arc<StatsCell>) -> anyhow::Result<Admission> {
        let Some(slots) = &self.capacity else {
            return Ok(Admission::Admitted(None));
        };
        // tokio's semaphore hands released permits to waiters first, so this cannot overtake
        // anyone already queued.
        if let Ok(permit) = Arc::clone(&slots.semaphore).try_acquire_owned() {
            return Ok(Admission::Admitted(Some(permit)));
        }
        let limit = match slots.config.queue {
            Queue::Unbounded => usize::MAX,
            Queue::Bounded(limit) => limit,
        };
        let joined = slots
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n.saturating_add(1))
            });
        if joined.is_err() {
            return Ok(Admission::QueueFull);
        }
        let _waiting = Waiting {
            slots,
            _stats: stats.enqueue(),
        };
        let permit = Arc::clone(&slots.semaphore).acquire_owned().await?;
        Ok(Admission::Admitted(Some(permit)))
    }
}

/// Leaves the queue when the request gets its slot or is abandoned while waiting.
struct Waiting<'a> {
    slots: &'a Slots,
    _stats: QueuedGuard,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.slots.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Failure, FailureWindow};

    fn runtime(config: UpstreamConfig) -> Runtime {
        Runtime::new(config, None).unwrap()
    }

    #[test]
    fn lognormal_is_seeded_and_centred_on_the_median() {
        let config = UpstreamConfig {
            seed: 42,
            latency: Latency::Lognormal {
                median_ms: 20.0,
                sigma: 0.25,
            },
            ..UpstreamConfig::default()
        };
        let a = runtime(config.clone());
        let b = runtime(config);
        let mut samples: Vec<Duration> = (0..1001).map(|_| a.sample_latency()).collect();
        let again: Vec<Duration> = (0..1001).map(|_| b.sample_latency()).collect();
        assert_eq!(samples, again);
        samples.sort();
        let median = samples[500].as_secs_f64() * 1000.0;
        assert!((18.0..22.0).contains(&median), "median {median} ms");
    }

    #[tokio::test]
    async fn windows_win_over_rate_and_rate_is_seeded() {
        let failure = Failure {
            rate: 0.3,
            kind: FailureKind::Status(500),
            windows: vec![FailureWindow {
                from_ms: 0,
                to_ms: 1000,
                kind: FailureKind::Reset,
            }],
        };
        let config = UpstreamConfig {
            seed: 9,
            failure: Some(failure),
            ..UpstreamConfig::default()
        };
        let rt = runtime(config.clone());
        assert_eq!(rt.decide_failure(rt.epoch), Some(FailureKind::Reset));
        let later = rt.epoch + Duration::from_secs(2);
        let count = |rt: &Runtime| {
            (0..1000)
                .filter(|_| rt.decide_failure(later).is_some())
                .count()
        };
        let first = count(&runtime(config.clone()));
        assert_eq!(first, count(&runtime(config)));
        assert!((200..400).contains(&first), "{first} of 1000 at rate 0.3");
    }
}
