//! A fixed-size, mergeable latency histogram.
//!
//! Log-linear buckets (like HdrHistogram with 4 significant bits): values below 32 have a
//! bucket each; above, every power of two is split into 32 buckets, so a bucket is at most
//! ~3 % wide. Recording is O(1) with no allocation (it runs on every request inside Envoy);
//! histograms from several worker VMs merge by adding counts, and serialize sparsely (only
//! non-empty buckets) for shared data.
//!
//! Values are unitless `u64`; meshguard records microseconds. Values beyond the top bucket
//! (2^40 µs ≈ 12.7 days) land in the top bucket.

use core::fmt;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS; // 32 sub-buckets per power of two
const MAX_EXP: u32 = 40;
/// Number of buckets: 32 linear + 32 per power of two from 2^5 to 2^40.
pub const BUCKETS: usize = 32 * 37;

/// A latency histogram with ~3 % bucket precision.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("p50", &self.percentile(0.5))
            .field("p99", &self.percentile(0.99))
            .finish()
    }
}

const LAST: usize = BUCKETS - 1;
#[allow(clippy::cast_possible_truncation)] // compile-time constants, all small
const _: () = assert!(BUCKETS == (SUB as usize) * ((MAX_EXP - SUB_BITS + 1) as usize + 1));

fn index(value: u64) -> usize {
    if value < SUB {
        return usize::try_from(value).unwrap_or(0);
    }
    // value >= 32, so leading_zeros <= 58 and exp is in [5, 63], capped at MAX_EXP.
    let exp = 63u32.saturating_sub(value.leading_zeros()).min(MAX_EXP);
    let value = value.min(u64::MAX >> (63 - MAX_EXP));
    let shift = exp.saturating_sub(SUB_BITS);
    let mantissa = (value >> shift) & (SUB - 1); // position within this power of two
    let bucket = u64::from(shift.saturating_add(1))
        .saturating_mul(SUB)
        .saturating_add(mantissa);
    usize::try_from(bucket).unwrap_or(LAST).min(LAST)
}

/// The midpoint value a bucket stands for.
fn value_of(index: usize) -> u64 {
    let i = u64::try_from(index).unwrap_or(u64::MAX);
    if i < SUB {
        return i;
    }
    let shift = (i / SUB).saturating_sub(1); // exp - SUB_BITS, at most 35
    let mantissa = i % SUB;
    let low = SUB.saturating_add(mantissa) << shift.min(63);
    let half_width = (1u64 << shift.min(63)) / 2;
    low.saturating_add(half_width)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `value` as `n` values (a sample standing for `n` requests).
    pub fn record_n(&mut self, value: u64, n: u32) {
        if let Some(c) = self.counts.get_mut(index(value)) {
            *c = c.saturating_add(n);
            self.total = self.total.saturating_add(u64::from(n));
        }
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        if self.total > 0 {
            self.counts.fill(0);
            self.total = 0;
        }
    }

    /// The value at quantile `q` in `[0, 1]` (bucket midpoint), or `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        // Rank of the wanted value, 1-based: ceil(q * n), at least 1.
        let rank = (q * self.total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(u64::from(*c));
            if seen as f64 >= rank {
                return Some(value_of(i));
            }
        }
        Some(value_of(LAST))
    }

    /// Sparse encoding: u32 count of entries, then (u16 bucket, u32 count) per non-empty bucket,
    /// little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let entries: Vec<(u16, u32)> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .filter_map(|(i, c)| Some((u16::try_from(i).ok()?, *c)))
            .collect();
        let n = u32::try_from(entries.len()).unwrap_or(0);
        out.extend_from_slice(&n.to_le_bytes());
        for (i, c) in entries {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
    }

    /// Decodes what [`Histogram::encode`] wrote; returns the histogram and the bytes used, or
    /// `None` when the input is malformed.
    pub fn decode(input: &[u8]) -> Option<(Self, usize)> {
        let n = u32::from_le_bytes(input.get(..4)?.try_into().ok()?);
        let n = usize::try_from(n).ok()?;
        if n > BUCKETS {
            return None;
        }
        let mut h = Self::new();
        let mut at = 4usize;
        for _ in 0..n {
            let i = u16::from_le_bytes(input.get(at..at.checked_add(2)?)?.try_into().ok()?);
            let c = u32::from_le_bytes(
                input
                    .get(at.checked_add(2)?..at.checked_add(6)?)?
                    .try_into()
                    .ok()?,
            );
            at = at.checked_add(6)?;
            let slot = h.counts.get_mut(usize::from(i))?;
            *slot = slot.saturating_add(c);
            h.total = h.total.saturating_add(u64::from(c));
        }
        Some((h, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn small_values_are_exact() {
        for v in 0..32 {
            assert_eq!(value_of(index(v)), v);
        }
    }

    #[test]
    fn buckets_are_within_three_percent() {
        let mut v = 32u64;
        while v < (1 << 40) {
            let back = value_of(index(v));
            let err = (back as f64 - v as f64).abs() / v as f64;
            assert!(err <= 0.032, "{v} -> {back} ({err})");
            v = v + v / 7 + 1;
        }
        // Indexes are monotone.
        let mut last = 0;
        for v in (0..100_000u64).step_by(13) {
            let i = index(v);
            assert!(i >= last);
            last = i;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(0.5), None);
        for v in 1..=100u64 {
            h.record(v * 1000);
        }
        let p50 = h.percentile(0.5).unwrap() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.03, "{p50}");
        let p99 = h.percentile(0.99).unwrap() as f64;
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.03, "{p99}");
        assert!(h.percentile(0.0).unwrap() <= h.percentile(1.0).unwrap());
        assert_eq!(h.count(), 100);
    }

    #[test]
    fn merge_and_round_trip() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in [5u64, 100, 20_000, 20_000, 1 << 35] {
            a.record(v);
            b.record(v * 3);
        }
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.count(), 10);
        let mut buf = vec![1, 2, 3];
        m.encode(&mut buf);
        let (back, used) = Histogram::decode(&buf[3..]).unwrap();
        assert_eq!(used, buf.len() - 3);
        assert_eq!(back, m);
        m.clear();
        assert!(m.is_empty());
    }

    #[test]
    fn malformed_input_is_rejected() {
        let mut buf = Vec::new();
        let mut h = Histogram::new();
        h.record(77);
        h.encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(Histogram::decode(&buf[..cut]).is_none(), "cut {cut}");
        }
        let mut bad = 1u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&u16::MAX.to_le_bytes());
        bad.extend_from_slice(&1u32.to_le_bytes());
        assert!(Histogram::decode(&bad).is_none());
        assert!(Histogram::decode(&u32::MAX.to_le_bytes()).is_none());
    }
}
