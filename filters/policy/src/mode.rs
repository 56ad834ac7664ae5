//! `mode: enforce | dry_run`, the switch every meshguard filter has.
//!
//! Dry run is how a platform team rolls a policy out: the filter decides, counts and logs exactly
//! as it would in enforce mode, but never rejects or reroutes. Flipping to `enforce` then changes
//! nothing but the action.

use serde::Deserialize;

/// Whether a filter acts on its decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decide and act (the default).
    #[default]
    Enforce,
    /// Decide, count and log; never reject, reroute or modify the request.
    DryRun,
}

impl Mode {
    /// True when decisions are acted on.
    pub const fn enforces(self) -> bool {
        matches!(self, Self::Enforce)
    }

    /// The name used in config, logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry_run",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn defaults_to_enforce() {
        assert_eq!(Mode::default(), Mode::Enforce);
        assert!(Mode::default().enforces());
    }

    #[test]
    fn parses_snake_case_names_only() {
        assert_eq!(
            serde_json::from_str::<Mode>("\"dry_run\"").unwrap(),
            Mode::DryRun
        );
        assert_eq!(
            serde_json::from_str::<Mode>("\"enforce\"").unwrap(),
            Mode::Enforce
        );
        assert!(serde_json::from_str::<Mode>("\"DryRun\"").is_err());
        assert!(serde_json::from_str::<Mode>("\"off\"").is_err());
        assert!(!Mode::DryRun.enforces());
        assert_eq!(Mode::DryRun.as_str(), "dry_run");
    }
}
