//! Durations as strings: `"250ms"`, `"1s"`, `"1.5s"`, `"2m"`, `"100us"`, `"10ns"` (a bare
//! number is milliseconds).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses a duration string.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "ms"),
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let secs = match unit {
        "ns" => v / 1e9,
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Formats as milliseconds (`"12.5ms"`).
pub fn format(d: &Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms.fract() == 0.0 {
        format!("{}ms", ms as u64)
    } else {
        format!("{ms}ms")
    }
}

/// serde serializer.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d))
}

/// serde deserializer (string or number of ms).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(f64),
    }
    match Raw::deserialize(d)? {
        Raw::S(s) => {
            parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid duration {s:?}")))
        }
        Raw::N(n) => {
            parse(&format!("{n}ms")).ok_or_else(|| serde::de::Error::custom("invalid duration"))
        }
    }
}
