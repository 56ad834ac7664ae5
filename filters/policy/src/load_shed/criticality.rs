//! Request criticality and admission by class.
//!
//! Four classes, after Google SRE's criticality (lowest first): `SHEDDABLE`, `SHEDDABLE_PLUS`,
//! `CRITICAL` (the default), `CRITICAL_PLUS`.
//!
//! **Admission by reserved headroom.** Each class may fill the limit only up to what the classes
//! above it are expected to need:
//!
//! ```text
//! threshold(c) = limit − Σ_{k > c} reserve(k)          (threshold of the top class = limit)
//! reserve(k)   = ceil(headroom × smoothed peak in-flight of class k) + 1 if class k was seen
//! admit a request of class c  ⇔  total in-flight < threshold(c)
//! ```
//!
//! Sheddable classes also always leave `critical_floor` (10 %) of the limit free, so critical
//! traffic that has not been seen yet (at start-up, or after a quiet period) still finds room
//! while a flood of sheddable traffic fills everything else.
//!
//! Thresholds never decrease with the class, so whenever a class is being rejected every lower
//! class is being rejected too — a class is shed only when all lower classes already are. A
//! higher class is rejected only when its own in-flight outgrows its reserve (`headroom`, 1.5×
//! its recent peak by default) *and* the limit is full. The limit itself keeps adapting to
//! latency, so reserved-but-unused slots are given back to lower classes as the limit grows.

use serde::Deserialize;

use crate::num::{ceil_u32, floor_u32};

/// A request's criticality, lowest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Criticality {
    /// Shed first (e.g. prefetch, batch).
    Sheddable = 0,
    /// Shed before any critical traffic.
    SheddablePlus = 1,
    /// The default for user-facing traffic.
    #[default]
    Critical = 2,
    /// Shed last.
    CriticalPlus = 3,
}

impl Criticality {
    /// All classes, lowest first.
    pub const ALL: [Self; 4] = [
        Self::Sheddable,
        Self::SheddablePlus,
        Self::Critical,
        Self::CriticalPlus,
    ];

    /// 0 for the lowest class.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sheddable => "sheddable",
            Self::SheddablePlus => "sheddable_plus",
            Self::Critical => "critical",
            Self::CriticalPlus => "critical_plus",
        }
    }

    /// Parses a class name, case-insensitively, with `_` or `-` (`critical-plus`).
    pub fn parse(text: &[u8]) -> Option<Self> {
        let t = core::str::from_utf8(text).ok()?.trim();
        Self::ALL.into_iter().find(|c| {
            let name = c.as_str();
            t.len() == name.len()
                && t.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'-' && b == b'_'))
        })
    }
}

/// Parameters of [`ClassAdmission`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReserveParams {
    /// A class's reserve is this multiple of its smoothed peak in-flight. Default 1.5.
    pub headroom: f64,
    /// Weight that keeps the previous peak when the new one is lower (slow decay). Default 0.8.
    pub decay: f64,
    /// Fraction of the limit sheddable classes never use. Default 0.1.
    pub critical_floor: f64,
}

impl Default for ReserveParams {
    fn default() -> Self {
        Self {
            headroom: 1.5,
            decay: 0.8,
            critical_floor: 0.1,
        }
    }
}

/// Why a request was or was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Admitted; `low_load` when total in-flight (before it) was at most half the limit.
    Yes {
        /// Admitted at low load (its latency is a baseline sample).
        low_load: bool,
    },
    /// Rejected: the class threshold was reached.
    No {
        /// Threshold of the request's class at the time.
        threshold: u32,
    },
}

/// In-flight accounting and class thresholds under a limit (one per worker VM).
#[derive(Clone, Debug, Default)]
pub struct ClassAdmission {
    params: ReserveParams,
    inflight: [u32; 4],
    peak: [u32; 4],
    total_peak: u32,
    smoothed: [f64; 4],
    seen: [bool; 4],
}

impl ClassAdmission {
    /// Empty accounting.
    pub fn new(params: ReserveParams) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// Total requests in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight.iter().fold(0u32, |a, b| a.saturating_add(*b))
    }

    /// In flight of one class.
    pub fn inflight_of(&self, class: Criticality) -> u32 {
        self.inflight.get(class.index()).copied().unwrap_or(0)
    }

    /// Peak total in-flight since the last [`ClassAdmission::end_window`].
    pub fn peak(&self) -> u32 {
        self.total_peak
    }

    fn reserve(&self, class: usize) -> u32 {
        match (self.seen.get(class), self.smoothed.get(class)) {
            (Some(true), Some(s)) => ceil_u32(self.params.headroom * s).saturating_add(1),
            _ => 0,
        }
    }

    /// Admission threshold of `class` under `limit`.
    pub fn threshold(&self, class: Criticality, limit: u32) -> u32 {
        let above = (class.index().saturating_add(1)..4)
            .map(|k| self.reserve(k))
            .fold(0u32, u32::saturating_add);
        let threshold = limit.saturating_sub(above);
        if class < Criticality::Critical {
            let cap = floor_u32(f64::from(limit) * (1.0 - self.params.critical_floor));
            threshold.min(cap)
        } else {
            threshold
        }
    }

    /// Decides one request of `class` under `limit`; on admission counts it in flight. The
    /// admission is `low_load` when the total in flight before it was at most `low_load`.
    pub fn try_admit(&mut self, class: Criticality, limit: u32, low_load: f64) -> Admit {
        let i = class.index();
        if let Some(seen) = self.seen.get_mut(i) {
            *seen = true;
        }
        let total = self.inflight();
        let threshold = self.threshold(class, limit);
        if total >= threshold {
            return Admit::No { threshold };
        }
        if let Some(n) = self.inflight.get_mut(i) {
            *n = n.saturating_add(1);
            if let Some(p) = self.peak.get_mut(i) {
                *p = (*p).max(*n);
            }
        }
        self.total_peak = self.total_peak.max(total.saturating_add(1));
        Admit::Yes {
            low_load: f64::from(total) <= low_load,
        }
    }

    /// Counts a request of `class` in flight without a decision (dry run).
    pub fn force_admit(&mut self, class: Criticality) {
        let total = self.inflight();
        if let Some(n) = self.inflight.get_mut(class.index()) {
            *n = n.saturating_add(1);
        }
        self.total_peak = self.total_peak.max(total.saturating_add(1));
    }

    /// Counts a request of `class` out of flight (it completed or was cancelled).
    pub fn release(&mut self, class: Criticality) {
        if let Some(n) = self.inflight.get_mut(class.index()) {
            *n = n.saturating_sub(1);
        }
    }

    /// Ends an accounting window: folds per-class peaks into the reserves and starts new peaks
    /// from what is in flight now.
    pub fn end_window(&mut self) {
        for k in 0..4 {
            if let (Some(s), Some(p), Some(now)) = (
                self.smoothed.get_mut(k),
                self.peak.get_mut(k),
                self.inflight.get(k),
            ) {
                let peak = f64::from(*p);
                *s = if peak >= *s {
                    peak
                } else {
                    *s * self.params.decay + peak * (1.0 - self.params.decay)
                };
                *p = *now;
            }
        }
        self.total_peak = self.inflight();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;
    use Criticality::*;

    #[test]
    fn parse_names() {
        assert_eq!(Criticality::parse(b"CRITICAL_PLUS"), Some(CriticalPlus));
        assert_eq!(Criticality::parse(b" sheddable-plus "), Some(SheddablePlus));
        assert_eq!(Criticality::parse(b"Critical"), Some(Critical));
        assert_eq!(Criticality::parse(b"critical_plus_x"), None);
        assert_eq!(Criticality::parse(&[0xff]), None);
        assert_eq!(Criticality::default(), Critical);
        assert!(Sheddable < SheddablePlus && SheddablePlus < Critical && Critical < CriticalPlus);
    }

    #[test]
    fn without_higher_classes_a_class_uses_the_whole_limit() {
        let mut a = ClassAdmission::new(ReserveParams::default());
        for _ in 0..10 {
            assert!(matches!(a.try_admit(Critical, 10, 5.0), Admit::Yes { .. }));
        }
        assert_eq!(a.try_admit(Critical, 10, 5.0), Admit::No { threshold: 10 });
        assert_eq!(a.inflight(), 10);
    }

    #[test]
    fn sheddable_classes_leave_the_critical_floor_free() {
        let mut a = ClassAdmission::new(ReserveParams::default());
        for _ in 0..18 {
            assert!(matches!(
                a.try_admit(Sheddable, 20, 10.0),
                Admit::Yes { .. }
            ));
        }
        assert_eq!(
            a.try_admit(SheddablePlus, 20, 10.0),
            Admit::No { threshold: 18 }
        );
        assert!(matches!(a.try_admit(Critical, 20, 10.0), Admit::Yes { .. }));
    }

    #[test]
    fn higher_classes_keep_their_reserve() {
        let mut a = ClassAdmission::new(ReserveParams::default());
        // A window where critical peaked at 4 in flight.
        for _ in 0..4 {
            a.try_admit(Critical, 100, f64::from(100) / 2.0);
        }
        for _ in 0..4 {
            a.release(Critical);
        }
        a.end_window();
        // reserve(critical) = ceil(1.5 * 4) + 1 = 7: sheddable may fill 20 - 7 = 13.
        assert_eq!(a.threshold(Sheddable, 20), 13);
        let mut admitted = 0;
        while let Admit::Yes { .. } = a.try_admit(Sheddable, 20, f64::from(20) / 2.0) {
            admitted += 1;
        }
        assert_eq!(admitted, 13);
        // Critical still gets its reserve.
        for _ in 0..7 {
            assert!(matches!(
                a.try_admit(Critical, 20, f64::from(20) / 2.0),
                Admit::Yes { .. }
            ));
        }
        assert_eq!(
            a.try_admit(Critical, 20, f64::from(20) / 2.0),
            Admit::No { threshold: 20 }
        );
    }

    #[test]
    fn low_load_flag_marks_admissions_at_half_the_limit_or_less() {
        let mut a = ClassAdmission::new(ReserveParams::default());
        let flags: Vec<bool> = (0..8)
            .map(|_| {
                matches!(
                    a.try_admit(Critical, 8, f64::from(8) / 2.0),
                    Admit::Yes { low_load: true }
                )
            })
            .collect();
        assert_eq!(flags, [true, true, true, true, true, false, false, false]);
        assert_eq!(a.peak(), 8);
    }

    #[test]
    fn reserves_decay_slowly() {
        let mut a = ClassAdmission::new(ReserveParams::default());
        for _ in 0..10 {
            a.try_admit(CriticalPlus, 100, f64::from(100) / 2.0);
        }
        for _ in 0..10 {
            a.release(CriticalPlus);
        }
        a.end_window();
        assert_eq!(a.threshold(Critical, 100), 100 - 16);
        a.end_window(); // peak 0: smoothed 10 -> 8
        assert_eq!(a.threshold(Critical, 100), 100 - 13);
    }

    #[test]
    fn release_never_underflows() {
        let mut a = ClassAdmission::new(ReserveParams::default());
        a.release(Critical);
        assert_eq!(a.inflight(), 0);
    }
}
