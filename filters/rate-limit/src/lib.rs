//! meshguard `rate_limit` filter: token buckets shared by every worker of an Envoy, as thin
//! glue.
//!
//! Decisions live in `meshguard_policy::rate_limit` (descriptors, buckets, the leasing engine);
//! host calls live in `meshguard-proxy`. Per request this filter reads the request headers once
//! (and `source.address` when a rule needs it); below the limit a request usually costs no
//! shared-data call at all (tokens are leased in small batches). See `docs/rate-limit.md`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use meshguard_policy::rate_limit::config::{Config, RawConfig};
use meshguard_policy::rate_limit::descriptor::Request;
use meshguard_policy::rate_limit::engine::{Engine, Source, Verdict};
use meshguard_policy::{GrpcStatus, Rejection};
use meshguard_proxy::abi::{self, MapType};
use meshguard_proxy::shared::{SharedData, plugin_name};
use meshguard_proxy::{Counter, Metrics, clock, config, http};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<Root>::default());
}}

const FILTER: &str = "rate_limit";
/// Leased tokens are handed back this often.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Stats {
    allowed: Counter,
    /// One per rule, then the default bucket.
    limited: Vec<Counter>,
    evictions: Counter,
    contended: Counter,
}

#[derive(Debug, Default)]
struct Pending {
    allowed: u64,
    limited: Vec<u64>,
    contended: u64,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    engine: RefCell<Engine>,
    stats: Stats,
    pending: RefCell<Pending>,
    evictions_flushed: RefCell<u64>,
}

impl Shared {
    fn source_index(&self, s: Source) -> usize {
        match s {
            Source::Rule(i) => i,
            Source::Default => self.config.rules.len(),
        }
    }

    fn source_name(&self, s: Source) -> &str {
        match s {
            Source::Rule(i) => self
                .config
                .rules
                .get(i)
                .map_or("default", |r| r.name.as_str()),
            Source::Default => "default",
        }
    }
}

#[derive(Debug, Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration();
        let Some(config) =
            config::configure_validated::<RawConfig, Config>(FILTER, bytes.as_deref())
        else {
            return false;
        };
        if let Err(e) = abi::set_tick_period(TICK) {
            log::error!("meshguard {FILTER}: cannot set the tick period: {e}");
            return false;
        }
        let m = Metrics::new(FILTER);
        let mut limited: Vec<Counter> = config
            .rules
            .iter()
            .map(|r| m.counter(&format!("limited.{}", r.name)))
            .collect();
        limited.push(m.counter("limited.default"));
        let stats = Stats {
            allowed: m.counter("allowed"),
            limited,
            evictions: m.counter("dynamic_evictions"),
            contended: m.counter("contended"),
        };
        log::info!(
            "meshguard {FILTER}: configured (mode {}, {} rules)",
            config.mode.as_str(),
            config.rules.len()
        );
        let n = config.rules.len().saturating_add(1);
        let prefix = format!("meshguard.rl.{}", plugin_name());
        self.shared = Some(Rc::new(Shared {
            config,
            engine: RefCell::new(Engine::new(&prefix)),
            stats,
            pending: RefCell::new(Pending {
                limited: vec![0; n],
                ..Pending::default()
            }),
            evictions_flushed: RefCell::new(0),
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else { return };
        let evictions = match shared.engine.try_borrow_mut() {
            Ok(mut e) => {
                e.tick(&shared.config, clock::monotonic_nanos(), &mut SharedData);
                e.evictions
            }
            Err(_) => return,
        };
        let s = &shared.stats;
        if let Ok(mut p) = shared.pending.try_borrow_mut() {
            s.allowed.add(core::mem::take(&mut p.allowed));
            s.contended.add(core::mem::take(&mut p.contended));
            for (c, n) in s.limited.iter().zip(p.limited.iter_mut()) {
                c.add(core::mem::take(n));
            }
        }
        if let Ok(mut flushed) = shared.evictions_flushed.try_borrow_mut() {
            s.evictions.add(evictions.saturating_sub(*flushed));
            *flushed = evictions;
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            shared: self.shared.clone()?,
            headers_to_add: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct Stream {
    shared: Rc<Shared>,
    /// `x-ratelimit-*` for the response, when enabled.
    headers_to_add: Vec<(String, String)>,
}

impl Context for Stream {}

/// `x-ratelimit-*` (IETF DRAFT_VERSION_03): limit, remaining, seconds until a token.
fn ratelimit_headers(limit: u32, remaining: u32, reset: Duration) -> Vec<(String, String)> {
    let secs = reset
        .as_secs()
        .saturating_add(u64::from(reset.subsec_nanos() > 0));
    vec![
        ("x-ratelimit-limit".into(), limit.to_string()),
        ("x-ratelimit-remaining".into(), remaining.to_string()),
        ("x-ratelimit-reset".into(), secs.to_string()),
    ]
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let headers = abi::get_map_pairs(MapType::RequestHeaders).unwrap_or_default();
        let source = if config.needs_source_address() {
            abi::get_property(&["source", "address"]).ok().flatten()
        } else {
            None
        };
        let req = Request {
            headers: &headers,
            source_address: source.as_deref(),
        };
        let verdict = match shared.engine.try_borrow_mut() {
            Ok(mut e) => e.decide(config, &req, clock::monotonic_nanos(), &mut SharedData),
            Err(_) => return Action::Continue,
        };
        let spec_of = |s: Source| match s {
            Source::Rule(i) => config.rules.get(i).map(|r| r.bucket),
            Source::Default => config.default_bucket,
        };
        match verdict {
            Verdict::Unlimited => Action::Continue,
            Verdict::Allowed {
                source, remaining, ..
            } => {
                if let Ok(mut p) = shared.pending.try_borrow_mut() {
                    p.allowed = p.allowed.saturating_add(1);
                }
                if config.x_ratelimit_headers
                    && let Some(spec) = spec_of(source) {
                        let missing = f64::from(spec.max_tokens.saturating_sub(remaining));
                        let reset = Duration::from_nanos(spec.time_for(missing));
                        self.headers_to_add = ratelimit_headers(spec.max_tokens, remaining, reset);
                    }
                Action::Continue
            }
            Verdict::Limited {
                source,
                retry_after_ns,
                contended,
                ..
            } => {
                if let Ok(mut p) = shared.pending.try_borrow_mut() {
                    if let Some(n) = p.limited.get_mut(shared.source_index(source)) {
                        *n = n.saturating_add(1);
                    }
                    if contended {
                        p.contended = p.contended.saturating_add(1);
                    }
                }
                if !config.mode.enforces() {
                    if let Some(h) = &config.dry_run_header {
                        let _ = abi::replace_map_value(MapType::RequestHeaders, h, b"1");
                    }
                    return Action::Continue;
                }
                let retry = Duration::from_nanos(retry_after_ns);
                let headers = match (config.x_ratelimit_headers, spec_of(source)) {
                    (true, Some(spec)) => ratelimit_headers(spec.max_tokens, 0, retry),
                    _ => Vec::new(),
                };
                let rejection = Rejection {
                    http_status: config.status,
                    grpc_status: GrpcStatus::ResourceExhausted,
                    details: format!("meshguard_rate_limited{{{}}}", shared.source_name(source)),
                    body: config.body.clone(),
                    retry_after: Some(retry),
                    headers,
                };
                match http::send_rejection(&rejection, http::is_grpc_request()) {
                    Ok(()) => Action::Pause,
                    Err(e) => {
                        log::warn!("meshguard {FILTER}: local reply refused: {e}");
                        Action::Continue
                    }
                }
            }
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (k, v) in core::mem::take(&mut self.headers_to_add) {
            let _ = abi::replace_map_value(MapType::ResponseHeaders, &k, v.as_bytes());
        }
        Action::Continue
    }
}
