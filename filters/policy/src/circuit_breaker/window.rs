//! Failure-rate and slow-call-rate windows, shared by all workers.
//!
//! Each worker counts outcomes locally and, once per tick, adds its counts to the shared
//! record of the breaker (one CAS) and evaluates the merged window. The record is a short list
//! of buckets, newest first, each covering `bucket` of time:
//!
//! - **time-based** (`duration`): buckets older than the window are dropped, so the window is
//!   the last `duration` (± one bucket);
//! - **count-based** (`calls`): the newest buckets are kept until they hold at least `calls`
//!   calls, so the window is the last `calls` calls at bucket granularity.
//!
//! A bucket is keyed by absolute time (`now / bucket`), so counts added by different workers in
//! the same period land in the same bucket, and bucket boundaries do not depend on who writes.

/// Counts of one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls with an outcome (success or failure).
    pub calls: u32,
    /// Failures among them.
    pub failures: u32,
    /// Slow calls among them (a call may be both slow and a failure).
    pub slow: u32,
}

impl Counts {
    /// Adds `other`.
    pub fn add(&mut self, other: Counts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.slow = self.slow.saturating_add(other.slow);
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.calls == 0
    }
}

/// How far back the window reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// The last `n` calls (at bucket granularity).
    Calls(u32),
    /// The last `ns` nanoseconds.
    Duration(u64),
}

/// The shared record: buckets newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    buckets: Vec<(u64, Counts)>,
}

/// Buckets a record never exceeds (bounds memory and decoding of foreign data).
pub const MAX_BUCKETS: usize = 64;

impl Window {
    /// Adds `counts` at time `now_ns` into bucket `now / bucket_ns`, then drops what fell out
    /// of `span`.
    pub fn add(&mut self, now_ns: u64, bucket_ns: u64, counts: Counts, span: Span) {
        let index = now_ns.checked_div(bucket_ns).unwrap_or(0);
        match self.buckets.iter_mut().find(|(i, _)| *i == index) {
            Some((_, c)) => c.add(counts),
            None => {
                self.buckets.push((index, counts));
                self.buckets.sort_by_key(|b| core::cmp::Reverse(b.0));
            }
        }
        self.trim(now_ns, bucket_ns, span);
    }

    /// Drops buckets outside `span` (relative to `now_ns`).
    pub fn trim(&mut self, now_ns: u64, bucket_ns: u64, span: Span) {
        let current = now_ns.checked_div(bucket_ns).unwrap_or(0);
        match span {
            Span::Duration(d) => {
                let n = d.checked_div(bucket_ns).unwrap_or(0).max(1);
                self.buckets.retain(|(i, _)| current.saturating_sub(*i) < n);
            }
            Span::Calls(n) => {
                let mut seen = 0u32;
                let mut keep = 0usize;
                for (_, c) in &self.buckets {
                    keep = keep.saturating_add(1);
                    seen = seen.saturating_add(c.calls);
                    if seen >= n {
                        break;
                    }
                }
                self.buckets.truncate(keep);
            }
        }
        self.buckets.truncate(MAX_BUCKETS);
    }

    /// Sum over the window.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for (_, c) in &self.buckets {
            t.add(*c);
        }
        t
    }

    /// Encodes for shared data: u32 n, then (u64 index, u32 calls, u32 failures, u32 slow)*.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.buckets.len().min(MAX_BUCKETS);
        let mut out = Vec::with_capacity(n.saturating_mul(20).saturating_add(4));
        out.extend_from_slice(&u32::try_from(n).unwrap_or(0).to_le_bytes());
        for (i, c) in self.buckets.iter().take(n) {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&c.calls.to_le_bytes());
            out.extend_from_slice(&c.failures.to_le_bytes());
            out.extend_from_slice(&c.slow.to_le_bytes());
        }
        out
    }

    /// Decodes [`Window::encode`]; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let n = usize::try_from(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
        if n > MAX_BUCKETS {
            return None;
        }
        let mut buckets = Vec::with_capacity(n);
        for k in 0..n {
            let at = k.checked_mul(20)?.checked_add(4)?;
            let b = bytes.get(at..at.checked_add(20)?)?;
            let u32_at = |o: usize| -> Option<u32> {
                Some(u32::from_le_bytes(
                    b.get(o..o.checked_add(4)?)?.try_into().ok()?,
                ))
            };
            buckets.push((
                u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
                Counts {
                    calls: u32_at(8)?,
                    failures: u32_at(12)?,
                    slow: u32_at(16)?,
                },
            ));
        }
        Some(Self { buckets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    const MS: u64 = 1_000_000;

    fn c(calls: u32, failures: u32) -> Counts {
        Counts {
            calls,
            failures,
            slow: 0,
        }
    }

    #[test]
    fn time_window_is_correct_across_bucket_boundaries() {
        let span = Span::Duration(1000 * MS);
        let bucket = 100 * MS;
        let mut w = Window::default();
        // 10 buckets of one failure each, at 0..1000 ms.
        for t in 0..10u64 {
            w.add(t * 100 * MS + 50 * MS, bucket, c(1, 1), span);
        }
        assert_eq!(w.total(), c(10, 10));
        // At 1000 ms the first bucket (0..100 ms) leaves the window.
        w.add(1000 * MS, bucket, c(1, 0), span);
        assert_eq!(w.total(), c(10, 9));
        // Two adds in the same bucket from different "workers" merge.
        w.add(1050 * MS, bucket, c(2, 2), span);
        assert_eq!(w.total(), c(12, 11));
        // Long silence: everything old is gone.
        w.trim(5000 * MS, bucket, span);
        assert_eq!(w.total(), Counts::default());
    }

    #[test]
    fn count_window_keeps_the_newest_calls() {
        let span = Span::Calls(100);
        let bucket = 100 * MS;
        let mut w = Window::default();
        for t in 0..10u64 {
            w.add(t * bucket, bucket, c(30, if t < 5 { 30 } else { 0 }), span);
        }
        // Newest buckets until >= 100 calls: 4 buckets of 30, all healthy.
        assert_eq!(w.total(), c(120, 0));
    }

    #[test]
    fn round_trip_and_garbage() {
        let mut w = Window::default();
        w.add(
            123 * MS,
            100 * MS,
            Counts {
                calls: 5,
                failures: 2,
                slow: 1,
            },
            Span::Calls(10),
        );
        let bytes = w.encode();
        assert_eq!(Window::decode(&bytes), Some(w));
        for cut in 0..bytes.len() {
            assert!(Window::decode(&bytes[..cut]).is_none(), "{cut}");
        }
        assert!(Window::decode(&1000u32.to_le_bytes()).is_none());
    }
}
