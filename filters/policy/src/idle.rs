//! The config of a filter whose policy has not landed yet.
//!
//! Until its own issue lands, each of the four filters accepts only `mode` and lets every request
//! through untouched. Unknown fields are rejected, so a config written for a later version fails
//! loudly instead of silently doing nothing.

use serde::Deserialize;

use crate::mode::Mode;

/// `{"mode": "enforce" | "dry_run"}`; everything else is rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdleConfig {
    /// Ignored until the filter has a policy; accepted so rollout configs can be written now.
    pub mode: Mode,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn empty_object_is_default() {
        let c: IdleConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, IdleConfig::default());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<IdleConfig>(r#"{"limit": 3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `limit`"), "{err}");
    }
}
