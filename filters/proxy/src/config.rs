//! Typed JSON config for meshguard filters.
//!
//! A filter's `configuration` in Envoy is a `google.protobuf.StringValue` holding JSON. It is
//! parsed into the filter's config type (serde, `deny_unknown_fields`, durations as strings), and
//! an error names the field by its JSON path, e.g. `rules[2].fill_interval: unknown duration
//! unit "sec"`. [`configure`] is what a root context's `on_configure` calls: on error it logs one
//! line and returns `None`, and the filter returns `false`, so Envoy rejects the config instead
//! of running a filter that does something nobody asked for.

use core::fmt;

use serde::de::DeserializeOwned;

/// Why a filter's JSON config was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending field (`.` when the document itself is wrong).
    pub path: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a filter config. Absent or blank config means `{}` (all defaults).
///
/// # Errors
/// [`ConfigError`] with the JSON path of the first bad field and the reason.
///
/// # Examples
/// ```
/// use meshguard_policy::idle::IdleConfig;
/// use meshguard_proxy::parse_config;
/// assert!(parse_config::<IdleConfig>(b"").is_ok());
/// let err = parse_config::<IdleConfig>(br#"{"mode": "off"}"#).unwrap_err();
/// assert_eq!(err.path, "mode");
/// ```
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = match core::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigError {
                path: ".".into(),
                reason: format!("config is not UTF-8 ({e})"),
            });
        }
    };
    let text = if text.trim().is_empty() { "{}" } else { text };
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            path,
            reason: strip_position(&inner.to_string()),
        }
    })?;
    de.end().map_err(|e| ConfigError {
        path: ".".into(),
        reason: strip_position(&e.to_string()),
    })?;
    Ok(value)
}

/// serde_json appends " at line 1 column 17"; keep it only when it helps (multi-line configs).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line 1 column ") {
        Some(i) => message.get(..i).unwrap_or(message).to_owned(),
        None => message.to_owned(),
    }
}

/// Parses the plugin configuration for `filter` and logs one line on error.
///
/// Returns `None` when the config is invalid; the caller's `on_configure` must then return
/// `false`.
pub fn configure<T: DeserializeOwned>(filter: &str, bytes: Option<&[u8]>) -> Option<T> {
    match parse_config(bytes.unwrap_or_default()) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("meshguard {filter}: invalid configuration: {e}");
            None
        }
    }
}

/// Parses and validates a plugin configuration in two phases: the raw JSON shape (`Raw`,
/// serde, unknown fields rejected), then the domain rules (`TryFrom<Raw>`). Logs one line and
/// returns `None` on the first error of either phase.
pub fn configure_validated<Raw, T>(filter: &str, bytes: Option<&[u8]>) -> Option<T>
where
    Raw: DeserializeOwned,
    T: TryFrom<Raw, Error = meshguard_policy::invalid::Invalid>,
{
    let raw: Raw = configure(filter, bytes)?;
    match T::try_from(raw) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("meshguard {filter}: invalid configuration: {e}");
            None
        }
    }
}

/// Sets the root context's tick period once a filter is configured; logs one line and returns
/// false when the host refuses (then `on_configure` fails and Envoy rejects the config).
pub fn start_ticking(filter: &str, period: core::time::Duration) -> bool {
    match crate::abi::set_tick_period(period) {
        Ok(()) => true,
        Err(e) => {
            log::error!("meshguard {filter}: cannot set the tick period: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use meshguard_policy::{ConfigDuration, Mode};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Rule {
        name: String,
        fill_interval: ConfigDuration,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        mode: Mode,
        timeout: ConfigDuration,
        rules: Vec<Rule>,
    }

    #[test]
    fn blank_is_defaults() {
        assert_eq!(parse_config::<Cfg>(b"").unwrap(), Cfg::default());
        assert_eq!(parse_config::<Cfg>(b"  \n").unwrap(), Cfg::default());
    }

    #[test]
    fn parses_nested_fields() {
        let c: Cfg = parse_config(
            br#"{"mode":"dry_run","timeout":"20ms","rules":[{"name":"a","fill_interval":"1s"}]}"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::DryRun);
        assert_eq!(c.timeout.get(), Duration::from_millis(20));
        assert_eq!(c.rules[0].fill_interval.get(), Duration::from_secs(1));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_config::<Cfg>(br#"{"rules":[{"name":"a"},{"fill_interval":"1sec"}]}"#)
            .unwrap_err();
        assert_eq!(e.path, "rules[1].fill_interval");
        assert!(e.reason.contains("unknown duration unit"), "{e}");
        assert!(!e.reason.contains("line 1"), "{e}");

        let e = parse_config::<Cfg>(br#"{"mod":"enforce"}"#).unwrap_err();
        assert_eq!(e.path, "mod");
        assert!(e.reason.contains("unknown field `mod`"), "{e}");

        let e = parse_config::<Cfg>(br#"{"mode":"off"}"#).unwrap_err();
        assert_eq!(e.to_string().split(':').next(), Some("mode"));
    }

    #[test]
    fn rejects_trailing_garbage_and_non_utf8() {
        let e = parse_config::<Cfg>(br#"{} {}"#).unwrap_err();
        assert_eq!(e.path, ".");
        assert!(e.reason.contains("trailing"), "{e}");
        let e = parse_config::<Cfg>(&[0xff, b'{', b'}']).unwrap_err();
        assert!(e.reason.contains("UTF-8"), "{e}");
        let e = parse_config::<Cfg>(br#""enforce""#).unwrap_err();
        assert_eq!(e.path, ".");
        assert!(e.reason.contains("invalid type"), "{e}");
    }
}
