//! The `load_shed` glue: root and stream contexts, usable on their own (`load_shed.wasm`) or
//! composed by the `meshguard` bundle (which compiles this file as one of its modules).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use meshguard_policy::load_shed::config::{Config, RawConfig};
use meshguard_policy::load_shed::criticality::{Admit, Criticality};
use meshguard_policy::load_shed::worker::Worker;
use meshguard_policy::num::floor_u32;
use meshguard_policy::per_route::Choice;
use meshguard_policy::{GrpcStatus, Rejection};
use meshguard_proxy::shared::{SharedData, plugin_name};
use meshguard_proxy::{Counter, Gauge, Metrics, clock, config, http};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

const FILTER: &str = "load_shed";

/// Metric handles, defined once per VM.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    limit: Gauge,
    inflight: Gauge,
    baseline_us: Gauge,
    sample_us: Gauge,
    admitted: [Counter; 4],
    rejected: [Counter; 4],
    exempt: Counter,
}

impl Stats {
    fn define() -> Self {
        let m = Metrics::new(FILTER);
        let per_class =
            |what: &str| Criticality::ALL.map(|c| m.counter(&format!("{what}.{}", c.as_str())));
        Self {
            limit: m.gauge("limit"),
            inflight: m.gauge("inflight"),
            baseline_us: m.gauge("baseline_latency_us"),
            sample_us: m.gauge("sample_latency_us"),
            admitted: per_class("admitted"),
            rejected: per_class("rejected"),
            exempt: m.counter("exempt"),
        }
    }
}

/// What every stream of this VM shares.
#[derive(Debug)]
struct Shared {
    config: Config,
    worker: RefCell<Worker>,
    stats: Stats,
    exempt_count: RefCell<u64>,
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
        let period = config.update_interval;
        let prefix = format!("meshguard.load_shed.{}", plugin_name());
        let worker = Worker::new(&config, &prefix, &mut SharedData);
        log::info!(
            "meshguard {FILTER}: configured (mode {}, worker {}, update every {:?})",
            config.mode.as_str(),
            worker.id(),
            config.update_interval
        );
        self.shared = Some(Rc::new(Shared {
            config,
            worker: RefCell::new(worker),
            stats: Stats::define(),
            exempt_count: RefCell::new(0),
        }));
        Some(period)
    }

    /// The state of one request (`None` before a successful `configure`).
    pub fn stream(&self) -> Option<Stream> {
        let shared = self.shared.clone()?;
        Some(Stream {
            shared,
            admitted: None,
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
        let Ok(mut worker) = shared.worker.try_borrow_mut() else {
            return;
        };
        let decided = worker.tick(clock::monotonic_nanos(), &mut SharedData);
        let counts = worker.take_counts();
        drop(worker);
        let s = &shared.stats;
        if let Some(d) = decided {
            s.limit.set(u64::from(floor_u32(d.limit)));
            s.inflight.set(d.inflight);
            s.baseline_us.set(u64::from(floor_u32(d.baseline_us)));
            s.sample_us.set(u64::from(floor_u32(d.sample_us)));
        }
        for (i, n) in counts.admitted.iter().enumerate() {
            if let Some(c) = s.admitted.get(i) {
                c.add(*n);
            }
        }
        for (i, n) in counts.rejected.iter().enumerate() {
            if let Some(c) = s.rejected.get(i) {
                c.add(*n);
            }
        }
        if let Ok(mut exempt) = shared.exempt_count.try_borrow_mut() {
            s.exempt.add(core::mem::take(&mut *exempt));
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.stream()?))
    }
}

/// A request that was counted in flight.
#[derive(Clone, Copy, Debug)]
struct Admitted {
    class: Criticality,
    low_load: bool,
    /// When it was admitted and its sample's weight, if it is timed (`Worker::timing`).
    timed: Option<(u64, u32)>,
}

impl Admitted {
    /// Counts `class` in flight and decides whether to time it (reading the clock only then).
    fn new(worker: &mut Worker, class: Criticality, low_load: bool) -> Self {
        let timed = worker
            .timing(low_load)
            .map(|weight| (clock::monotonic_nanos(), weight));
        Self {
            class,
            low_load,
            timed,
        }
    }
}

#[derive(Debug)]
pub struct Stream {
    shared: Rc<Shared>,
    admitted: Option<Admitted>,
}

impl Context for Stream {}

impl Stream {
    fn rejection(&self) -> Rejection {
        let c = &self.shared.config;
        Rejection {
            http_status: c.status,
            grpc_status: GrpcStatus::Unavailable,
            details: "meshguard_load_shed".into(),
            body: c.body.clone(),
            retry_after: c.retry_after,
            headers: Vec::new(),
        }
    }
}

impl HttpContext for Stream {
    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        meshguard_proxy::fault::on_request_headers();
        let config = &self.shared.config;
        if let Some(per_route) = &config.per_route
            && per_route.choose(http::route_metadata(FILTER).as_deref()) == Choice::Off
        {
            return Action::Continue;
        }
        let (path, method) = (
            if config.needs_path() {
                http::request_header(":path")
            } else {
                None
            },
            if config.needs_method() {
                http::request_header(":method")
            } else {
                None
            },
        );
        let (path, method) = (path.unwrap_or_default(), method.unwrap_or_default());
        if config.is_exempt(&path, &method) {
            if let Ok(mut n) = self.shared.exempt_count.try_borrow_mut() {
                *n = n.saturating_add(1);
            }
            return Action::Continue;
        }
        let header = config
            .criticality_header
            .as_deref()
            .and_then(http::request_header);
        let class = config.classify(header.as_deref(), &path, &method);
        let Ok(mut worker) = self.shared.worker.try_borrow_mut() else {
            return Action::Continue;
        };
        match worker.admit(class) {
            Admit::Yes { low_load } => {
                self.admitted = Some(Admitted::new(&mut worker, class, low_load));
                Action::Continue
            }
            Admit::No { threshold } => {
                // Envoy-wide limit and in-flight are split into per-worker leases: the decision
                // names this worker's share, the class's threshold within it and its in-flight.
                let enforce = config.mode.enforces();
                http::record_decision(
                    FILTER,
                    &format!(
                        "{} reason=overloaded class={} worker_lease={} threshold={threshold} worker_inflight={}",
                        if enforce {
                            "rejected"
                        } else {
                            "dry_run_rejected"
                        },
                        class.as_str(),
                        worker.lease(),
                        worker.inflight()
                    ),
                );
                if !enforce {
                    worker.admit_anyway(class);
                    self.admitted = Some(Admitted::new(&mut worker, class, false));
                    return Action::Continue;
                }
                drop(worker);
                if let Err(e) = http::send_rejection(&self.rejection(), http::is_grpc_request()) {
                    log::warn!("meshguard {FILTER}: local reply refused: {e}");
                    return Action::Continue;
                }
                Action::Pause
            }
        }
    }

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn on_log(&mut self) {
        if let Some(a) = self.admitted.take()
            && let Ok(mut worker) = self.shared.worker.try_borrow_mut()
        {
            match a.timed {
                Some((start_ns, weight)) => {
                    let latency_us = clock::monotonic_nanos().saturating_sub(start_ns) / 1000;
                    worker.complete_timed(a.class, latency_us, a.low_load, weight);
                }
                None => worker.cancel(a.class),
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Admitted but never logged (reset, cancelled): out of flight, no latency sample.
        if let Some(a) = self.admitted.take()
            && let Ok(mut worker) = self.shared.worker.try_borrow_mut()
        {
            worker.cancel(a.class);
        }
    }
}
