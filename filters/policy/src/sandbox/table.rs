//! The routing table: (routing key, destination service) → target.
//!
//! A target is an Envoy cluster (the filter names it in the routing header, which a
//! `cluster_header` route reads) or an address `ip:port` (sent to an `ORIGINAL_DST` cluster
//! through `x-envoy-original-dst-host`). Targets come only from this table — config entries
//! and the registry — never from the request.
//!
//! The table is also how the registry's answer reaches every worker: the poller publishes it in
//! shared data as [`Published`], a small line format every worker decodes (and re-validates).

use std::collections::BTreeMap;

use core::net::SocketAddr;

/// Where a sandbox's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An Envoy cluster name.
    Cluster(String),
    /// `ip:port`, reached through the `ORIGINAL_DST` cluster.
    Address(String),
}

impl Target {
    /// The cluster name or the address.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Cluster(s) | Self::Address(s) => s,
        }
    }
}

/// One row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The routing key.
    pub key: String,
    /// The destination service (cluster name of the baseline route, or the `:authority` host).
    pub service: String,
    /// Where to send it.
    pub target: Target,
}

/// Longest service or cluster name.
pub const MAX_NAME_LEN: usize = 255;

/// A service or cluster name: 1–255 visible ASCII characters (it travels in a header value
/// and a line of [`Published`]).
///
/// # Errors
/// Why it is not acceptable.
pub fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(format!("must be 1-{MAX_NAME_LEN} characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{s:?} must be visible ASCII without spaces"));
    }
    Ok(())
}

/// An `ORIGINAL_DST` address: an IP literal and a port (Envoy does not resolve names there),
/// normalised (`[::1]:80`).
///
/// # Errors
/// Why it is not acceptable.
pub fn check_address(s: &str) -> Result<String, String> {
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a.to_string()),
        _ => Err(format!("{s:?} must be ip:port (an IP literal; [v6]:port)")),
    }
}

/// The table, indexed by key then service so a lookup borrows and never allocates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    by_key: BTreeMap<String, BTreeMap<String, Target>>,
    len: usize,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; false (and the table unchanged) when (key, service) is already there.
    pub fn insert(&mut self, e: Entry) -> bool {
        let services = self.by_key.entry(e.key).or_default();
        if services.contains_key(&e.service) {
            return false;
        }
        services.insert(e.service, e.target);
        self.len = self.len.saturating_add(1);
        true
    }

    /// The target of `key` for `service`.
    pub fn get(&self, key: &str, service: &str) -> Option<&Target> {
        self.by_key.get(key)?.get(service)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, by key then service.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.by_key.iter().flat_map(|(key, services)| {
            services.iter().map(|(service, target)| Entry {
                key: key.clone(),
                service: service.clone(),
                target: target.clone(),
            })
        })
    }

    /// `first` with the entries of `second` it does not already have.
    pub fn merged(first: &Self, second: &Self) -> Self {
        let mut out = first.clone();
        for e in second.entries() {
            out.insert(e);
        }
        out
    }
}

/// A registry table as published in shared data for every worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Increases with every publication (workers reload when it changes).
    pub generation: u64,
    /// The registry's `ETag` (sent back as `if-none-match`).
    pub etag: Option<String>,
    /// The registry document's `version`.
    pub version: Option<String>,
    /// The entries.
    pub table: Table,
}

const MAGIC: &str = "meshguard-sandbox-table v1";

impl Published {
    /// The line format: a header, then `key service c|a target` per entry. Every field is
    /// visible ASCII without spaces (validated on the way in).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{MAGIC}\n{} {} {}\n",
            self.generation,
            self.etag.as_deref().unwrap_or("-"),
            self.version.as_deref().unwrap_or("-"),
        );
        for e in self.table.entries() {
            let kind = match e.target {
                Target::Cluster(_) => 'c',
                Target::Address(_) => 'a',
            };
            out.push_str(&format!(
                "{} {} {kind} {}\n",
                e.key,
                e.service,
                e.target.as_str()
            ));
        }
        out.into_bytes()
    }

    /// Decodes [`Published::encode`]; `None` if anything is malformed (the caller keeps its
    /// table). Entries are re-validated with `check_key`.
    pub fn decode(bytes: &[u8], check_key: impl Fn(&str) -> bool) -> Option<Self> {
        let text = core::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut head = lines.next()?.split(' ');
        let generation = head.next()?.parse().ok()?;
        let opt = |s: &str| (s != "-").then(|| s.to_owned());
        let etag = opt(head.next()?);
        let version = opt(head.next()?);
        let mut table = Table::new();
        for line in lines {
            let mut f = line.split(' ');
            let (key, service, kind, target) = (f.next()?, f.next()?, f.next()?, f.next()?);
            if f.next().is_some() || !check_key(key) || check_name(service).is_err() {
                return None;
            }
            let target = match kind {
                "c" => {
                    check_name(target).ok()?;
                    Target::Cluster(target.to_owned())
                }
                "a" => Target::Address(check_address(target).ok()?),
                _ => return None,
            };
            table.insert(Entry {
                key: key.to_owned(),
                service: service.to_owned(),
                target,
            });
        }
        Some(Self {
            generation,
            etag,
            version,
            table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn entry(key: &str, service: &str, target: Target) -> Entry {
        Entry {
            key: key.into(),
            service: service.into(),
            target,
        }
    }

    #[test]
    fn lookups_and_merge() {
        let mut a = Table::new();
        assert!(a.insert(entry(
            "dev-1",
            "reviews",
            Target::Cluster("reviews-dev-1".into())
        )));
        assert!(!a.insert(entry("dev-1", "reviews", Target::Cluster("other".into()))));
        let mut b = Table::new();
        b.insert(entry(
            "dev-1",
            "reviews",
            Target::Cluster("from-registry".into()),
        ));
        b.insert(entry(
            "dev-1",
            "ratings",
            Target::Address("10.0.0.7:8080".into()),
        ));
        let m = Table::merged(&a, &b);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.get("dev-1", "reviews"),
            Some(&Target::Cluster("reviews-dev-1".into())),
            "the first table wins"
        );
        assert_eq!(
            m.get("dev-1", "ratings").map(Target::as_str),
            Some("10.0.0.7:8080")
        );
        assert_eq!(m.get("dev-2", "reviews"), None);
        assert!(Table::new().is_empty());
    }

    #[test]
    fn names_and_addresses() {
        assert!(check_name("reviews.default.svc").is_ok());
        assert!(check_name("").is_err() && check_name("a b").is_err() && check_name("é").is_err());
        assert_eq!(check_address("127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert_eq!(check_address("[::1]:80").unwrap(), "[::1]:80");
        for bad in ["localhost:80", "127.0.0.1", "127.0.0.1:0", "1.2.3.4:99999"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn published_round_trip_and_rejects_tampering() {
        let mut table = Table::new();
        table.insert(entry(
            "dev-1",
            "reviews",
            Target::Cluster("reviews-dev-1".into()),
        ));
        table.insert(entry(
            "dev-2",
            "ratings",
            Target::Address("[fd00::7]:8080".into()),
        ));
        let p = Published {
            generation: 7,
            etag: Some("W/\"abc\"".into()),
            version: None,
            table,
        };
        let bytes = p.encode();
        assert_eq!(Published::decode(&bytes, |_| true), Some(p.clone()));
        assert_eq!(Published::decode(&bytes, |k| k != "dev-2"), None);
        let text = String::from_utf8(bytes).unwrap();
        for bad in [
            text.replace("v1", "v2"),
            text.replace(" c ", " x "),
            text.replace("[fd00::7]:8080", "evil.example:80"),
            text.replace("7 W", "x W"),
            format!("{text}a b c\n"),
        ] {
            assert_eq!(Published::decode(bad.as_bytes(), |_| true), None, "{bad}");
        }
        assert_eq!(Published::decode(&[0xff], |_| true), None);
    }
}
