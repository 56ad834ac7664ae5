//! The `sandbox_router` glue: root and stream contexts, usable on their own (`sandbox_router.wasm`) or
//! composed by the `meshguard` bundle (which compiles this file as one of its modules).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use meshguard_policy::sandbox::config::{Config, RESPONSE_HEADER, RawConfig};
use meshguard_policy::sandbox::engine::{
    Engine, Fallback, Outcome, Plan, RegistryOutcome, RegistryResponse, RequestInfo,
};
use meshguard_policy::sandbox::extract::{HeaderOp, HeaderReads};
use meshguard_proxy::abi::{self, MapType};
use meshguard_proxy::shared::{SharedData, plugin_name};
use meshguard_proxy::{Counter, Gauge, Metrics, clock, config, http};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

const FILTER: &str = "sandbox_router";
/// Metrics are flushed, the table reloaded and the poll election held this often.
const TICK: Duration = Duration::from_millis(100);
/// The per-sandbox metric of sandboxes beyond `max_sandbox_metrics`.
const OTHER: &str = "~other";

/// Fallback reasons in metric order.
const FALLBACKS: [&str; 4] = ["no_entry", "invalid_key", "stripped", "no_service"];

fn fallback_index(f: Fallback) -> usize {
    match f {
        Fallback::NoEntry => 0,
        Fallback::InvalidKey(_) => 1,
        Fallback::Stripped => 2,
        Fallback::NoService => 3,
    }
}

#[derive(Debug, Default)]
struct Stats {
    routed: Counter,
    fallback: [Counter; 4],
    client_headers_removed: Counter,
    registry_updates: Counter,
    registry_not_modified: Counter,
    registry_errors: Counter,
    table_entries: Gauge,
}

/// Counts since the last tick (metrics are flushed on tick, not per request).
#[derive(Debug, Default)]
struct Pending {
    routed: u64,
    fallback: [u64; 4],
    client_headers_removed: u64,
    /// Routed requests per key (keys come only from table hits, so this is bounded by the
    /// table).
    per_sandbox: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    /// The request headers a decision reads.
    reads: HeaderReads,
    engine: RefCell<Engine>,
    metrics: Metrics,
    stats: Stats,
    pending: RefCell<Pending>,
    /// Per-sandbox counters defined so far (at most `max_sandbox_metrics`, plus `~other`).
    sandbox_counters: RefCell<BTreeMap<String, Counter>>,
    /// Wall-clock second of the last dry-run log line (one per second per worker).
    dry_run_logged_s: Cell<u64>,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut Pending)) {
        if let Ok(mut p) = self.pending.try_borrow_mut() {
            f(&mut p);
        }
    }

    fn flush(&self) {
        let Ok(mut p) = self.pending.try_borrow_mut() else {
            return;
        };
        let p = core::mem::take(&mut *p);
        let s = &self.stats;
        s.routed.add(p.routed);
        for (c, n) in s.fallback.iter().zip(p.fallback) {
            c.add(n);
        }
        s.client_headers_removed.add(p.client_headers_removed);
        let max = self.config.max_sandbox_metrics;
        if max == 0 {
            return;
        }
        let Ok(mut counters) = self.sandbox_counters.try_borrow_mut() else {
            return;
        };
        for (key, n) in p.per_sandbox {
            let name = if counters.contains_key(&key) || counters.len() < max {
                key
            } else {
                OTHER.to_owned()
            };
            let metrics = &self.metrics;
            counters
                .entry(name)
                .or_insert_with_key(|k| metrics.counter(&format!("routed.{k}")))
                .add(n);
        }
    }
}

#[derive(Debug, Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
    /// The registry call in flight.
    poll_token: Option<u32>,
}

impl Context for Root {
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        if self.poll_token != Some(token) {
            return;
        }
        self.poll_token = None;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(registry) = &shared.config.registry else {
            return;
        };
        // The SDK's header getters unwrap; these calls do not.
        let headers = abi::get_map_pairs(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let status = http::values_of(headers.clone(), ":status")
            .first()
            .and_then(|v| core::str::from_utf8(v).ok()?.parse::<u16>().ok());
        let etag = http::values_of(headers, "etag").into_iter().next();
        let body = if status.is_some() && body_size > 0 && body_size <= registry.max_body_bytes {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let response = RegistryResponse {
            status,
            etag: etag.as_deref(),
            body: &body,
            body_len: body_size,
        };
        let outcome = match shared.engine.try_borrow_mut() {
            Ok(mut e) => e.registry_response(&shared.config, response, &mut SharedData),
            Err(_) => return,
        };
        let s = &shared.stats;
        match outcome {
            RegistryOutcome::Updated(entries) => {
                s.registry_updates.inc();
                let total = shared.engine.try_borrow().map_or(0, |e| e.table().len());
                s.table_entries
                    .set(u64::try_from(total).unwrap_or(u64::MAX));
                log::info!(
                    "meshguard {FILTER}: registry table updated ({entries} entries, {total} with static routes)"
                );
            }
            RegistryOutcome::NotModified => s.registry_not_modified.inc(),
            RegistryOutcome::Error(why) => {
                s.registry_errors.inc();
                log::warn!(
                    "meshguard {FILTER}: registry answer rejected, keeping the last table: {why}"
                );
            }
        }
    }
}

/// A short hash of the registry's address, so a config pointing at another registry does not
/// start from the old one's shared table.
fn registry_tag(config: &Config) -> String {
    let Some(r) = &config.registry else {
        return String::new();
    };
    let mut h: u32 = 0x811c_9dc5;
    for b in [&r.cluster, &r.path, &r.authority]
        .iter()
        .flat_map(|s| s.bytes().chain([0]))
    {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!(".{h:08x}")
}

impl Root {
    /// Parses and validates `bytes` (the filter's JSON config) and builds the VM's state;
    /// returns the tick period the filter needs, or `None` (one log line says why).
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    pub fn configure(&mut self, bytes: Option<&[u8]>) -> Option<Duration> {
        let config = config::configure_validated::<RawConfig, Config>(FILTER, bytes)?;
        let period = TICK;
        let metrics = Metrics::new(FILTER);
        let stats = Stats {
            routed: metrics.counter("routed"),
            fallback: FALLBACKS.map(|f| metrics.counter(&format!("fallback.{f}"))),
            client_headers_removed: metrics.counter("client_routing_headers_removed"),
            registry_updates: metrics.counter("registry.updates"),
            registry_not_modified: metrics.counter("registry.not_modified"),
            registry_errors: metrics.counter("registry.errors"),
            table_entries: metrics.gauge("table_entries"),
        };
        let prefix = format!("meshguard.sr.{}{}", plugin_name(), registry_tag(&config));
        let engine = Engine::new(&config, &prefix);
        stats
            .table_entries
            .set(u64::try_from(engine.table().len()).unwrap_or(u64::MAX));
        log::info!(
            "meshguard {FILTER}: configured (mode {}, {} static routes, registry {})",
            config.mode.as_str(),
            config.routes.len(),
            config
                .registry
                .as_ref()
                .map_or("none", |r| r.cluster.as_str())
        );
        self.shared = Some(Rc::new(Shared {
            reads: HeaderReads::new(&config),
            config,
            engine: RefCell::new(engine),
            metrics,
            stats,
            pending: RefCell::new(Pending::default()),
            sandbox_counters: RefCell::new(BTreeMap::new()),
            dry_run_logged_s: Cell::new(0),
        }));
        Some(period)
    }

    /// The state of one request (`None` before a successful `configure`).
    pub fn stream(&self) -> Option<Stream> {
        Some(Stream {
            shared: self.shared.clone()?,
            served_by: None,
            rerouted_to: None,
        })
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration();
        self.configure(bytes.as_deref())
            .is_some_and(|period| config::start_ticking(FILTER, period))
    }

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        shared.flush();
        let Some(registry) = &shared.config.registry else {
            return;
        };
        let tick = match shared.engine.try_borrow_mut() {
            Ok(mut e) => e.tick(&shared.config, clock::wall_nanos(), &mut SharedData),
            Err(_) => return,
        };
        if let Some(entries) = tick.reloaded {
            shared
                .stats
                .table_entries
                .set(u64::try_from(entries).unwrap_or(u64::MAX));
        }
        let Some(headers) = tick.poll else { return };
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match self.dispatch_http_call(&registry.cluster, headers, None, vec![], registry.timeout) {
            Ok(token) => self.poll_token = Some(token),
            Err(status) => {
                shared.stats.registry_errors.inc();
                log::warn!(
                    "meshguard {FILTER}: cannot call the registry on cluster {:?}: {status:?}",
                    registry.cluster
                );
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.stream()?))
    }
}

/// The properties a decision may need, read from the host only when asked.
struct HostInfo;

impl RequestInfo for HostInfo {
    fn cluster_name(&mut self) -> Option<Vec<u8>> {
        http::property(&["xds", "cluster_name"])
    }

    fn source_address(&mut self) -> Option<Vec<u8>> {
        http::property(&["source", "address"])
    }
}

#[derive(Debug)]
pub struct Stream {
    shared: Rc<Shared>,
    /// The key of the sandbox that serves this request (`x-meshguard-sandbox`).
    served_by: Option<String>,
    /// Where this request was rerouted (a cluster, or an address behind the `ORIGINAL_DST`
    /// cluster), when it was.
    rerouted_to: Option<String>,
}

impl Stream {
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn apply(&self, plan: &Plan) {
        for op in &plan.ops {
            let result = match op {
                HeaderOp::Remove(name) => http::remove_request_header(name),
                HeaderOp::Replace(name, value) => http::replace_request_header(name, value),
            };
            if let Err(e) = result {
                log::warn!("meshguard {FILTER}: cannot change request header: {e}");
            }
        }
        if plan.clear_route_cache
            && let Err(e) = http::clear_route_cache()
        {
            log::debug!("meshguard {FILTER}: clear_route_cache: {e}");
        }
    }

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn record(&self, plan: &Plan) {
        let shared = &self.shared;
        let enforce = shared.config.mode.enforces();
        match &plan.outcome {
            Outcome::NoKey => {}
            Outcome::Routed {
                key,
                service,
                target,
            } => {
                http::record_decision(
                    FILTER,
                    &format!(
                        "{} key={key} service={service} target={}",
                        if enforce { "routed" } else { "dry_run_routed" },
                        target.as_str()
                    ),
                );
                shared.count(|p| {
                    p.routed = p.routed.saturating_add(1);
                    match p.per_sandbox.get_mut(key.as_str()) {
                        Some(n) => *n = n.saturating_add(1),
                        None => {
                            p.per_sandbox.insert(key.clone(), 1);
                        }
                    }
                });
                if !enforce {
                    let now_s = clock::wall_nanos() / 1_000_000_000;
                    if shared.dry_run_logged_s.replace(now_s) != now_s {
                        log::info!(
                            "meshguard {FILTER}: dry run: would route key {key} for {service} to {}",
                            target.as_str()
                        );
                    }
                }
            }
            Outcome::Fallback { reason, key } => {
                let key = key.as_deref().unwrap_or("-");
                http::record_decision(
                    FILTER,
                    &format!("baseline reason={} key={key}", reason.as_str()),
                );
                shared.count(|p| {
                    if let Some(n) = p.fallback.get_mut(fallback_index(*reason)) {
                        *n = n.saturating_add(1);
                    }
                });
                log::debug!(
                    "meshguard {FILTER}: baseline ({}), key {key}",
                    reason.as_str()
                );
            }
        }
        if plan.removed_client_headers {
            shared.count(|p| p.client_headers_removed = p.client_headers_removed.saturating_add(1));
        }
    }
}

impl Stream {
    /// The sandbox this request was rerouted to (its cluster, or its address), if it was.
    ///
    /// Envoy answers `xds.cluster_name` from the route the stream had before
    /// `clear_route_cache` until the router picks the new one (checked against 1.40), so a
    /// policy that runs after this one in the same pass must be told where the request goes.
    pub fn rerouted_to(&self) -> Option<&str> {
        self.rerouted_to.as_deref()
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        meshguard_proxy::fault::on_request_headers();
        // Read only the headers a decision needs, one host call each (a header-map dump costs
        // as much as seven reads in Envoy 1.40); a request without any gets here with two or
        // three calls that find nothing.
        let reads = &self.shared.reads;
        let mut headers = Vec::new();
        // Repeated `baggage` headers are joined with a property read (~5 µs), skipped when
        // the first one already holds the key that decides.
        let config = &self.shared.config;
        http::read_request_headers_unless(&reads.sources, &mut headers, |name, first| {
            name == "baggage" && config.first_baggage_value_decides(first)
        });
        let keyed = !headers.is_empty();
        http::read_request_headers(&reads.guards, &mut headers);
        if headers.is_empty() {
            return Action::Continue;
        }
        if keyed {
            http::read_request_headers(&reads.with_key, &mut headers);
        }
        let shared = Rc::clone(&self.shared);
        let plan = match shared.engine.try_borrow() {
            Ok(engine) => engine.decide(&shared.config, &headers, &mut HostInfo),
            Err(_) => return Action::Continue,
        };
        if plan.ops.is_empty() && plan.outcome == Outcome::NoKey {
            return Action::Continue;
        }
        self.apply(&plan);
        self.record(&plan);
        if shared.config.mode.enforces()
            && let Outcome::Routed { target, .. } = &plan.outcome
        {
            self.rerouted_to = Some(target.as_str().to_owned());
        }
        self.served_by = plan.served_by;
        Action::Continue
    }

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(key) = self.served_by.take()
            && let Err(e) =
                abi::replace_map_value(MapType::ResponseHeaders, RESPONSE_HEADER, key.as_bytes())
        {
            log::warn!("meshguard {FILTER}: cannot add {RESPONSE_HEADER}: {e}");
        }
        Action::Continue
    }
}
