//! The `circuit_breaker` glue: root and stream contexts, usable on their own (`circuit_breaker.wasm`) or
//! composed by the `meshguard` bundle (which compiles this file as one of its modules).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use meshguard_policy::circuit_breaker::config::{Config, RawConfig};
use meshguard_policy::circuit_breaker::engine::{Decision, Engine, Finished};
use meshguard_policy::circuit_breaker::outcome::{Observed, Outcome};
use meshguard_policy::circuit_breaker::state::{Admission, Phase, Transition, TripReason};
use meshguard_policy::per_route::Choice;
use meshguard_policy::{GrpcStatus, Rejection};

use meshguard_proxy::shared::{SharedData, plugin_name};
use meshguard_proxy::{Counter, Gauge, Metrics, clock, config, http};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

const FILTER: &str = "circuit_breaker";
/// State gauges defined per VM at most (one per breaker key).
const MAX_STATE_GAUGES: usize = 256;

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    rejected: Counter,
    success: Counter,
    failure: Counter,
    slow: Counter,
    opened: [Counter; 4],
    half_opened: Counter,
    closed: Counter,
    contended: Counter,
}

/// Counts since the last tick (metrics are flushed on tick, not per request).
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    rejected: u64,
    success: u64,
    failure: u64,
    slow: u64,
    contended: u64,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    engine: RefCell<Engine>,
    stats: Stats,
    pending: RefCell<Pending>,
    metrics: Metrics,
    gauges: RefCell<BTreeMap<String, Gauge>>,
}

impl Shared {
    fn transition(&self, key: &str, t: Transition) {
        let s = &self.stats;
        let phase = match t {
            Transition::Opened(reason) => {
                let i = TripReason::ALL
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or(0);
                if let Some(c) = s.opened.get(i) {
                    c.inc();
                }
                log::warn!("meshguard {FILTER}: {key}: opened ({})", reason.as_str());
                Phase::Open
            }
            Transition::HalfOpened => {
                s.half_opened.inc();
                log::info!("meshguard {FILTER}: {key}: half-open, probing");
                Phase::HalfOpen
            }
            Transition::Closed => {
                s.closed.inc();
                log::info!("meshguard {FILTER}: {key}: closed");
                Phase::Closed
            }
        };
        if let Ok(mut gauges) = self.gauges.try_borrow_mut() {
            if !gauges.contains_key(key) && gauges.len() < MAX_STATE_GAUGES {
                let g = self.metrics.gauge(&format!("state.{key}"));
                gauges.insert(key.to_owned(), g);
            }
            if let Some(g) = gauges.get(key) {
                g.set(phase as u64);
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut Pending)) {
        if let Ok(mut p) = self.pending.try_borrow_mut() {
            f(&mut p);
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
        let period = config.evaluation_interval;
        let metrics = Metrics::new(FILTER);
        let stats = Stats {
            rejected: metrics.counter("rejected"),
            success: metrics.counter("outcome.success"),
            failure: metrics.counter("outcome.failure"),
            slow: metrics.counter("outcome.slow"),
            opened: TripReason::ALL.map(|r| metrics.counter(&format!("opened.{}", r.as_str()))),
            half_opened: metrics.counter("half_opened"),
            closed: metrics.counter("closed"),
            contended: metrics.counter("contended"),
        };
        let prefix = format!("meshguard.cb.{}", plugin_name());
        log::info!(
            "meshguard {FILTER}: configured (mode {})",
            config.mode.as_str()
        );
        self.shared = Some(Rc::new(Shared {
            config,
            engine: RefCell::new(Engine::new(&prefix, clock::wall_nanos())),
            stats,
            pending: RefCell::new(Pending::default()),
            metrics,
            gauges: RefCell::new(BTreeMap::new()),
        }));
        Some(period)
    }

    /// The state of one request (`None` before a successful `configure`).
    pub fn stream(&self) -> Option<Stream> {
        Some(Stream {
            shared: self.shared.clone()?,
            call: None,
            observed: Observed::default(),
            rerouted_to: None,
            recent_clock: false,
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
        let transitions = match shared.engine.try_borrow_mut() {
            Ok(mut engine) => {
                engine.tick(&shared.config, clock::monotonic_nanos(), &mut SharedData)
            }
            Err(_) => Vec::new(),
        };
        for (key, t) in transitions {
            shared.transition(&key, t);
        }
        let p = shared
            .pending
            .try_borrow_mut()
            .map(|mut p| core::mem::take(&mut *p))
            .unwrap_or_default();
        let s = &shared.stats;
        s.rejected.add(p.rejected);
        s.success.add(p.success);
        s.failure.add(p.failure);
        s.slow.add(p.slow);
        s.contended.add(p.contended);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.stream()?))
    }
}

/// A call that went to the upstream through a breaker.
#[derive(Debug)]
struct Call {
    key: String,
    decision: Decision,
    start_ns: u64,
}

#[derive(Debug)]
pub struct Stream {
    shared: Rc<Shared>,
    call: Option<Call>,
    observed: Observed,
    /// The cluster this request goes to when an earlier policy rerouted it (see
    /// [`Stream::goes_to`]).
    rerouted_to: Option<String>,
    /// Admission decides on the worker's last clock read (see [`Stream::admit_on_recent_clock`]).
    recent_clock: bool,
}

/// Envoy's `DC` response flag (`StreamInfo::ResponseFlag`, stable since 1.x): the stream was
/// reset because the downstream connection went away.
const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;

/// `response.flags`: a little-endian 64-bit integer (0 when it is not 8 bytes).
fn response_flags(bytes: &[u8]) -> u64 {
    bytes
        .first_chunk::<8>()
        .map_or(0, |b| u64::from_le_bytes(*b))
}

impl Context for Stream {}

impl Stream {
    /// Tells the breaker where an earlier policy of the same pass rerouted the request: after
    /// `clear_route_cache`, Envoy still answers `xds.cluster_name` with the old route's cluster
    /// until the router runs, and a sandbox's failures must not open the baseline's breaker.
    pub fn goes_to(&mut self, cluster: Option<&str>) {
        self.rerouted_to = cluster.map(str::to_owned);
    }

    /// Admits on the time this worker last read (`clock::recent_nanos`, no host call) instead
    /// of reading the clock: for the `meshguard` bundle, where the load shedder's timed
    /// requests and the tick read it often. The breaker's decisions then run behind real time
    /// by the age of that read: a remembered breaker is trusted up to `READ_CACHE_NS` of
    /// that time, and an open breaker half-opens that much later.
    pub fn admit_on_recent_clock(&mut self) {
        self.recent_clock = true;
    }
}

impl Stream {
    fn now_if_timed(&self) -> u64 {
        if self.shared.config.slow_call_ns.is_some() {
            clock::monotonic_nanos()
        } else {
            0
        }
    }
}

impl HttpContext for Stream {
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        meshguard_proxy::fault::on_request_headers();
        if let Some(per_route) = &self.shared.config.per_route
            && per_route.choose(http::route_metadata(FILTER).as_deref()) == Choice::Off
        {
            return Action::Continue;
        }
        let rerouted = self.rerouted_to.take().or_else(|| {
            let h = self.shared.config.cluster_header.as_deref()?;
            http::request_header(h).map(|v| String::from_utf8_lossy(&v).into_owned())
        });
        let cluster = match rerouted {
            Some(c) => c,
            None => {
                let Some(cluster) = http::property(&["xds", "cluster_name"]) else {
                    return Action::Continue; // no route or no cluster: nothing to protect
                };
                String::from_utf8(cluster)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
        };
        let config = &self.shared.config;
        let value = config.key_header.as_deref().and_then(http::request_header);
        let now = if self.recent_clock {
            clock::recent_nanos()
        } else {
            clock::monotonic_nanos()
        };
        let Ok(mut engine) = self.shared.engine.try_borrow_mut() else {
            return Action::Continue;
        };
        let key = engine.key(config, &cluster, value.as_deref(), &mut SharedData);
        let decision = engine.admit(config, &key, now, &mut SharedData);
        drop(engine);
        if decision.contended {
            self.shared
                .count(|p| p.contended = p.contended.saturating_add(1));
        }
        if let Some(t) = decision.transition {
            self.shared.transition(&key, t);
        }
        if let Admission::Reject {
            why,
            retry_after_ns,
        } = decision.admission
        {
            self.shared
                .count(|p| p.rejected = p.rejected.saturating_add(1));
            http::record_decision(
                FILTER,
                &format!(
                    "{} reason={} cluster={cluster}",
                    if config.mode.enforces() {
                        "rejected"
                    } else {
                        "dry_run_rejected"
                    },
                    why.as_str()
                ),
            );
            if config.mode.enforces() {
                let rejection = Rejection {
                    http_status: config.status,
                    grpc_status: GrpcStatus::Unavailable,
                    details: format!("meshguard_circuit_open{{{}}}", why.as_str()),
                    body: config.body.clone(),
                    retry_after: retry_after_ns.map(Duration::from_nanos),
                    headers: Vec::new(),
                };
                match http::send_rejection(&rejection, http::is_grpc_request()) {
                    Ok(()) => return Action::Pause,
                    Err(e) => log::warn!("meshguard {FILTER}: local reply refused: {e}"),
                }
            }
        }
        self.call = Some(Call {
            key,
            decision,
            // Slow-call timing needs the real time, not a recent one.
            start_ns: match (config.slow_call_ns, self.recent_clock) {
                (None, _) => 0,
                (Some(_), false) => now,
                (Some(_), true) => clock::monotonic_nanos(),
            },
        });
        Action::Continue
    }

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.call.is_none() {
            return Action::Continue;
        }
        // Two single reads, not a header-map dump (a dump costs as much as seven reads in
        // Envoy 1.40): `:status`, and `grpc-status`, whose presence marks a gRPC answer
        // (trailers-only, or an error before any message). A gRPC call that streams messages
        // gets its status in the trailers.
        self.observed.http_status = http::response_header(":status")
            .and_then(|v| core::str::from_utf8(&v).ok()?.parse().ok());
        if let Some(v) = http::response_header("grpc-status") {
            self.observed.grpc = true;
            self.observed.grpc_status = GrpcStatus::from_header(&v);
        }
        Action::Continue
    }

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        if self.call.is_some()
            && let Some(v) = http::response_trailer("grpc-status")
        {
            self.observed.grpc = true;
            self.observed.grpc_status = GrpcStatus::from_header(&v);
        }
        Action::Continue
    }

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_log(&mut self) {
        let Some(call) = self.call.take() else { return };
        if self.observed.http_status.is_none() {
            // No response went downstream. Envoy answers upstream failures (connect errors,
            // resets before headers, timeouts) with a local reply this filter sees, so this is
            // mostly a client that went away: that says nothing about the upstream, and must
            // not let any client open a breaker for everyone. One property read, only here.
            self.observed.cancelled = http::property(&["response", "flags"])
                .is_some_and(|f| response_flags(&f) & DOWNSTREAM_CONNECTION_TERMINATION != 0);
        }
        let now = self.now_if_timed();
        let finished = Finished {
            observed: self.observed,
            duration_ns: now.saturating_sub(call.start_ns),
        };
        // The clock only when the outcome writes the breaker (a failure, a probe, an in-flight
        // count): a healthy call makes no clock read here unless slow calls are timed.
        let now_ns = || {
            if now == 0 {
                clock::monotonic_nanos()
            } else {
                now
            }
        };
        let recorded = match self.shared.engine.try_borrow_mut() {
            Ok(mut e) => e.record(
                &self.shared.config,
                &call.key,
                &call.decision,
                &finished,
                now_ns,
                &mut SharedData,
            ),
            Err(_) => return,
        };
        self.shared.count(|p| {
            match recorded.outcome {
                Some(Outcome::Success) => p.success = p.success.saturating_add(1),
                Some(Outcome::Failure) => p.failure = p.failure.saturating_add(1),
                _ => {}
            }
            if recorded.slow {
                p.slow = p.slow.saturating_add(1);
            }
        });
        if let Some(t) = recorded.transition {
            self.shared.transition(&call.key, t);
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Admitted but never logged (the client went away): free a probe slot or in-flight count.
        if let Some(call) = self.call.take()
            && let Ok(mut e) = self.shared.engine.try_borrow_mut()
        {
            e.abandon(
                &self.shared.config,
                &call.key,
                &call.decision,
                clock::monotonic_nanos(),
                &mut SharedData,
            );
        }
    }
}
