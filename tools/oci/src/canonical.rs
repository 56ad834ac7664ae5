//! Canonical JSON: object keys sorted (byte order), no insignificant whitespace.
//!
//! A manifest's digest is the sha256 of its exact bytes, so the bytes must not depend on how a
//! map happens to iterate. `oci-spec` keeps annotations in a `HashMap` (random order per
//! process), and `serde_json::Map` follows insertion order when any crate in the build enables
//! its `preserve_order` feature; so every document is re-built here with its keys in sorted
//! order before it is written, whatever the map types underneath.

use anyhow::Result;
use serde_json::Value;

/// Serializes `value` canonically.
///
/// # Errors
/// When `value` cannot be represented as JSON.
pub fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&sorted(serde_json::to_value(value)?))?)
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth_and_whitespace_is_dropped() {
        let v = serde_json::json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": "s"}});
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            r#"{"a":{"c":"s","z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn hash_maps_serialize_identically_whatever_their_order() {
        let keys: Vec<String> = (0..64).map(|i| format!("k{i:02}")).collect();
        let forward: HashMap<_, _> = keys.iter().map(|k| (k.clone(), 1)).collect();
        let backward: HashMap<_, _> = keys.iter().rev().map(|k| (k.clone(), 1)).collect();
        assert_eq!(to_vec(&forward).unwrap(), to_vec(&backward).unwrap());
    }
}
