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
#[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
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
    serde_json::from_str(text).map_err(|e| ConfigError {
        path: if e.classify() == serde_json::error::Category::Syntax
            && e.to_string().starts_with("trailing characters")
        {
            ".".into()
        } else {
            json_path_at(text, e.line(), e.column())
        },
        reason: strip_position(&e.to_string()),
    })
}

/// The JSON path (`rules[2].fill_interval`, `.` for the document) of the value being read at
/// `line`:`column` (1-based, as serde_json reports an error's position) in `text`.
///
/// Written by hand rather than with `serde_path_to_error`: that crate wraps every visitor of
/// every config type, which made it the largest part of each module (147 KB of the bundle's
/// 760 KB of code), and V8 compiles all of a module's code when Envoy loads it, which costs
/// Envoy memory in proportion. Re-reading the text up to the error costs nothing until a config
/// is wrong. The text was accepted up to that position by serde_json, so only the structure
/// needs following here.
fn json_path_at(text: &str, line: usize, column: usize) -> String {
    enum Frame {
        Object(Option<String>),
        Array(usize),
    }
    let start_of_line = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(line.saturating_sub(2))
            .map_or(text.len(), |(i, _)| i.saturating_add(1))
    };
    let end = start_of_line.saturating_add(column).min(text.len());
    let bytes = text.as_bytes().get(..end).unwrap_or_default();
    let mut stack: Vec<Frame> = Vec::new();
    // In an object, the next string is a key (until its `:`).
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'{' => {
                stack.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => {
                stack.push(Frame::Array(0));
                expect_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(n)) => *n = n.saturating_add(1),
                Some(Frame::Object(key)) => {
                    *key = None;
                    expect_key = true;
                }
                None => {}
            },
            b':' => expect_key = false,
            b'"' => {
                let from = i.saturating_add(1);
                let mut j = from;
                while let Some(&c) = bytes.get(j) {
                    match c {
                        b'\\' => j = j.saturating_add(2),
                        b'"' => break,
                        _ => j = j.saturating_add(1),
                    }
                }
                if expect_key && let Some(Frame::Object(key)) = stack.last_mut() {
                    let raw = bytes.get(from..j.min(bytes.len())).unwrap_or_default();
                    *key = Some(String::from_utf8_lossy(raw).into_owned());
                }
                i = j;
            }
            _ => {}
        }
        i = i.saturating_add(1);
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(n) => {
                path.push('[');
                path.push_str(&n.to_string());
                path.push(']');
            }
        }
    }
    if path.is_empty() { ".".into() } else { path }
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
#[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
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
#[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
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
    fn paths_follow_nesting_escapes_and_lines() {
        let path = |json: &str| parse_config::<Cfg>(json.as_bytes()).unwrap_err().path;
        // Unknown field inside the second element, after an element with a nested string.
        assert_eq!(
            path(r#"{"rules": [{"name": "a,]}\"x"}, {"name": "b", "bogus": 1}]}"#),
            "rules[1].bogus"
        );
        // A wrong type for a whole element, and for an array.
        assert_eq!(path(r#"{"rules": [{"name": "a"}, 7]}"#), "rules[1]");
        assert_eq!(path(r#"{"mode": "enforce", "rules": {}}"#), "rules");
        // A later field after a complete nested one.
        assert_eq!(
            path(r#"{"rules": [{"name": "a"}], "timeout": "5 parsecs"}"#),
            "timeout"
        );
        // Across lines (the position is kept in the reason there).
        let e =
            parse_config::<Cfg>(b"{\n  \"rules\": [\n    {\"fill_interval\": \"1sec\"}\n  ]\n}")
                .unwrap_err();
        assert_eq!(e.path, "rules[0].fill_interval");
        assert!(e.reason.contains("line 3"), "{e}");
        // Syntax errors point where the text broke.
        assert_eq!(
            path(r#"{"rules": [{"name": "a"} {"name": "b"}]}"#),
            "rules[0]"
        );
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
