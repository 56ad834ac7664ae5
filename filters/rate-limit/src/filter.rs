//! The `rate_limit` glue: root and stream contexts, usable on their own (`rate_limit.wasm`) or
//! composed by the `meshguard` bundle (which compiles this file as one of its modules).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use std::collections::BTreeMap;

use meshguard_policy::headers::HeaderRead;
use meshguard_policy::per_route::Choice;
use meshguard_policy::rate_limit::config::{Config, FailureMode, RawConfig};
use meshguard_policy::rate_limit::descriptor::Request;
use meshguard_policy::rate_limit::engine::{Engine, Source, Verdict};
use meshguard_policy::rate_limit::rls::{self, Answer};
use meshguard_policy::{GrpcStatus, Rejection};
use meshguard_proxy::abi::{self, MapType};
use meshguard_proxy::shared::{SharedData, plugin_name};
use meshguard_proxy::{Counter, Metrics, clock, config, http};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

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
    rls_calls: Counter,
    rls_over_limit: Counter,
    rls_errors: Counter,
    rls_timeouts: Counter,
    rls_failure_mode_allowed: Counter,
    rls_cached_over_limit: Counter,
}

#[derive(Debug, Default)]
struct Pending {
    allowed: u64,
    limited: Vec<u64>,
    contended: u64,
    rls_calls: u64,
    rls_over_limit: u64,
    rls_errors: u64,
    rls_timeouts: u64,
    rls_failure_mode_allowed: u64,
    rls_cached_over_limit: u64,
}

/// OVER_LIMIT answers remembered per worker (bounded), so a client far over a global limit
/// does not cost an RLS call per request.
const MAX_CACHED: usize = 1024;

#[derive(Debug)]
struct Shared {
    config: Config,
    /// The request headers the rules read.
    reads: Vec<HeaderRead>,
    engine: RefCell<Engine>,
    stats: Stats,
    pending: RefCell<Pending>,
    evictions_flushed: RefCell<u64>,
    over_limit: RefCell<BTreeMap<String, u64>>,
}

impl Shared {
    /// Index into the `limited` counters: every rule (profiles' included), then the default
    /// bucket of the top level and of each profile.
    fn source_index(&self, s: Source) -> usize {
        let n = self.config.rules.len();
        match s {
            Source::Rule(i) => i,
            Source::Default(None) => n,
            Source::Default(Some(p)) => n.saturating_add(1).saturating_add(p),
        }
    }

    fn source_name(&self, s: Source) -> String {
        match s {
            Source::Rule(i) => self
                .config
                .rules
                .get(i)
                .map_or_else(|| "default".into(), |r| r.name.clone()),
            Source::Default(None) => "default".into(),
            Source::Default(Some(p)) => self
                .config
                .profiles
                .get(p)
                .map_or_else(|| "default".into(), |pr| format!("{}.default", pr.name)),
        }
    }

    /// The profile this request's route asks for, or `Err(())` when the filter is off there.
    fn route_profile(&self) -> Result<Option<usize>, ()> {
        let c = &self.config;
        if c.per_route.is_none() && c.profiles.is_empty() {
            return Ok(None);
        }
        match c
            .per_route
            .unwrap_or_default()
            .choose(http::route_metadata(FILTER).as_deref())
        {
            Choice::Off => Err(()),
            Choice::On => Ok(None),
            Choice::Profile(name) => match c.profile(&name) {
                Some(i) => Ok(Some(i)),
                None => {
                    log::warn!(
                        "meshguard {FILTER}: route asks for unknown profile {name:?}; using the top level"
                    );
                    Ok(None)
                }
            },
        }
    }
}

#[derive(Debug, Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl Root {
    /// Parses and validates `bytes` (the filter's JSON config) and builds the VM's state;
    /// returns the tick period the filter needs, or `None` (one log line says why).
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    pub fn configure(&mut self, bytes: Option<&[u8]>) -> Option<Duration> {
        let config = config::configure_validated::<RawConfig, Config>(FILTER, bytes)?;
        let period = TICK;
        let m = Metrics::new(FILTER);
        let mut limited: Vec<Counter> = config
            .rules
            .iter()
            .map(|r| m.counter(&format!("limited.{}", r.name)))
            .collect();
        limited.push(m.counter("limited.default"));
        for p in &config.profiles {
            limited.push(m.counter(&format!("limited.{}.default", p.name)));
        }
        let stats = Stats {
            allowed: m.counter("allowed"),
            limited,
            evictions: m.counter("dynamic_evictions"),
            contended: m.counter("contended"),
            rls_calls: m.counter("rls.calls"),
            rls_over_limit: m.counter("rls.over_limit"),
            rls_errors: m.counter("rls.errors"),
            rls_timeouts: m.counter("rls.timeouts"),
            rls_failure_mode_allowed: m.counter("rls.failure_mode_allowed"),
            rls_cached_over_limit: m.counter("rls.cached_over_limit"),
        };
        log::info!(
            "meshguard {FILTER}: configured (mode {}, {} rules)",
            config.mode.as_str(),
            config.rules.len()
        );
        let n = config
            .rules
            .len()
            .saturating_add(1)
            .saturating_add(config.profiles.len());
        let prefix = format!("meshguard.rl.{}", plugin_name());
        self.shared = Some(Rc::new(Shared {
            reads: config.header_reads(),
            config,
            engine: RefCell::new(Engine::new(&prefix)),
            stats,
            pending: RefCell::new(Pending {
                limited: vec![0; n],
                ..Pending::default()
            }),
            evictions_flushed: RefCell::new(0),
            over_limit: RefCell::new(BTreeMap::new()),
        }));
        Some(period)
    }

    /// The state of one request (`None` before a successful `configure`).
    pub fn stream(&self) -> Option<Stream> {
        Some(Stream {
            shared: self.shared.clone()?,
            headers_to_add: Vec::new(),
            rls: None,
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
            s.rls_calls.add(core::mem::take(&mut p.rls_calls));
            s.rls_over_limit.add(core::mem::take(&mut p.rls_over_limit));
            s.rls_errors.add(core::mem::take(&mut p.rls_errors));
            s.rls_timeouts.add(core::mem::take(&mut p.rls_timeouts));
            s.rls_failure_mode_allowed
                .add(core::mem::take(&mut p.rls_failure_mode_allowed));
            s.rls_cached_over_limit
                .add(core::mem::take(&mut p.rls_cached_over_limit));
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
        Some(Box::new(self.stream()?))
    }
}

#[derive(Debug)]
pub struct Stream {
    shared: Rc<Shared>,
    /// Headers for the response (`x-ratelimit-*`, the RLS's `response_headers_to_add`).
    headers_to_add: Vec<(String, String)>,
    /// The RLS call this request waits for.
    rls: Option<RlsCall>,
}

/// A request paused on an RLS call.
#[derive(Debug)]
struct RlsCall {
    token: u32,
    cache_key: String,
    rule: String,
    grpc: bool,
}

/// gRPC `DEADLINE_EXCEEDED`.
const GRPC_DEADLINE_EXCEEDED: u32 = 4;

impl Stream {
    fn count(&self, f: impl FnOnce(&mut Pending)) {
        if let Ok(mut p) = self.shared.pending.try_borrow_mut() {
            f(&mut p);
        }
    }

    /// A global limit said no (`reason`): records the decision and, when enforcing, sends the
    /// "limited" local reply (429 / RESOURCE_EXHAUSTED by default). `Action::Continue` means
    /// the request goes on (dry run, or the reply was refused).
    fn limit(
        &self,
        reason: &str,
        rule: &str,
        retry_after: Duration,
        headers: Vec<(String, String)>,
        body: Option<String>,
        grpc: bool,
    ) -> Action {
        let config = &self.shared.config;
        let enforce = config.mode.enforces();
        http::record_decision(
            FILTER,
            &format!(
                "{} reason={reason} rule={rule} retry_after_ms={}",
                decision_word(enforce),
                retry_after.as_millis()
            ),
        );
        if !enforce {
            return Action::Continue;
        }
        let rejection = Rejection {
            http_status: config.status,
            grpc_status: GrpcStatus::ResourceExhausted,
            details: format!("meshguard_rate_limited{{{rule}}}"),
            body: body.unwrap_or_else(|| config.body.clone()),
            retry_after: Some(retry_after),
            headers,
        };
        match http::send_rejection(&rejection, grpc) {
            Ok(()) => Action::Pause,
            Err(e) => {
                log::warn!("meshguard {FILTER}: local reply refused: {e}");
                Action::Continue
            }
        }
    }

    /// The RLS could not answer: the failure mode decides. Returns whether the request may go.
    fn rls_failed(&self, grpc: bool) -> bool {
        let Some(g) = &self.shared.config.global else {
            return true;
        };
        self.count(|p| p.rls_errors = p.rls_errors.saturating_add(1));
        match g.failure_mode {
            FailureMode::Allow => {
                http::record_decision(FILTER, "admitted reason=rls_failed failure_mode=allow");
                self.count(|p| {
                    p.rls_failure_mode_allowed = p.rls_failure_mode_allowed.saturating_add(1)
                });
                true
            }
            FailureMode::Deny => {
                http::record_decision(FILTER, "rejected reason=rls_failed failure_mode=deny");
                let rejection = Rejection {
                    http_status: g.failure_status,
                    grpc_status: GrpcStatus::Unavailable,
                    details: "meshguard_rate_limit_service_failed".into(),
                    body: "rate limit service unavailable".into(),
                    retry_after: None,
                    headers: Vec::new(),
                };
                if let Err(e) = http::send_rejection(&rejection, grpc) {
                    log::warn!("meshguard {FILTER}: local reply refused: {e}");
                    return true;
                }
                false
            }
        }
    }

    /// Starts the RLS call for a request a local rule admitted; returns the action.
    fn check_global(&mut self, rule: &str, entries: &[(String, Vec<u8>)]) -> Action {
        let shared = Rc::clone(&self.shared);
        let Some(g) = &shared.config.global else {
            return Action::Continue;
        };
        let grpc = http::is_grpc_request();
        let mut cache_key = rule.to_owned();
        for (k, v) in entries {
            cache_key.push('\0');
            cache_key.push_str(k);
            cache_key.push('=');
            cache_key.push_str(&String::from_utf8_lossy(v));
        }
        let now = clock::monotonic_nanos();
        if g.cache_over_limit {
            let until = shared
                .over_limit
                .try_borrow()
                .ok()
                .and_then(|m| m.get(&cache_key).copied());
            if let Some(until) = until.filter(|u| *u > now) {
                self.count(|p| p.rls_cached_over_limit = p.rls_cached_over_limit.saturating_add(1));
                return self.limit(
                    "global_over_limit_cached",
                    rule,
                    Duration::from_nanos(until.saturating_sub(now)),
                    Vec::new(),
                    None,
                    grpc,
                );
            }
        }
        let message = rls::request(&g.domain, entries);
        self.count(|p| p.rls_calls = p.rls_calls.saturating_add(1));
        match self.dispatch_grpc_call(
            &g.cluster,
            rls::SERVICE,
            rls::METHOD,
            Vec::new(),
            Some(&message),
            g.timeout,
        ) {
            Ok(token) => {
                self.rls = Some(RlsCall {
                    token,
                    cache_key,
                    rule: rule.to_owned(),
                    grpc,
                });
                Action::Pause
            }
            Err(status) => {
                log::warn!(
                    "meshguard {FILTER}: cannot call the rate limit service on cluster {:?}: {status:?}",
                    g.cluster
                );
                if self.rls_failed(grpc) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
        }
    }
}

/// What an RLS answer means for the request that waited for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RlsOutcome {
    /// Not this request's call.
    NotOurs,
    /// The request may go on (allowed, dry run, or failure mode allow).
    Go,
    /// A local reply was sent; the request ends here.
    Stopped,
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        if self.on_rls_response(token, status_code, response_size) == RlsOutcome::Go
            && let Err(e) = abi::resume_request()
        {
            log::warn!("meshguard {FILTER}: cannot resume the request: {e}");
        }
    }
}

impl Stream {
    /// Handles the answer to an RLS call (`on_grpc_call_response`); the caller resumes the
    /// request on [`RlsOutcome::Go`].
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    pub fn on_rls_response(
        &mut self,
        token: u32,
        status_code: u32,
        response_size: usize,
    ) -> RlsOutcome {
        let Some(call) = self.rls.take_if(|c| c.token == token) else {
            return RlsOutcome::NotOurs;
        };
        let answer = if status_code == 0 && response_size > rls::MAX_ANSWER_BYTES {
            log::debug!(
                "meshguard {FILTER}: RLS answer of {response_size} bytes refused (over {} bytes)",
                rls::MAX_ANSWER_BYTES
            );
            Answer::Invalid
        } else if status_code == 0 {
            self.get_grpc_call_response_body(0, response_size)
                .map_or(Answer::Invalid, |body| rls::answer(&body))
        } else {
            // Envoy reports its own call timeout as UNAVAILABLE with the message
            // "upstream request timeout{response_timeout}" (checked against 1.40).
            let message = abi::get_status().map(|(_, m)| m).unwrap_or_default();
            let timed_out = status_code == GRPC_DEADLINE_EXCEEDED
                || message.windows(7).any(|w| w == b"timeout");
            if timed_out {
                self.count(|p| p.rls_timeouts = p.rls_timeouts.saturating_add(1));
            }
            Answer::Invalid
        };
        let go = match answer {
            Answer::Ok {
                request_headers,
                response_headers,
            } => {
                for (k, v) in &request_headers {
                    let _ = http::replace_request_header(k, v.as_bytes());
                }
                self.headers_to_add.extend(response_headers);
                true
            }
            Answer::OverLimit {
                reset_ns,
                response_headers,
                body,
            } => {
                self.count(|p| p.rls_over_limit = p.rls_over_limit.saturating_add(1));
                let now = clock::monotonic_nanos();
                let global = self.shared.config.global.as_ref();
                if let (Some(reset), Some(true)) = (reset_ns, global.map(|g| g.cache_over_limit))
                    && let Ok(mut m) = self.shared.over_limit.try_borrow_mut()
                {
                    if m.len() >= MAX_CACHED {
                        m.retain(|_, until| *until > now);
                    }
                    if m.len() < MAX_CACHED {
                        m.insert(call.cache_key.clone(), now.saturating_add(reset));
                    }
                }
                let body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
                let retry = Duration::from_nanos(reset_ns.unwrap_or(1_000_000_000));
                let action = self.limit(
                    "global_over_limit",
                    &call.rule,
                    retry,
                    response_headers,
                    body,
                    call.grpc,
                );
                if action != Action::Continue {
                    return RlsOutcome::Stopped;
                }
                true
            }
            Answer::Invalid => self.rls_failed(call.grpc),
        };
        if go {
            RlsOutcome::Go
        } else {
            RlsOutcome::Stopped
        }
    }
}

/// The first word of a recorded decision for a request a limit said no to.
const fn decision_word(enforce: bool) -> &'static str {
    if enforce {
        "rejected"
    } else {
        "dry_run_rejected"
    }
}

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
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        meshguard_proxy::fault::on_request_headers();
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let Ok(profile) = shared.route_profile() else {
            return Action::Continue;
        };
        let mut headers = Vec::new();
        http::read_request_headers(&shared.reads, &mut headers);
        let source = if config.needs_source_address() {
            http::property(&["source", "address"])
        } else {
            None
        };
        let req = Request {
            headers: &headers,
            source_address: source.as_deref(),
        };
        let verdict = match shared.engine.try_borrow_mut() {
            Ok(mut e) => e.decide_in(
                config,
                profile,
                &req,
                clock::monotonic_nanos,
                &mut SharedData,
            ),
            Err(_) => return Action::Continue,
        };
        let spec_of = |s: Source| match s {
            Source::Rule(i) => config.rules.get(i).and_then(|r| r.bucket),
            Source::Default(p) => config.default_of(p),
        };
        match verdict {
            Verdict::Unlimited => Action::Continue,
            Verdict::Allowed {
                source,
                remaining,
                entries,
            } => {
                if let Ok(mut p) = shared.pending.try_borrow_mut() {
                    p.allowed = p.allowed.saturating_add(1);
                }
                if let Source::Rule(i) = source
                    && config.rules.get(i).is_some_and(|r| r.global)
                {
                    return self.check_global(&shared.source_name(source), &entries);
                }
                if config.x_ratelimit_headers
                    && let Some(spec) = spec_of(source)
                {
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
                http::record_decision(
                    FILTER,
                    &format!(
                        "{} reason=local_limit rule={} retry_after_ms={}",
                        decision_word(config.mode.enforces()),
                        shared.source_name(source),
                        retry_after_ns / 1_000_000
                    ),
                );
                if !config.mode.enforces() {
                    if let Some(h) = &config.dry_run_header {
                        let _ = http::replace_request_header(h, b"1");
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

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (k, v) in core::mem::take(&mut self.headers_to_add) {
            let _ = abi::replace_map_value(MapType::ResponseHeaders, &k, v.as_bytes());
        }
        Action::Continue
    }
}
