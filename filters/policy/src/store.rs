//! The shared-data port: how a policy that spans Envoy's worker VMs reads and writes
//! process-wide state, without calling the host itself.
//!
//! `meshguard-proxy` implements [`Store`] over proxy-wasm shared data; tests use [`MemStore`],
//! which follows Envoy's rules (a global CAS counter starting at 1; `cas = 0` writes
//! unconditionally; a write to a missing key ignores `cas`).

/// Process-wide key/value state with compare-and-swap.
pub trait Store {
    /// The value and its CAS token, or `None` when absent (or unreadable).
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the key's CAS token is still `cas` (`0` = unconditionally). Returns
    /// false on a CAS mismatch or a host error.
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool;
}

/// An in-memory [`Store`] with Envoy's CAS rules, for tests and simulations.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    entries: std::collections::BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Store for MemStore {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        if let Some((_, current)) = self.entries.get(key)
            && cas != 0
            && cas != *current
        {
            return false;
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.entries
            .insert(key.to_owned(), (value.to_vec(), self.next_cas));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn envoy_cas_rules() {
        let mut s = MemStore::default();
        assert!(s.get("k").is_none());
        assert!(s.set("k", b"a", 77)); // missing key ignores cas
        let (v, cas) = s.get("k").unwrap();
        assert_eq!((v.as_slice(), cas), (&b"a"[..], 1));
        assert!(!s.set("k", b"b", cas + 5));
        assert!(s.set("k", b"b", cas));
        assert!(s.set("k", b"c", 0)); // unconditional
        assert_eq!(s.get("k").unwrap().1, 3);
    }
}
