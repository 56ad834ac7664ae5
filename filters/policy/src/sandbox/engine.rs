//! One worker VM's side of sandbox routing: the decision per request, and the registry table
//! shared by all workers.
//!
//! **Per request** ([`Engine::decide`]) the filter hands over the request headers it read (only
//! those [`extract::HeaderReads`] names) and gets a [`Plan`]: the outcome (for metrics and logs) and the header changes
//! to make. Properties that cost a host call — the route's cluster (`xds.cluster_name`) and
//! the client address — are asked for through [`RequestInfo`] only when a key was found, and
//! always before any header changes (within the callback that changes a routing header Envoy
//! keeps reporting the old route). Targets come only from the table.
//!
//! **The registry** is polled by one worker per period, elected through shared data: on each
//! tick every worker reads `<prefix>/poll` (the wall-clock time of the next poll) and the one
//! whose compare-and-swap moves it one period ahead makes the call ([`Engine::tick`]). The
//! answer ([`Engine::registry_response`]) is validated, and a new table is published as
//! `<prefix>/table` ([`Published`]) with a generation number, then announced in
//! `<prefix>/gen`; every worker reads the 8-byte generation on each tick and reloads the
//! table when it changes, so all workers agree within one tick. A `304 Not Modified` (the
//! stored `ETag` is sent as `if-none-match`), an unchanged `version`, or an unchanged body
//! publishes nothing. Any error — a failed call, a non-200 status, a body too large or invalid
//! — keeps the last good table everywhere and is counted. Wall-clock time is used for the
//! election because every VM reads the same wall clock (monotonic time here is per VM).

use super::cidr;
use super::config::{Config, ORIGINAL_DST_HEADER, Registry, ServiceFrom};
use super::extract::{self, HeaderOp, Inspection};
use super::key::KeyError;
use super::registry;
use super::table::{Published, Table, Target};
use crate::store::Store;

/// CAS attempts on shared data before giving up for this tick.
pub const MAX_CAS_ATTEMPTS: u32 = 8;
/// Longest `ETag` kept.
pub const MAX_ETAG_LEN: usize = 256;

/// Request properties that cost a host call, read only when needed.
pub trait RequestInfo {
    /// `xds.cluster_name` of the matched route.
    fn cluster_name(&mut self) -> Option<Vec<u8>>;
    /// `source.address` (`ip:port`).
    fn source_address(&mut self) -> Option<Vec<u8>>;
}

/// Why a request with key material went to its baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No table entry for (key, service).
    NoEntry,
    /// The candidate is not a valid key.
    InvalidKey(KeyError),
    /// Edge mode, untrusted source: keys stripped.
    Stripped,
    /// The destination service is unknown (no route cluster, no authority, or the route was
    /// picked by a client-sent routing header).
    NoService,
}

impl Fallback {
    /// The metric suffix (`fallback.<name>`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoEntry => "no_entry",
            Self::InvalidKey(_) => "invalid_key",
            Self::Stripped => "stripped",
            Self::NoService => "no_service",
        }
    }
}

/// What was decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// No routing key.
    #[default]
    NoKey,
    /// Routed to a sandbox (in dry run: would have been).
    Routed {
        /// The key.
        key: String,
        /// The service.
        service: String,
        /// The target.
        target: Target,
    },
    /// Sent to the baseline.
    Fallback {
        /// Why.
        reason: Fallback,
        /// The key, when valid.
        key: Option<String>,
    },
}

/// The decision on one request and what to do about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The outcome.
    pub outcome: Outcome,
    /// Header changes, in order.
    pub ops: Vec<HeaderOp>,
    /// Call Envoy's `clear_route_cache` after the changes.
    pub clear_route_cache: bool,
    /// The client sent a routing header (removed).
    pub removed_client_headers: bool,
    /// `x-meshguard-sandbox` value for the response.
    pub served_by: Option<String>,
}

/// What a tick asks the filter to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// A newer registry table was loaded (entries in the merged table).
    pub reloaded: Option<usize>,
    /// This worker won the poll: call the registry with these headers.
    pub poll: Option<Vec<(String, String)>>,
}

/// The registry's answer, as the filter received it.
#[derive(Clone, Copy, Debug)]
pub struct RegistryResponse<'a> {
    /// `:status`; `None` when the call failed without a response.
    pub status: Option<u16>,
    /// `etag` header.
    pub etag: Option<&'a [u8]>,
    /// Body (the filter does not fetch bodies over `max_body_bytes`; `body_len` says how long
    /// it was).
    pub body: &'a [u8],
    /// Length of the body the host reported.
    pub body_len: usize,
}

/// What became of a registry answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryOutcome {
    /// A new table was published (entries in it).
    Updated(usize),
    /// Nothing changed.
    NotModified,
    /// Rejected; the last good table stays.
    Error(String),
}

/// Per-worker state.
#[derive(Debug)]
pub struct Engine {
    prefix: String,
    statics: Table,
    /// Static entries merged with the registry's.
    table: Table,
    /// Generation of the registry table loaded (0: none).
    generation: u64,
    /// A generation announced but whose table did not decode (not retried every tick).
    bad_generation: u64,
    etag: Option<String>,
    version: Option<String>,
    registry: Table,
}

impl Engine {
    /// An engine whose shared keys start with `prefix`, starting with the static routes.
    pub fn new(config: &Config, prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            statics: config.routes.clone(),
            table: config.routes.clone(),
            generation: 0,
            bad_generation: 0,
            etag: None,
            version: None,
            registry: Table::new(),
        }
    }

    /// The merged table in force on this worker.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Generation of the registry table in force (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Decides one request from its headers.
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    pub fn decide(
        &self,
        config: &Config,
        headers: &[(Vec<u8>, Vec<u8>)],
        info: &mut impl RequestInfo,
    ) -> Plan {
        let insp = extract::inspect(config, headers);
        let mut plan = Plan::default();
        // Only this filter may set routing headers: remove whatever the client sent, always.
        if insp.routing_header {
            plan.ops
                .push(HeaderOp::Remove(config.routing_header.clone()));
        }
        if insp.original_dst_header {
            plan.ops.push(HeaderOp::Remove(ORIGINAL_DST_HEADER.into()));
        }
        plan.removed_client_headers = !plan.ops.is_empty();
        plan.clear_route_cache = config.clear_route_cache && plan.removed_client_headers;
        if !insp.key_material {
            return plan;
        }
        let enforce = config.mode.enforces();
        let valid_key = insp.key.clone().and_then(Result::ok);
        if let Some(edge) = &config.edge {
            let trusted = insp.trusted_header
                || (!edge.trusted_source_cidrs.is_empty()
                    && info
                        .source_address()
                        .as_deref()
                        .and_then(cidr::source_ip)
                        .is_some_and(|ip| {
                            edge.trusted_source_cidrs.iter().any(|c| c.contains(ip))
                        }));
            if !trusted {
                plan.outcome = Outcome::Fallback {
                    reason: Fallback::Stripped,
                    key: valid_key,
                };
                if enforce {
                    plan.ops.extend(extract::strip_ops(config, headers));
                }
                return plan;
            }
        }
        let key = match &insp.key {
            None => return plan,
            Some(Err(e)) => {
                plan.outcome = Outcome::Fallback {
                    reason: Fallback::InvalidKey(*e),
                    key: None,
                };
                return plan;
            }
            Some(Ok(k)) => k.clone(),
        };
        let Some(service) = service(config, &insp, info) else {
            plan.outcome = Outcome::Fallback {
                reason: Fallback::NoService,
                key: Some(key),
            };
            return plan;
        };
        let Some(target) = self.table.get(&key, &service) else {
            plan.outcome = Outcome::Fallback {
                reason: Fallback::NoEntry,
                key: Some(key),
            };
            return plan;
        };
        if enforce {
            let (cluster, address) = match target {
                Target::Cluster(c) => (c.as_str(), None),
                Target::Address(a) => (config.original_dst_cluster.as_str(), Some(a)),
            };
            plan.ops.retain(|op| {
                !matches!(op, HeaderOp::Remove(n) if *n == config.routing_header
                    || (address.is_some() && n == ORIGINAL_DST_HEADER))
            });
            plan.ops.push(HeaderOp::Replace(
                config.routing_header.clone(),
                cluster.as_bytes().to_vec(),
            ));
            if let Some(a) = address {
                plan.ops.push(HeaderOp::Replace(
                    ORIGINAL_DST_HEADER.into(),
                    a.as_bytes().to_vec(),
                ));
            }
            plan.clear_route_cache = config.clear_route_cache;
            plan.served_by = config.response_header.then(|| key.clone());
        }
        plan.outcome = Outcome::Routed {
            key,
            service,
            target: target.clone(),
        };
        plan
    }

    /// Periodic work: reload a newer registry table, and take part in the poll election.
    /// `now_wall_ns` is wall-clock time (the same in every VM).
    pub fn tick(&mut self, config: &Config, now_wall_ns: u64, store: &mut impl Store) -> Tick {
        let Some(registry) = &config.registry else {
            return Tick::default();
        };
        let reloaded = self.reload(config, store).then(|| self.table.len());
        let poll = self
            .elect(registry, now_wall_ns, store)
            .then(|| self.poll_headers(registry));
        Tick { reloaded, poll }
    }

    fn reload(&mut self, config: &Config, store: &mut impl Store) -> bool {
        let Some(generation) = store.get(&self.key("gen")).and_then(|(v, _)| read_u64(&v)) else {
            return false;
        };
        if generation == self.generation || generation == self.bad_generation {
            return false;
        }
        let decoded = store
            .get(&self.key("table"))
            .and_then(|(v, _)| Published::decode(&v, |k| config.keys.plain(k.as_bytes()).is_ok()));
        match decoded {
            Some(p) if p.generation != self.generation => {
                self.install(p);
                true
            }
            Some(_) => false,
            None => {
                self.bad_generation = generation;
                false
            }
        }
    }

    fn install(&mut self, p: Published) {
        self.table = Table::merged(&self.statics, &p.table);
        self.generation = p.generation;
        self.etag = p.etag;
        self.version = p.version;
        self.registry = p.table;
    }

    /// True when this worker won the poll due now.
    fn elect(&self, registry: &Registry, now: u64, store: &mut impl Store) -> bool {
        let key = self.key("poll");
        let period = u64::try_from(registry.poll_interval.as_nanos()).unwrap_or(u64::MAX);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((value, cas)) = store.get(&key) else {
                // Create it, then compete with CAS like everyone else (a set on a missing key
                // ignores CAS, so creating is not itself an election).
                store.set(&key, &0u64.to_le_bytes(), 0);
                continue;
            };
            let next = read_u64(&value).unwrap_or(0);
            // Not due yet (unless the clock jumped back by more than a period).
            if now < next && next.saturating_sub(now) <= period.saturating_mul(2) {
                return false;
            }
            if store.set(&key, &now.saturating_add(period).to_le_bytes(), cas) {
                return true;
            }
        }
        false
    }

    fn poll_headers(&self, registry: &Registry) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_owned(), "GET".to_owned()),
            (":path".to_owned(), registry.path.clone()),
            (":authority".to_owned(), registry.authority.clone()),
            ("accept".to_owned(), "application/json".to_owned()),
            (
                "user-agent".to_owned(),
                "meshguard-sandbox-router".to_owned(),
            ),
        ];
        if let Some(etag) = &self.etag {
            h.push(("if-none-match".to_owned(), etag.clone()));
        }
        h
    }

    /// Handles the registry's answer to this worker's poll.
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    pub fn registry_response(
        &mut self,
        config: &Config,
        response: RegistryResponse<'_>,
        store: &mut impl Store,
    ) -> RegistryOutcome {
        let Some(registry) = &config.registry else {
            return RegistryOutcome::NotModified;
        };
        match response.status {
            None => return RegistryOutcome::Error("no response (reset or timeout)".into()),
            Some(304) => return RegistryOutcome::NotModified,
            Some(200) => {}
            Some(s) => return RegistryOutcome::Error(format!("status {s}")),
        }
        if response.body_len > registry.max_body_bytes
            || response.body.len() > registry.max_body_bytes
        {
            return RegistryOutcome::Error(format!(
                "body of {} bytes is over max_body_bytes {}",
                response.body_len.max(response.body.len()),
                registry.max_body_bytes
            ));
        }
        let doc = match registry::parse(response.body, &config.keys, registry.max_entries) {
            Ok(d) => d,
            Err(e) => return RegistryOutcome::Error(e),
        };
        let etag = response
            .etag
            .filter(|e| {
                // `-` is "no ETag" in the published table (see registry::parse for versions).
                !e.is_empty()
                    && *e != b"-"
                    && e.len() <= MAX_ETAG_LEN
                    && e.iter().all(u8::is_ascii_graphic)
            })
            .and_then(|e| String::from_utf8(e.to_vec()).ok());
        let table_key = self.key("table");
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (current, cas) = match store.get(&table_key) {
                Some((v, cas)) => (
                    Published::decode(&v, |k| config.keys.plain(k.as_bytes()).is_ok())
                        .unwrap_or_default(),
                    cas,
                ),
                None => (Published::default(), 0),
            };
            let unchanged = if doc.version.is_some() {
                doc.version == current.version
            } else {
                doc.table == current.table && etag == current.etag
            };
            if unchanged && current.generation > 0 {
                if current.generation != self.generation {
                    self.install(current);
                }
                return RegistryOutcome::NotModified;
            }
            let next = Published {
                generation: current.generation.max(self.generation).saturating_add(1),
                etag: etag.clone(),
                version: doc.version.clone(),
                table: doc.table.clone(),
            };
            if store.set(&table_key, &next.encode(), cas) {
                store.set(&self.key("gen"), &next.generation.to_le_bytes(), 0);
                let entries = next.table.len();
                self.install(next);
                return RegistryOutcome::Updated(entries);
            }
        }
        RegistryOutcome::Error("shared data contention".into())
    }
}

fn service(config: &Config, insp: &Inspection<'_>, info: &mut impl RequestInfo) -> Option<String> {
    match config.service_from {
        // A client-sent routing header picked the route: its cluster says nothing.
        ServiceFrom::Cluster if insp.routing_header => None,
        ServiceFrom::Cluster => String::from_utf8(info.cluster_name()?).ok(),
        ServiceFrom::Authority => extract::authority_host(insp.authority?),
    }
}

fn read_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests;
