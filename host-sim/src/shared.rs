//! Envoy's process-wide shared data and shared queues (cpp-host `shared_data.cc`,
//! `shared_queue.cc`), scoped to one simulated Envoy.
//!
//! Shared data is keyed by `vm_id` only. CAS values come from one global counter that starts at
//! 1 and skips 0; `cas == 0` means "no check"; a set on a missing key ignores `cas`; every
//! successful set gets a fresh CAS. Queues are keyed by (`vm_id`, name); each registration
//! makes the registrant the owner that receives `on_queue_ready`, and tokens are never 0.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::abi::Status;
use crate::host::VmRef;

type KeyValues = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Debug, Default)]
pub(crate) struct SharedData {
    /// vm_id -> key -> (value, cas).
    data: HashMap<String, KeyValues>,
    next_cas: u32,
}

impl SharedData {
    fn next_cas(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        self.next_cas
    }

    pub fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.data.get(vm_id)?.get(key).cloned()
    }

    pub fn set(&mut self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Status {
        let fresh = self.next_cas_peek();
        let map = self.data.entry(vm_id.to_string()).or_default();
        match map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Status::CasMismatch;
                }
                *entry = (value.to_vec(), fresh);
            }
            None => {
                map.insert(key.to_vec(), (value.to_vec(), fresh));
            }
        }
        self.next_cas();
        Status::Ok
    }

    fn next_cas_peek(&self) -> u32 {
        let n = self.next_cas.wrapping_add(1);
        if n == 0 { 1 } else { n }
    }

    /// Every key of one vm_id, sorted (test helper).
    pub fn keys(&self, vm_id: &str) -> Vec<Vec<u8>> {
        let mut keys: Vec<_> = self
            .data
            .get(vm_id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub owner: VmRef,
    pub owner_ctx: u32,
    pub items: VecDeque<Vec<u8>>,
}

#[derive(Debug, Default)]
pub(crate) struct SharedQueues {
    tokens: BTreeMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    next_token: u32,
}

impl SharedQueues {
    pub fn register(&mut self, vm_id: &str, name: &str, owner: VmRef, owner_ctx: u32) -> u32 {
        let key = (vm_id.to_string(), name.to_string());
        let token = match self.tokens.get(&key) {
            Some(t) => *t,
            None => {
                let t = loop {
                    self.next_token = self.next_token.wrapping_add(1);
                    if self.next_token != 0 && !self.queues.contains_key(&self.next_token) {
                        break self.next_token;
                    }
                };
                self.tokens.insert(key, t);
                t
            }
        };
        let q = self.queues.entry(token).or_insert_with(|| Queue {
            owner,
            owner_ctx,
            items: VecDeque::new(),
        });
        q.owner = owner;
        q.owner_ctx = owner_ctx;
        token
    }

    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.tokens
            .get(&(vm_id.to_string(), name.to_string()))
            .copied()
    }

    /// Enqueues; returns the owner to notify.
    pub fn enqueue(&mut self, token: u32, value: &[u8]) -> Result<(VmRef, u32), Status> {
        let q = self.queues.get_mut(&token).ok_or(Status::NotFound)?;
        q.items.push_back(value.to_vec());
        Ok((q.owner, q.owner_ctx))
    }

    pub fn dequeue(&mut self, token: u32) -> Result<Vec<u8>, Status> {
        let q = self.queues.get_mut(&token).ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
    }

    pub fn len(&self, vm_id: &str, name: &str) -> Option<usize> {
        let t = self.resolve(vm_id, name)?;
        self.queues.get(&t).map(|q| q.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rules() {
        let mut d = SharedData::default();
        assert_eq!(
            d.set("vm", b"k", b"1", 77),
            Status::Ok,
            "missing key ignores cas"
        );
        let (_, cas1) = d.get("vm", b"k").unwrap();
        assert_eq!(cas1, 1, "global counter starts at 1");
        assert_eq!(d.set("vm", b"k", b"2", cas1 + 5), Status::CasMismatch);
        assert_eq!(d.set("vm", b"k", b"2", cas1), Status::Ok);
        let (v, cas2) = d.get("vm", b"k").unwrap();
        assert_eq!((v.as_slice(), cas2), (&b"2"[..], 2));
        assert_eq!(
            d.set("vm", b"k", b"3", 0),
            Status::Ok,
            "cas 0 is unconditional"
        );
        assert!(d.get("other", b"k").is_none(), "keyed by vm_id");
    }
}
