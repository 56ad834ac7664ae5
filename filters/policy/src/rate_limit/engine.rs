//! One worker VM's side of rate limiting.
//!
//! **Shared buckets, leased.** A bucket lives in shared data and holds for the whole Envoy. A
//! worker takes tokens from it with CAS, and when the bucket is well filled it takes a small
//! batch (an eighth of what is there, at most 64) and spends the rest locally, so a request
//! below the limit usually costs no shared-data call at all. Near the limit the batch is one
//! token, so the bucket is exact where it matters; tokens a worker leased but did not use are
//! given back on tick. No request is ever admitted without a token taken from the shared
//! bucket: over-admission is zero by construction.
//!
//! **Per-value buckets** (a rule with a per-value entry, e.g. one bucket per client address)
//! live in a fixed table of `max_dynamic_buckets` slots in shared data: a value hashes to a slot
//! and probes the next few; a new value takes a free slot or evicts the least recently used of
//! the probed ones. Memory stays bounded however many values a client rotates through; an
//! evicted value starts over with a full bucket (documented).
//!
//! **Contention.** Every CAS loop is bounded ([`MAX_CAS_ATTEMPTS`]); if it is exhausted the
//! request is *limited* (never silently admitted) and counted.

use std::collections::BTreeMap;

use super::bucket::{Bucket, Spec};
use super::config::Config;
use super::descriptor::{self, Request};
use crate::store::Store;

/// CAS attempts before a request is limited for contention.
pub const MAX_CAS_ATTEMPTS: u32 = 16;
/// Largest batch of tokens a worker leases at once.
pub const MAX_LEASE: u32 = 64;
/// Slots probed for a per-value bucket.
pub const PROBES: u32 = 4;

/// Which bucket decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Rule `i` of the config.
    Rule(usize),
    /// The default bucket of a profile (`None`: the top level).
    Default(Option<usize>),
}

/// The decision on one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// No rule matched and there is no default bucket.
    Unlimited,
    /// A token was taken.
    Allowed {
        /// The bucket.
        source: Source,
        /// Entries of the matching rule (for logs and global limits).
        entries: Vec<(String, Vec<u8>)>,
        /// Tokens left (shared count as last seen by this worker, plus its lease).
        remaining: u32,
    },
    /// No token.
    Limited {
        /// The bucket.
        source: Source,
        /// Entries of the matching rule.
        entries: Vec<(String, Vec<u8>)>,
        /// Time until a token is available (ns).
        retry_after_ns: u64,
        /// CAS attempts ran out (contention), not an empty bucket.
        contended: bool,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Lease {
    tokens: u32,
    last_seen: u32,
}

/// Per-worker state.
#[derive(Debug)]
pub struct Engine {
    prefix: String,
    leases: BTreeMap<String, Lease>,
    /// Per rule: value hash → slot (a cache of where a value lives; verified on use).
    slots: BTreeMap<(usize, u64), u32>,
    /// Per rule: slot → the value hash last cached for it. Bounds `slots` to the number of
    /// slots: caching a value for a slot forgets the value cached for it before (without this,
    /// every distinct value ever seen stayed cached and a key flood grew the VM's memory).
    owners: BTreeMap<(usize, u32), u64>,
    /// Per-value buckets evicted (for metrics).
    pub evictions: u64,
}

impl Engine {
    /// An engine whose shared keys start with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            leases: BTreeMap::new(),
            slots: BTreeMap::new(),
            owners: BTreeMap::new(),
            evictions: 0,
        }
    }

    /// Finds the bucket of `req` (top-level rules) and takes a token from it.
    pub fn decide(
        &mut self,
        config: &Config,
        req: &Request<'_>,
        now_ns: u64,
        store: &mut impl Store,
    ) -> Verdict {
        self.decide_in(config, None, req, || now_ns, store)
    }

    fn default_key(&self, profile: Option<usize>, config: &Config) -> String {
        match profile.and_then(|i| config.profiles.get(i)) {
            None => format!("{}/default", self.prefix),
            Some(p) => format!("{}/p/{}/default", self.prefix, p.name),
        }
    }

    /// Like [`Engine::decide`], with the rules and default bucket of `profile`. `clock` (the
    /// monotonic time in ns) is asked at most once, and only when a bucket is taken from: a
    /// request no rule matches costs the filter no clock read.
    pub fn decide_in(
        &mut self,
        config: &Config,
        profile: Option<usize>,
        req: &Request<'_>,
        clock: impl Fn() -> u64,
        store: &mut impl Store,
    ) -> Verdict {
        let mut now = None;
        let mut now_ns = || *now.get_or_insert_with(&clock);
        let default = config.default_of(profile);
        for (i, rule) in config
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.profile == profile)
        {
            let Some(entries) = descriptor::evaluate(&rule.entries, req) else {
                continue;
            };
            let taken = match &rule.bucket {
                None => Taken::Yes {
                    remaining: u32::MAX,
                },
                Some(spec) if rule.per_value => {
                    let hash = hash_values(&entries);
                    self.take_dynamic(i, hash, spec, rule.max_dynamic_buckets, now_ns(), store)
                }
                Some(spec) => {
                    let key = format!("{}/s/{}", self.prefix, rule.name);
                    self.take_leased(&key, spec, now_ns(), store)
                }
            };
            if let (Taken::Yes { .. }, Some(spec), true) =
                (&taken, &default, config.always_consume_default)
            {
                // Like Envoy's `always_consume_default_token_bucket`: the service-wide bucket
                // holds whatever rule a request matched.
                let key = self.default_key(profile, config);
                if let Taken::No {
                    retry_after_ns,
                    contended,
                } = self.take_leased(&key, spec, now_ns(), store)
                {
                    return Verdict::Limited {
                        source: Source::Default(profile),
                        entries,
                        retry_after_ns,
                        contended,
                    };
                }
            }
            return verdict(Source::Rule(i), entries, taken);
        }
        match &default {
            Some(spec) => {
                let key = self.default_key(profile, config);
                let taken = self.take_leased(&key, spec, now_ns(), store);
                verdict(Source::Default(profile), Vec::new(), taken)
            }
            None => Verdict::Unlimited,
        }
    }

    fn take_leased(
        &mut self,
        key: &str,
        spec: &Spec,
        now_ns: u64,
        store: &mut impl Store,
    ) -> Taken {
        if let Some(lease) = self.leases.get_mut(key)
            && lease.tokens > 0
        {
            lease.tokens = lease.tokens.saturating_sub(1);
            return Taken::Yes {
                remaining: lease.last_seen.saturating_add(lease.tokens),
            };
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut b, cas) = read_bucket(store, key, spec, now_ns);
            // Lease an eighth of what is there (at least the one token needed).
            let want = crate::num::floor_u32(b.tokens / 8.0).clamp(1, MAX_LEASE);
            let got = b.take(want);
            if got == 0 {
                // Nothing to take: no write needed (the refill is recomputed from time).
                let missing = 1.0 - b.tokens;
                return Taken::No {
                    retry_after_ns: spec.time_for(missing),
                    contended: false,
                };
            }
            if store.set(key, &b.encode(), cas) {
                let left = crate::num::floor_u32(b.tokens);
                let lease = self.leases.entry(key.to_owned()).or_default();
                lease.tokens = lease.tokens.saturating_add(got.saturating_sub(1));
                lease.last_seen = left;
                return Taken::Yes {
                    remaining: left.saturating_add(lease.tokens),
                };
            }
        }
        Taken::No {
            retry_after_ns: 0,
            contended: true,
        }
    }

    fn take_dynamic(
        &mut self,
        rule: usize,
        hash: u64,
        spec: &Spec,
        capacity: u32,
        now_ns: u64,
        store: &mut impl Store,
    ) -> Taken {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((slot, mut entry, cas)) =
                self.find_slot(rule, hash, spec, capacity, now_ns, store)
            else {
                continue;
            };
            let mut b = entry.bucket.refilled(spec, now_ns);
            let got = b.take(1);
            entry.bucket = b;
            entry.last_used_ns = now_ns;
            if got == 0 {
                // A limited request is a use too: without this write an over-limit value kept
                // the time of its last *admitted* request, became the least recently used, was
                // evicted by the next new value, and came back with a full bucket. Best effort
                // (a lost race only leaves the older time).
                if store.set(&self.slot_key(rule, slot), &entry.encode(), cas) {
                    self.remember(rule, hash, slot);
                }
                let missing = 1.0 - b.tokens;
                return Taken::No {
                    retry_after_ns: spec.time_for(missing),
                    contended: false,
                };
            }
            if store.set(&self.slot_key(rule, slot), &entry.encode(), cas) {
                self.remember(rule, hash, slot);
                return Taken::Yes {
                    remaining: crate::num::floor_u32(b.tokens),
                };
            }
        }
        Taken::No {
            retry_after_ns: 0,
            contended: true,
        }
    }

    /// Caches that `hash` lives in `slot`, forgetting the value cached for that slot before.
    fn remember(&mut self, rule: usize, hash: u64, slot: u32) {
        if let Some(old) = self.owners.insert((rule, slot), hash)
            && old != hash
        {
            self.slots.remove(&(rule, old));
        }
        self.slots.insert((rule, hash), slot);
    }

    fn slot_key(&self, rule: usize, slot: u32) -> String {
        format!("{}/d/{rule}/{slot}", self.prefix)
    }

    /// The slot holding `hash`, a free one, or the least recently used probed one (evicted and
    /// reset to a full bucket). Returns the entry to update and its CAS token.
    fn find_slot(
        &mut self,
        rule: usize,
        hash: u64,
        spec: &Spec,
        capacity: u32,
        now_ns: u64,
        store: &mut impl Store,
    ) -> Option<(u32, Slot, u32)> {
        let fresh = Slot {
            hash,
            bucket: Bucket::full(spec, now_ns),
            last_used_ns: now_ns,
        };
        if let Some(&slot) = self.slots.get(&(rule, hash)) {
            if let Some((v, cas)) = store.get(&self.slot_key(rule, slot))
                && let Some(s) = Slot::decode(&v).filter(|s| s.hash == hash)
            {
                return Some((slot, s, cas));
            }
            self.slots.remove(&(rule, hash));
        }
        let capacity = capacity.max(1);
        let start = u32::try_from(hash.checked_rem(u64::from(capacity)).unwrap_or(0)).unwrap_or(0);
        let mut oldest: Option<(u32, u64, u32)> = None; // (slot, last_used, cas)
        for k in 0..PROBES.min(capacity) {
            let slot = start
                .checked_add(k)
                .and_then(|s| s.checked_rem(capacity))
                .unwrap_or(0);
            match store.get(&self.slot_key(rule, slot)) {
                None => return Some((slot, fresh, 0)),
                Some((v, cas)) => match Slot::decode(&v) {
                    Some(s) if s.hash == hash => return Some((slot, s, cas)),
                    Some(s) => {
                        if oldest.is_none_or(|(_, used, _)| s.last_used_ns < used) {
                            oldest = Some((slot, s.last_used_ns, cas));
                        }
                    }
                    None => return Some((slot, fresh, cas)),
                },
            }
        }
        let (slot, _, cas) = oldest?;
        self.evictions = self.evictions.saturating_add(1);
        Some((slot, fresh, cas))
    }

    /// On tick: gives unused leased tokens back to their shared buckets.
    pub fn tick(&mut self, config: &Config, now_ns: u64, store: &mut impl Store) {
        let mut specs: BTreeMap<String, Spec> = config
            .rules
            .iter()
            .filter(|r| !r.per_value)
            .filter_map(|r| Some((format!("{}/s/{}", self.prefix, r.name), r.bucket?)))
            .collect();
        for profile in core::iter::once(None).chain((0..config.profiles.len()).map(Some)) {
            if let Some(d) = config.default_of(profile) {
                specs.insert(self.default_key(profile, config), d);
            }
        }
        for (key, lease) in &mut self.leases {
            if lease.tokens == 0 {
                continue;
            }
            let Some(spec) = specs.get(key) else {
                lease.tokens = 0;
                continue;
            };
            for _ in 0..MAX_CAS_ATTEMPTS {
                let (mut b, cas) = read_bucket(store, key, spec, now_ns);
                b.give_back(spec, lease.tokens);
                if store.set(key, &b.encode(), cas) {
                    lease.tokens = 0;
                    break;
                }
            }
        }
    }
}

enum Taken {
    Yes {
        remaining: u32,
    },
    No {
        retry_after_ns: u64,
        contended: bool,
    },
}

fn verdict(source: Source, entries: Vec<(String, Vec<u8>)>, taken: Taken) -> Verdict {
    match taken {
        Taken::Yes { remaining } => Verdict::Allowed {
            source,
            entries,
            remaining,
        },
        Taken::No {
            retry_after_ns,
            contended,
        } => Verdict::Limited {
            source,
            entries,
            retry_after_ns,
            contended,
        },
    }
}

fn read_bucket(store: &mut impl Store, key: &str, spec: &Spec, now_ns: u64) -> (Bucket, u32) {
    match store.get(key) {
        Some((v, cas)) => (
            Bucket::decode(&v)
                .unwrap_or_else(|| Bucket::full(spec, now_ns))
                .refilled(spec, now_ns),
            cas,
        ),
        None => (Bucket::full(spec, now_ns), 0),
    }
}

/// A per-value slot: which value (by hash) owns it, its bucket, when it was last used.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slot {
    hash: u64,
    bucket: Bucket,
    last_used_ns: u64,
}

impl Slot {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&self.bucket.encode());
        out.extend_from_slice(&self.last_used_ns.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 32 {
            return None;
        }
        Some(Self {
            hash: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            bucket: Bucket::decode(b.get(8..24)?)?,
            last_used_ns: u64::from_le_bytes(b.get(24..32)?.try_into().ok()?),
        })
    }
}

/// FNV-1a over the entries (keys and values, separated), the identity of a per-value bucket.
pub fn hash_values(entries: &[(String, Vec<u8>)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in entries {
        for b in k
            .bytes()
            .chain([0xff])
            .chain(v.iter().copied())
            .chain([0xfe])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests;
