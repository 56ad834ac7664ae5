//! Durations in config, written the way operators write them: `"250ms"`, `"1s"`, `"1.5s"`.
//!
//! Accepted units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. A decimal fraction is allowed
//! (`"0.5s"`); the value is rounded down to whole nanoseconds. Negative values, missing units,
//! exponents and values beyond `u64` nanoseconds (≈584 years) are rejected with a message that
//! says why, so a typo never silently becomes "0" or "forever".

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A [`Duration`] that deserializes from a string such as `"250ms"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Wraps a duration.
    pub const fn new(d: Duration) -> Self {
        Self(d)
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whole nanoseconds, saturating at `u64::MAX`.
    pub fn as_nanos_u64(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl From<Duration> for ConfigDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// The string was empty (after trimming).
    Empty,
    /// A leading minus sign: durations in config are never negative.
    Negative,
    /// No unit followed the number (`"250"`).
    MissingUnit,
    /// The unit is not one of `ns us µs ms s m h`.
    UnknownUnit(String),
    /// The number part is not a plain non-negative decimal.
    BadNumber,
    /// The value does not fit in `u64` nanoseconds.
    TooLarge,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty duration; write e.g. \"250ms\" or \"1s\""),
            Self::Negative => f.write_str("duration must not be negative"),
            Self::MissingUnit => {
                f.write_str("duration needs a unit (ns, us, ms, s, m, h), e.g. \"250ms\"")
            }
            Self::UnknownUnit(u) => {
                write!(f, "unknown duration unit {u:?}; use ns, us, ms, s, m or h")
            }
            Self::BadNumber => {
                f.write_str("duration must be a non-negative decimal number followed by a unit")
            }
            Self::TooLarge => f.write_str("duration is too large"),
        }
    }
}

/// Parses `"250ms"`, `"1s"`, `"1.5s"`, `"100us"`, `"2m"`, `"1h"`.
///
/// # Errors
/// [`DurationError`] naming what is wrong with the text.
///
/// # Examples
/// ```
/// use core::time::Duration;
/// use meshguard_policy::duration::parse;
/// assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(parse("250").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let split = text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(text.len(), |(i, _)| i);
    let (number, unit) = text.split_at(split);
    if unit.is_empty() {
        return Err(DurationError::MissingUnit);
    }
    let nanos_per_unit: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => return Err(DurationError::UnknownUnit(other.to_owned())),
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(DurationError::BadNumber);
    }
    if frac.contains('.') {
        return Err(DurationError::BadNumber);
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| DurationError::TooLarge)?
    };
    let mut nanos = whole
        .checked_mul(nanos_per_unit)
        .ok_or(DurationError::TooLarge)?;
    // Fraction: each digit is worth nanos_per_unit / 10^k; digits past nanosecond precision
    // are dropped (rounding down).
    let mut scale = nanos_per_unit;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        let d = u128::from(digit.wrapping_sub(b'0'));
        nanos = d
            .checked_mul(scale)
            .and_then(|v| nanos.checked_add(v))
            .ok_or(DurationError::TooLarge)?;
    }
    let nanos = u64::try_from(nanos).map_err(|_| DurationError::TooLarge)?;
    Ok(Duration::from_nanos(nanos))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\" or \"1s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn units() {
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse("7µs"), Ok(Duration::from_micros(7)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn fractions_are_exact_and_round_down() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("0.6ms"), Ok(Duration::from_micros(600)));
        assert_eq!(
            parse("1.0000000019s"),
            Ok(Duration::from_nanos(1_000_000_001))
        );
        assert_eq!(parse("1.9ns"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("250"), Err(DurationError::MissingUnit));
        assert_eq!(parse("-1s"), Err(DurationError::Negative));
        assert_eq!(parse("1d"), Err(DurationError::UnknownUnit("d".into())));
        assert_eq!(
            parse("1e3ms"),
            Err(DurationError::UnknownUnit("e3ms".into()))
        );
        assert_eq!(parse(".s"), Err(DurationError::BadNumber));
        assert_eq!(parse("1.2.3s"), Err(DurationError::BadNumber));
        assert_eq!(
            parse("99999999999999999999999h"),
            Err(DurationError::TooLarge)
        );
        assert_eq!(parse("6000000h"), Err(DurationError::TooLarge));
    }

    #[test]
    fn deserializes_from_json_string_only() {
        let d: ConfigDuration = serde_json::from_str("\"20ms\"").unwrap();
        assert_eq!(d.get(), Duration::from_millis(20));
        assert_eq!(d.as_nanos_u64(), 20_000_000);
        let err = serde_json::from_str::<ConfigDuration>("20").unwrap_err();
        assert!(err.to_string().contains("duration string"), "{err}");
        let err = serde_json::from_str::<ConfigDuration>("\"20\"").unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
    }
}
