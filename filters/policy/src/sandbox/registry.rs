//! The sandbox registry's JSON document.
//!
//! Either a versioned document or a plain list of entries:
//!
//! ```json
//! {"version": "42",
//!  "sandboxes": [
//!    {"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"},
//!    {"key": "dev-2", "service": "ratings", "address": "10.0.0.7:8080"}]}
//! ```
//! ```json
//! [{"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"}]
//! ```
//! Each entry has `key`, `service` and exactly one of `cluster` / `address` (`ip:port`).
//! `version` (a string or a non-negative integer) lets the filter skip a body it already has
//! when the registry sends no `ETag`. Unknown fields are ignored (registries carry metadata such
//! as owners and expiry). The document is all or nothing: one bad entry, a duplicate (key,
//! service), more than `max_entries` entries or a body over `max_body_bytes` rejects it and the
//! filter keeps its last good table.

use serde::Deserialize;

use super::key::KeyRules;
use super::table::{Entry, Table, Target, check_address, check_name};

/// A parsed, validated registry document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// `version`, when the document has one.
    pub version: Option<String>,
    /// The entries.
    pub table: Table,
}

/// One entry as sent.
#[derive(Clone, Debug, Deserialize)]
pub struct RawEntry {
    /// Routing key.
    pub key: String,
    /// Destination service.
    pub service: String,
    /// Target cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Target address.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Deserialize)]
struct Versioned {
    #[serde(default)]
    version: Option<serde_json::Value>,
    sandboxes: Vec<RawEntry>,
}

/// Longest `version` string.
pub const MAX_VERSION_LEN: usize = 128;

/// Validates one entry (config routes use this too).
///
/// # Errors
/// `(field, reason)`.
pub fn entry(raw: &RawEntry, keys: &KeyRules) -> Result<Entry, (&'static str, String)> {
    let key = keys.plain(raw.key.as_bytes()).map_err(|e| {
        (
            "key",
            format!("{:?} is not a routing key ({})", raw.key, e.as_str()),
        )
    })?;
    check_name(&raw.service).map_err(|e| ("service", e))?;
    let target = match (&raw.cluster, &raw.address) {
        (Some(c), None) => {
            check_name(c).map_err(|e| ("cluster", e))?;
            Target::Cluster(c.clone())
        }
        (None, Some(a)) => Target::Address(check_address(a).map_err(|e| ("address", e))?),
        _ => {
            return Err((
                "cluster",
                "exactly one of cluster or address is needed".into(),
            ));
        }
    };
    Ok(Entry {
        key: key.to_owned(),
        service: raw.service.clone(),
        target,
    })
}

/// Parses a registry body.
///
/// # Errors
/// A one-line reason (for the log) when the document is rejected.
pub fn parse(body: &[u8], keys: &KeyRules, max_entries: usize) -> Result<Document, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let (version, raw) = match first {
        Some(b'[') => (
            None,
            serde_json::from_slice::<Vec<RawEntry>>(body).map_err(|e| e.to_string())?,
        ),
        Some(b'{') => {
            let v: Versioned = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            (v.version, v.sandboxes)
        }
        _ => return Err("not a JSON list or object".into()),
    };
    let version = match version {
        None | Some(serde_json::Value::Null) => None,
        // `-` is how shared data writes "no version" (table::Published): the same here, so a
        // published table reads back as it was (found by the registry fuzz target).
        Some(serde_json::Value::String(s)) if s == "-" => None,
        Some(serde_json::Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        Some(serde_json::Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_VERSION_LEN
                && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(s)
        }
        Some(_) => {
            return Err(format!(
                "version must be a non-negative integer or 1-{MAX_VERSION_LEN} visible ASCII characters"
            ));
        }
    };
    if raw.len() > max_entries {
        return Err(format!(
            "{} entries, more than max_entries {max_entries}",
            raw.len()
        ));
    }
    let mut table = Table::new();
    for (i, r) in raw.iter().enumerate() {
        let e = entry(r, keys).map_err(|(field, why)| format!("sandboxes[{i}].{field}: {why}"))?;
        let (key, service) = (e.key.clone(), e.service.clone());
        if !table.insert(e) {
            return Err(format!(
                "sandboxes[{i}]: ({key}, {service}) is listed twice"
            ));
        }
    }
    Ok(Document { version, table })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::arithmetic_side_effects)] // tests

    use super::*;
    use crate::sandbox::test_rng::Rng;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn ok(body: &str) -> Document {
        parse(body.as_bytes(), &KeyRules::default(), 100).unwrap()
    }

    fn err(body: &str) -> String {
        parse(body.as_bytes(), &KeyRules::default(), 2).unwrap_err()
    }

    #[test]
    fn versioned_and_plain_documents() {
        let d = ok(r#"{"version": "42", "generated_by": "x", "sandboxes": [
            {"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1", "owner": "ana"},
            {"key": "dev-2", "service": "ratings", "address": "10.0.0.7:8080"}]}"#);
        assert_eq!(d.version.as_deref(), Some("42"));
        assert_eq!(d.table.len(), 2);
        assert_eq!(
            d.table.get("dev-2", "ratings"),
            Some(&Target::Address("10.0.0.7:8080".into()))
        );
        assert_eq!(
            ok(r#"{"version": 7, "sandboxes": []}"#).version.as_deref(),
            Some("7")
        );
        let d = ok(r#" [{"key": "dev-1", "service": "reviews", "cluster": "c"}]"#);
        assert_eq!((d.version, d.table.len()), (None, 1));
        assert!(ok("[]").table.is_empty());
        // `-` is "no version" (the published table's placeholder; found by fuzzing).
        assert_eq!(ok(r#"{"version": "-", "sandboxes": []}"#).version, None);
    }

    #[test]
    fn bad_documents_are_rejected_whole() {
        for (body, want) in [
            ("", "not a JSON"),
            ("null", "not a JSON"),
            ("{", "EOF"),
            (r#"{"sandboxes": {}}"#, "invalid type"),
            (r#"{"version": -1, "sandboxes": []}"#, "version"),
            (r#"{"version": "a b", "sandboxes": []}"#, "version"),
            (
                r#"[{"key": "dev 1", "service": "s", "cluster": "c"}]"#,
                "sandboxes[0].key",
            ),
            (
                r#"[{"key": "d", "service": "", "cluster": "c"}]"#,
                "sandboxes[0].service",
            ),
            (r#"[{"key": "d", "service": "s"}]"#, "exactly one"),
            (
                r#"[{"key": "d", "service": "s", "cluster": "c", "address": "1.2.3.4:5"}]"#,
                "exactly one",
            ),
            (
                r#"[{"key": "d", "service": "s", "address": "evil.example:80"}]"#,
                "sandboxes[0].address",
            ),
            (
                r#"[{"key": "d", "service": "s", "cluster": "c"}, {"key": "d", "service": "s", "cluster": "e"}]"#,
                "listed twice",
            ),
            (
                r#"[{"key": "a", "service": "s", "cluster": "c"}, {"key": "b", "service": "s", "cluster": "c"},
                   {"key": "c", "service": "s", "cluster": "c"}]"#,
                "max_entries",
            ),
        ] {
            let e = err(body);
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    /// Property: random bytes and mutated documents never panic.
    #[test]
    fn random_bodies_never_panic() {
        let base =
            br#"{"version": "1", "sandboxes": [{"key": "dev-1", "service": "s", "cluster": "c"}]}"#;
        let mut rng = Rng::new(13);
        for _ in 0..2000 {
            let body = if rng.chance(30) {
                {
                    let n = rng.below(100);
                    rng.bytes(n)
                }
            } else {
                let mut b = base.to_vec();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(b.len());
                    b[i] = rng.pick(b"[]{}\":, 0a\xff\\", 1)[0];
                }
                b
            };
            let _ = parse(&body, &KeyRules::default(), 10);
        }
    }
}
