//! A token bucket refilled lazily from elapsed time (like Envoy's timer-less
//! `AtomicTokenBucket`): `max_tokens` capacity, `tokens_per_fill` added per `fill_interval`,
//! continuously. A full bucket admits a burst of `max_tokens`; then `tokens_per_fill` per
//! `fill_interval` on average. So over any period `t`, at most `max_tokens + rate × t` requests
//! are admitted.

/// Bucket parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    /// Capacity (the burst).
    pub max_tokens: u32,
    /// Tokens added per `fill_interval_ns`.
    pub tokens_per_fill: u32,
    /// Refill period (ns).
    pub fill_interval_ns: u64,
}

impl Spec {
    /// Tokens per nanosecond.
    pub fn rate_per_ns(&self) -> f64 {
        f64::from(self.tokens_per_fill) / crate::num::u64_f64(self.fill_interval_ns.max(1))
    }

    /// Nanoseconds until `tokens` have accrued from empty.
    pub fn time_for(&self, tokens: f64) -> u64 {
        let ns = tokens / self.rate_per_ns();
        if ns.is_finite() && ns > 0.0 {
            crate::num::ceil_u64(ns)
        } else {
            0
        }
    }
}

/// Bucket state, as stored in shared data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens at `at_ns`.
    pub tokens: f64,
    /// When `tokens` was computed (monotonic ns).
    pub at_ns: u64,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(spec: &Spec, now_ns: u64) -> Self {
        Self {
            tokens: f64::from(spec.max_tokens),
            at_ns: now_ns,
        }
    }

    /// The bucket refilled up to `now` (time never runs backwards here: an earlier `now`
    /// leaves it unchanged).
    pub fn refilled(&self, spec: &Spec, now_ns: u64) -> Self {
        let elapsed = now_ns.saturating_sub(self.at_ns);
        let tokens = (self.tokens + crate::num::u64_f64(elapsed) * spec.rate_per_ns())
            .min(f64::from(spec.max_tokens));
        Self {
            tokens,
            at_ns: self.at_ns.max(now_ns),
        }
    }

    /// Takes up to `want` whole tokens (at least one is needed); returns how many were taken
    /// (0 when fewer than one token is available).
    pub fn take(&mut self, want: u32) -> u32 {
        let whole = self.tokens.floor();
        if whole < 1.0 {
            return 0;
        }
        let n = crate::num::floor_u32(whole.min(f64::from(want.max(1))));
        self.tokens -= f64::from(n);
        n
    }

    /// Gives back `n` unused tokens (capped at capacity).
    pub fn give_back(&mut self, spec: &Spec, n: u32) {
        self.tokens = (self.tokens + f64::from(n)).min(f64::from(spec.max_tokens));
    }

    /// Encodes as 16 bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.tokens.to_le_bytes());
        b.copy_from_slice(&self.at_ns.to_le_bytes());
        out
    }

    /// Decodes [`Bucket::encode`]; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let tokens = f64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let at_ns = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        (tokens.is_finite() && tokens >= 0.0 && b.len() == 16).then_some(Self { tokens, at_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    const S: u64 = 1_000_000_000;

    fn spec() -> Spec {
        Spec {
            max_tokens: 100,
            tokens_per_fill: 100,
            fill_interval_ns: S,
        }
    }

    #[test]
    fn burst_then_rate() {
        let s = spec();
        let mut b = Bucket::full(&s, 0);
        assert_eq!(b.take(150), 100);
        assert_eq!(b.take(1), 0);
        b = b.refilled(&s, S / 10);
        assert_eq!(b.take(100), 10);
        b = b.refilled(&s, 100 * S);
        assert_eq!(b.tokens, 100.0);
        assert_eq!(s.time_for(1.0), 10_000_000);
    }

    #[test]
    fn time_going_backwards_changes_nothing() {
        let s = spec();
        let mut b = Bucket::full(&s, 10 * S);
        b.take(100);
        let back = b.refilled(&s, 5 * S);
        assert_eq!((back.tokens, back.at_ns), (0.0, 10 * S));
    }

    /// Property: for any arrival pattern, admitted ≤ max_tokens + rate × elapsed.
    #[test]
    fn admitted_never_exceeds_burst_plus_rate() {
        let s = Spec {
            max_tokens: 20,
            tokens_per_fill: 7,
            fill_interval_ns: 300_000_000,
        };
        for seed in 1..50u64 {
            let mut rng = seed;
            let mut b = Bucket::full(&s, 0);
            let mut now = 0u64;
            let mut admitted = 0u64;
            for _ in 0..2000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                now += rng % 40_000_000;
                b = b.refilled(&s, now);
                admitted += u64::from(b.take(1 + (rng % 3) as u32));
                let bound = 20.0 + crate::num::u64_f64(now) * s.rate_per_ns();
                assert!(
                    admitted as f64 <= bound + 1e-6,
                    "seed {seed}: {admitted} > {bound}"
                );
            }
        }
    }

    #[test]
    fn encoding() {
        let b = Bucket {
            tokens: 3.5,
            at_ns: 77,
        };
        assert_eq!(Bucket::decode(&b.encode()), Some(b));
        assert!(Bucket::decode(&[0; 15]).is_none());
        let mut nan = b.encode();
        nan[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(Bucket::decode(&nan).is_none());
    }
}
