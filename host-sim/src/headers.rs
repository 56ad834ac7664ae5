//! Header maps with Envoy's rules, and the proxy-wasm pairs serialization.
//!
//! Envoy keeps headers in insertion order with every pseudo-header (`:path`, `:status`, ...)
//! before the regular ones, lower-cases keys on every write, and `replace` (`setCopy`) removes
//! all values of the key and appends one (`http_set_copy_replace_all_headers`, on by default).
//! Values are bytes: a filter may write non-UTF-8 values and tests must be able to send them.

use crate::abi::{PAIRS_MAX_BYTES, PAIRS_MAX_COUNT};

/// An ordered multi-map of lower-cased header names to byte values.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<(String, String)>", into = "Vec<(String, String)>")]
pub struct HeaderMap {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from pairs, lower-casing keys (like Envoy's codecs do).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut m = Self::new();
        for (k, v) in pairs {
            m.add(k.as_ref(), v.as_ref());
        }
        m
    }

    /// Number of entries (a repeated header counts once per value).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first value of `key` as UTF-8 (`None` when absent or not UTF-8).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bytes(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `key` (what Envoy's `get_header_map_value` returns).
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&[u8]> {
        self.entries
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// True when `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get_bytes(key).is_some()
    }

    /// Appends a value (pseudo-headers go after the last pseudo-header).
    pub fn add(&mut self, key: &str, value: impl AsRef<[u8]>) {
        let key = key.to_ascii_lowercase();
        let value = value.as_ref().to_vec();
        if key.starts_with(':') {
            let at = self
                .entries
                .iter()
                .position(|(k, _)| !k.starts_with(':'))
                .unwrap_or(self.entries.len());
            self.entries.insert(at, (key, value));
        } else {
            self.entries.push((key, value));
        }
    }

    /// Removes every value of `key` and adds `value` (Envoy `setCopy`).
    pub fn set(&mut self, key: &str, value: impl AsRef<[u8]>) {
        self.remove(key);
        self.add(key, value);
    }

    /// Removes every value of `key`.
    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Entries as strings (non-UTF-8 bytes replaced), for display and JSON.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Envoy's `HeaderMap::byteSize()`: the sum of key and value lengths (what
    /// `proxy_get_header_map_size` returns).
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Serializes to the proxy-wasm pairs format.
    pub fn serialize(&self) -> Vec<u8> {
        serialize_pairs(
            self.entries
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_slice())),
        )
    }
}

impl From<HeaderMap> for Vec<(String, String)> {
    fn from(m: HeaderMap) -> Self {
        m.to_pairs()
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>, const N: usize> From<[(K, V); N]> for HeaderMap {
    fn from(a: [(K, V); N]) -> Self {
        HeaderMap::from_pairs(a)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> From<&[(K, V)]> for HeaderMap {
    fn from(a: &[(K, V)]) -> Self {
        HeaderMap::from_pairs(a.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> From<Vec<(K, V)>> for HeaderMap {
    fn from(a: Vec<(K, V)>) -> Self {
        HeaderMap::from_pairs(a)
    }
}

/// Serializes pairs: u32 count, (u32 key_len, u32 value_len) per pair, then each key and value
/// followed by a NUL byte; all little-endian.
pub fn serialize_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let n = pairs.clone().count();
    let size: usize = 4 + pairs
        .clone()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses a pairs buffer the way cpp-host's `PairsUtil::toPairs` does: anything malformed,
/// larger than 1 MiB or with more than 1024 pairs reads as *no pairs* (not an error).
pub fn deserialize_pairs(buf: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    parse_pairs(buf).unwrap_or_default()
}

fn parse_pairs(buf: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if buf.len() > PAIRS_MAX_BYTES {
        return None;
    }
    let mut pos = 0usize;
    let read_u32 = |pos: &mut usize| -> Option<usize> {
        let b = buf.get(*pos..pos.checked_add(4)?)?;
        *pos += 4;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = read_u32(&mut pos)?;
    if n > PAIRS_MAX_COUNT {
        return None;
    }
    let mut sizes = Vec::with_capacity(n);
    for _ in 0..n {
        let k = read_u32(&mut pos)?;
        let v = read_u32(&mut pos)?;
        sizes.push((k, v));
    }
    let mut out = Vec::with_capacity(n);
    for (kl, vl) in sizes {
        let k = buf.get(pos..pos.checked_add(kl)?)?.to_vec();
        pos += kl;
        if *buf.get(pos)? != 0 {
            return None;
        }
        pos += 1;
        let v = buf.get(pos..pos.checked_add(vl)?)?.to_vec();
        pos += vl;
        if *buf.get(pos)? != 0 {
            return None;
        }
        pos += 1;
        out.push((k, v));
    }
    if pos != buf.len() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let m = HeaderMap::from([(":path", "/"), ("X-A", "1"), ("x-a", "2")]);
        let buf = m.serialize();
        let back = deserialize_pairs(&buf);
        assert_eq!(back.len(), 3);
        assert_eq!(back[1], (b"x-a".to_vec(), b"1".to_vec()));
    }

    #[test]
    fn malformed_pairs_read_as_empty() {
        assert!(deserialize_pairs(&[1, 0, 0, 0, 5, 0, 0, 0]).is_empty());
        assert!(deserialize_pairs(&[]).is_empty());
        let mut too_many = (2000u32).to_le_bytes().to_vec();
        too_many.extend(std::iter::repeat_n(0u8, 16000));
        assert!(deserialize_pairs(&too_many).is_empty());
    }

    #[test]
    fn pseudo_headers_stay_first_and_set_moves_to_end() {
        let mut m = HeaderMap::from([("a", "1"), ("b", "2")]);
        m.add(":status", "200");
        m.set("a", "3");
        let keys: Vec<_> = m.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, [":status", "b", "a"]);
        assert_eq!(m.byte_size(), ":status".len() + 3 + 2 + 2);
    }
}
