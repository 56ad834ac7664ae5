//! Per-route behaviour from route metadata.
//!
//! A route can carry `metadata.filter_metadata.meshguard.<filter>: <value>`; a filter whose
//! config has a `per_route` section reads it (one property read per request, only then):
//!
//! - `"off"` — the filter does nothing on this route;
//! - `"on"` — the filter runs with its top-level settings;
//! - any other string — the name of a *profile* in the filter's config (filters that have
//!   profiles, e.g. a tighter rate limit for `/checkout`);
//! - absent — `per_route.default` decides (`on` unless set to `off`, e.g. a breaker on one
//!   dependency only).
//!
//! Profiles live in the filter's config, so they are validated when Envoy loads the config;
//! route metadata only selects one by name (an unknown name is logged and treated as `on`).

use serde::Deserialize;

/// `per_route` in a filter's config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerRoute {
    /// What a route without metadata for this filter gets. Default `on`.
    #[serde(default)]
    pub default: Switch,
}

/// On or off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// Run.
    #[default]
    On,
    /// Do nothing.
    Off,
}

/// What a route asks of a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Run with the top-level settings.
    On,
    /// Do nothing.
    Off,
    /// Run with this profile.
    Profile(String),
}

impl PerRoute {
    /// The choice for a route whose metadata value for this filter is `value` (`None`: absent).
    pub fn choose(&self, value: Option<&[u8]>) -> Choice {
        match value.map(<[u8]>::trim_ascii) {
            None | Some(b"") => match self.default {
                Switch::On => Choice::On,
                Switch::Off => Choice::Off,
            },
            Some(b"off") => Choice::Off,
            Some(b"on") => Choice::On,
            Some(other) => Choice::Profile(String::from_utf8_lossy(other).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn choices() {
        let on = PerRoute::default();
        assert_eq!(on.choose(None), Choice::On);
        assert_eq!(on.choose(Some(b"off")), Choice::Off);
        assert_eq!(
            on.choose(Some(b" checkout ")),
            Choice::Profile("checkout".into())
        );
        let off: PerRoute = serde_json::from_str(r#"{"default": "off"}"#).unwrap();
        assert_eq!(off.choose(None), Choice::Off);
        assert_eq!(off.choose(Some(b"on")), Choice::On);
        assert!(serde_json::from_str::<PerRoute>(r#"{"default": "maybe"}"#).is_err());
    }
}
