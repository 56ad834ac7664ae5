//! The concurrency limit: a latency gradient without probe blackouts.
//!
//! Family: Envoy's gradient controller and Netflix Gradient2/Vegas. Once per update interval the
//! limit `L` is compared with what latency says:
//!
//! ```text
//! sample   = percentile(p) of the latency of requests completed in the interval
//! baseline = the same percentile of requests admitted at low load (in-flight ≤ ½·L)
//! g        = tolerance · baseline / sample
//! g < 1  (latency above tolerance):  L ← L + smoothing · (T − L),  T = L·max(g, 0.5)
//!                                     (app-limited: T ≥ 2 × peak in-flight)
//! g ≥ 1  and peak in-flight ≥ ½·L:   L ← L + smoothing · min(√L, L·(g − 1))
//! g ≥ 1  and peak in-flight < ½·L:   hold (app-limited: no evidence that more helps)
//! L clamped to [min_limit, max_limit]
//! ```
//!
//! What makes it different from Envoy's controller:
//!
//! - **No probe blackout.** Envoy pins the limit to `min_concurrency` to measure the no-load
//!   latency, rejecting healthy traffic (6 % of requests at half load in our anchor run). Here
//!   the baseline is measured from live traffic that was admitted at low concurrency: such
//!   requests cannot have queued behind our own admissions. Nothing is ever rejected to
//!   measure it.
//! - **No re-baselining on sustained overload.** Under overload every admission happens near
//!   the limit, so there are no low-load samples and the baseline stays where it was. Envoy's
//!   periodic (and "5 decreases in a row") re-measurement absorbs queueing delay into the
//!   baseline and lets the limit creep up.
//! - **Noise-robust.** A percentile over an interval, a tolerance band (25 % by default) inside
//!   which the limit never shrinks, a clamped and smoothed decrease, and growth that slows as
//!   latency approaches the band, so the limit settles instead of oscillating.
//! - **App-limited aware.** The limit only grows when the peak in-flight reached half of it.
//!
//! Everything is a function of its inputs; time is not even needed (intervals are counted by
//! the caller). Every constant has its default in [`GradientParams::default`].

/// Parameters of [`GradientLimit`]. See the field docs for defaults and meaning.
#[derive(Clone, Debug, PartialEq)]
pub struct GradientParams {
    /// Limit before anything is known. Default 20 (Netflix Gradient2's initial limit).
    pub initial_limit: f64,
    /// Floor of the limit. Default 2.
    pub min_limit: f64,
    /// Ceiling of the limit. Default 1000 (Envoy's `max_concurrency_limit`).
    pub max_limit: f64,
    /// Latency may rise to `baseline × tolerance` before the limit shrinks. Default 1.25
    /// (Envoy's 25 % buffer).
    pub tolerance: f64,
    /// Percentile of latency compared, in (0, 1). Default 0.5.
    pub percentile: f64,
    /// Latency samples a decision needs; at low traffic older intervals are merged in until
    /// there are this many. Default 50 (Envoy's minRTT `request_count`).
    pub min_samples: u64,
    /// Smallest factor one interval may multiply the limit by. Default 0.5.
    pub max_decrease: f64,
    /// Weight of a decrease target (1 = jump to it). Default 0.5.
    pub smoothing: f64,
    /// The limit grows only when peak in-flight ≥ this fraction of it. Default 0.5.
    pub app_limited: f64,
    /// Weight of a new baseline reading (the baseline is a slow average). Default 0.05.
    pub baseline_smoothing: f64,
}

impl Default for GradientParams {
    fn default() -> Self {
        Self {
            initial_limit: 20.0,
            min_limit: 2.0,
            max_limit: 1000.0,
            tolerance: 1.25,
            percentile: 0.5,
            min_samples: 50,
            max_decrease: 0.5,
            smoothing: 0.5,
            app_limited: 0.5,
            baseline_smoothing: 0.05,
        }
    }
}

/// What one interval saw (merged across workers).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Latency percentile of all completed requests, if there were at least `min_samples`.
    pub sample: Option<f64>,
    /// Latency percentile of requests admitted at low load, if there were enough of them.
    pub low_load: Option<f64>,
    /// Peak in-flight during the interval.
    pub peak_inflight: f64,
}

/// Why the limit changed (or did not) in an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not enough samples.
    NoSamples,
    /// Latency within tolerance but in-flight far below the limit.
    AppLimited,
    /// Latency within tolerance and the limit was used: grew.
    Grew,
    /// Latency above tolerance: shrank.
    Shrank,
    /// Clamped at a bound, or no baseline yet.
    Held,
}

/// The limit state. `update` once per interval.
#[derive(Clone, Debug)]
pub struct GradientLimit {
    params: GradientParams,
    limit: f64,
    baseline: Option<f64>,
    last_sample: Option<f64>,
    last_gradient: f64,
}

impl GradientLimit {
    /// A limit at `params.initial_limit`.
    pub fn new(params: GradientParams) -> Self {
        let limit = clamp(params.initial_limit, params.min_limit, params.max_limit);
        Self {
            params,
            limit,
            baseline: None,
            last_sample: None,
            last_gradient: 1.0,
        }
    }

    /// Continues from a state another worker published (leadership moved).
    pub fn resume(&mut self, limit: f64, baseline: f64) {
        self.limit = clamp(limit, self.params.min_limit, self.params.max_limit);
        if baseline.is_finite() && baseline > 0.0 {
            self.baseline = Some(baseline);
        }
    }

    /// The current limit (fractional; admission uses its floor, at least 1).
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// The no-load latency estimate, once known.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }

    /// The last interval's latency sample.
    pub fn sample(&self) -> Option<f64> {
        self.last_sample
    }

    /// The last gradient (`tolerance · baseline / sample`, unclamped), 1.0 before any.
    pub fn gradient(&self) -> f64 {
        self.last_gradient
    }

    /// The parameters.
    pub fn params(&self) -> &GradientParams {
        &self.params
    }

    /// Feeds one interval; returns what changed.
    pub fn update(&mut self, w: &Window) -> Change {
        let p = &self.params;
        if let Some(low) = w.low_load.filter(|v| v.is_finite() && *v > 0.0) {
            self.baseline = Some(match self.baseline {
                None => low,
                Some(b) => b + p.baseline_smoothing * (low - b),
            });
        }
        let Some(sample) = w.sample.filter(|v| v.is_finite() && *v > 0.0) else {
            return Change::NoSamples;
        };
        self.last_sample = Some(sample);
        let Some(baseline) = self.baseline else {
            return Change::Held;
        };
        let g = p.tolerance * baseline / sample;
        self.last_gradient = g;
        let before = self.limit;
        let app_limited = w.peak_inflight < p.app_limited * self.limit;
        let change = if g < 1.0 {
            let mut target = self.limit * g.max(p.max_decrease);
            if app_limited {
                // In-flight is far below the limit, so shrinking below the level where it would
                // bind changes nothing now and only rejects the next burst: at low load a noisy
                // latency reading must not walk the limit down.
                target = target.max(w.peak_inflight / p.app_limited);
            }
            self.limit += p.smoothing * (target - self.limit);
            Change::Shrank
        } else if !app_limited {
            self.limit += p.smoothing * self.limit.sqrt().min(self.limit * (g - 1.0));
            Change::Grew
        } else {
            return Change::AppLimited;
        };
        self.limit = clamp(self.limit, p.min_limit, p.max_limit);
        if self.limit == before {
            Change::Held
        } else {
            change
        }
    }
}

fn clamp(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_nan() { lo } else { v.max(lo).min(hi) }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn window(sample: f64, low: Option<f64>, peak: f64) -> Window {
        Window {
            sample: Some(sample),
            low_load: low,
            peak_inflight: peak,
        }
    }

    #[test]
    fn defaults_are_documented() {
        let p = GradientParams::default();
        assert_eq!(
            (
                p.initial_limit,
                p.min_limit,
                p.max_limit,
                p.tolerance,
                p.percentile
            ),
            (20.0, 2.0, 1000.0, 1.25, 0.5)
        );
        assert_eq!(p.min_samples, 50);
        assert_eq!(
            (p.max_decrease, p.smoothing, p.app_limited),
            (0.5, 0.5, 0.5)
        );
        assert_eq!(p.baseline_smoothing, 0.05);
    }

    #[test]
    fn nothing_changes_without_a_baseline_or_samples() {
        let mut l = GradientLimit::new(GradientParams::default());
        assert_eq!(l.update(&window(50.0, None, 20.0)), Change::Held);
        assert_eq!(l.limit(), 20.0);
        let empty = Window {
            sample: None,
            low_load: None,
            peak_inflight: 0.0,
        };
        assert_eq!(l.update(&empty), Change::NoSamples);
    }

    #[test]
    fn grows_only_when_used() {
        let mut l = GradientLimit::new(GradientParams::default());
        assert_eq!(l.update(&window(20.0, Some(20.0), 3.0)), Change::AppLimited);
        assert_eq!(l.limit(), 20.0);
        assert_eq!(l.update(&window(20.0, Some(20.0), 15.0)), Change::Grew);
        // g = 1.25: growth = smoothing * min(sqrt(20), 20 * 0.25) = 0.5 * sqrt(20).
        assert!((l.limit() - (20.0 + 0.5 * 20f64.sqrt())).abs() < 1e-9);
    }

    #[test]
    fn growth_slows_near_the_tolerance_band() {
        let mut l = GradientLimit::new(GradientParams::default());
        l.update(&window(20.0, Some(20.0), 20.0));
        let mut l2 = l.clone();
        let before = l.limit();
        l.update(&window(24.0, None, 30.0)); // g = 25/24
        l2.update(&window(20.5, None, 30.0)); // g = 25/20.5
        assert!(l.limit() - before < l2.limit() - before);
        assert!(l.limit() - before <= before * (25.0 / 24.0 - 1.0) + 1e-9);
    }

    #[test]
    fn shrinks_smoothly_and_at_most_by_half() {
        let mut l = GradientLimit::new(GradientParams::default());
        l.update(&window(20.0, Some(20.0), 1.0)); // baseline 20, app-limited
        // sample 50: g = 0.5 -> target 10, smoothed halfway -> 15.
        assert_eq!(l.update(&window(50.0, None, 20.0)), Change::Shrank);
        assert!((l.limit() - 15.0).abs() < 1e-9);
        // sample 1000: g clamped at 0.5.
        l.update(&window(1000.0, None, 20.0));
        assert!((l.limit() - 11.25).abs() < 1e-9);
    }

    #[test]
    fn baseline_ignores_overload_and_follows_low_load() {
        let mut l = GradientLimit::new(GradientParams::default());
        l.update(&window(20.0, Some(20.0), 1.0));
        for _ in 0..100 {
            l.update(&window(60.0, None, 20.0)); // sustained overload: no low-load samples
        }
        assert_eq!(l.baseline(), Some(20.0));
        assert_eq!(l.limit(), 2.0); // floor
        // The service got intrinsically slower and load fell: low-load samples say 30.
        for _ in 0..200 {
            l.update(&window(30.0, Some(30.0), 1.0));
        }
        assert!((l.baseline().unwrap() - 30.0).abs() < 0.01);
    }

    /// Property: whatever the sequence of windows, the limit stays within its bounds, and for
    /// one state a higher latency never gives a higher limit (monotone reaction).
    #[test]
    fn random_windows_keep_bounds_and_react_monotonically() {
        let p = GradientParams {
            min_limit: 3.0,
            max_limit: 200.0,
            ..GradientParams::default()
        };
        for seed in 1..200u64 {
            let mut rng = seed;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut l = GradientLimit::new(p.clone());
            for _ in 0..300 {
                let sample = 1.0 + (next() % 100_000) as f64;
                let low = (next() % 3 == 0).then(|| 1.0 + (next() % 50_000) as f64);
                let peak = (next() % 300) as f64;
                let w = window(sample, low, peak);
                // Monotone: the same state with a higher sample never ends higher.
                let mut a = l.clone();
                let mut b = l.clone();
                a.update(&w);
                b.update(&window(sample * 1.5, low, peak));
                assert!(
                    b.limit() <= a.limit() + 1e-9,
                    "seed {seed}: {} > {}",
                    b.limit(),
                    a.limit()
                );
                l.update(&w);
                assert!(
                    (3.0..=200.0).contains(&l.limit()),
                    "seed {seed}: {}",
                    l.limit()
                );
                assert!(l.limit().is_finite());
            }
        }
    }

    #[test]
    fn bounds_hold() {
        let p = GradientParams {
            max_limit: 25.0,
            ..GradientParams::default()
        };
        let mut l = GradientLimit::new(p);
        l.update(&window(10.0, Some(10.0), 1.0));
        for _ in 0..20 {
            l.update(&window(10.0, None, 1000.0));
        }
        assert_eq!(l.limit(), 25.0);
        assert_eq!(l.update(&window(10.0, None, 1000.0)), Change::Held);
    }
}
