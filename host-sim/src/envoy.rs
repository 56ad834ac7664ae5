//! The simulated Envoy: N worker VMs plus the main-thread VM running one plugin, streams driven
//! by the test, and virtual time.
//!
//! Start-up follows cpp-host: a canary VM runs `on_vm_start`/`on_configure` first (a rejected
//! config fails [`EnvoyBuilder::build`] with the module's log lines), then the main-thread VM
//! and one VM per worker are started and configured. Streams go round-robin over workers unless
//! pinned. Time only moves with [`Envoy::advance`]; every operation then runs the work that is
//! due (ticks, queue notifications, callout responses, upstream responses, timeouts) in time
//! order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::abi::LogLevel;
use crate::callout::{CalloutRecord, GrpcResponder, HttpResponder};
use crate::clock::ns;
use crate::config::{ClusterSpec, FailurePolicy, NodeSpec, RouteSpec, SimConfig};
use crate::error::{Error, Result};
use crate::host::{Slot, VmRef};
use crate::metrics::{HostCalls, Metrics};
use crate::module::Module;
use crate::trace::{LogLine, TraceEvent, TraceKind};
use crate::upstream::Upstream;
use crate::vm::Vm;
use crate::world::{ForeignCall, World};

mod callouts;
mod dispatch;
mod filter;
mod forward;
mod ops;
pub(crate) mod stream;

use stream::Stream;
pub use stream::{LocalReply, Message, StreamId, StreamRecord, Verdict};

/// Configures and starts a simulated Envoy. Defaults: 2 workers, empty configs, vm_id and
/// root_id `""`, FAIL_CLOSED, log level info, one cluster `upstream` routed by a catch-all
/// route `default`, 15 s route timeout, Envoy's buffer limit for the protocol, seed 1.
#[derive(Debug)]
pub struct EnvoyBuilder {
    module: Module,
    cfg: SimConfig,
}

impl EnvoyBuilder {
    /// Number of worker VMs (at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n.max(1);
        self
    }
    /// Plugin configuration (`configuration` of the filter).
    pub fn plugin_config(mut self, c: impl Into<Vec<u8>>) -> Self {
        self.cfg.plugin_config = c.into();
        self
    }
    /// VM configuration (`vm_config.configuration`).
    pub fn vm_config(mut self, c: impl Into<Vec<u8>>) -> Self {
        self.cfg.vm_config = c.into();
        self
    }
    /// `vm_config.vm_id` (shared data and queues are scoped by it).
    pub fn vm_id(mut self, id: &str) -> Self {
        self.cfg.vm_id = id.into();
        self
    }
    /// `root_id`.
    pub fn root_id(mut self, id: &str) -> Self {
        self.cfg.root_id = id.into();
        self
    }
    /// Plugin `name` (`plugin_name` property).
    pub fn plugin_name(mut self, n: &str) -> Self {
        self.cfg.plugin_name = n.into();
        self
    }
    /// An environment variable visible through WASI `environ_get`.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cfg.env.push((k.into(), v.into()));
        self
    }
    /// Envoy's log level (what `proxy_get_log_level` answers; lower lines are dropped).
    pub fn log_level(mut self, l: LogLevel) -> Self {
        self.cfg.log_level = l;
        self
    }
    /// Failure policy.
    pub fn failure_policy(mut self, p: FailurePolicy) -> Self {
        self.cfg.failure_policy = p;
        self
    }
    /// FAIL_RELOAD backoff base (default 1 s).
    pub fn reload_backoff(mut self, d: Duration) -> Self {
        self.cfg.reload_backoff = d;
        self
    }
    /// `allow_on_headers_stop_iteration` (default false: Pause on headers stops everything).
    pub fn allow_on_headers_stop_iteration(mut self, v: bool) -> Self {
        self.cfg.allow_on_headers_stop_iteration = v;
        self
    }
    /// The connection manager's request-header mutations, on by default as in Envoy (checked
    /// against Envoy 1.40): before the filter sees the request, `:scheme: http` (HTTP/1.x
    /// requests have none), `x-forwarded-proto: http` and an `x-request-id` (a UUID v4,
    /// deterministic per seed and stream) are added when absent.
    pub fn hcm_headers(mut self, on: bool) -> Self {
        self.cfg.hcm_headers = on;
        self
    }
    /// The router's `suppress_envoy_headers` (default false: upstream responses, routed and
    /// callouts, get `x-envoy-upstream-service-time` appended before the filter sees them).
    pub fn suppress_envoy_headers(mut self, on: bool) -> Self {
        self.cfg.suppress_envoy_headers = on;
        self
    }
    /// Per-stream buffer limit (413 when a paused request body exceeds it). Default: Envoy's
    /// for the downstream protocol — 1 MiB (`per_connection_buffer_limit_bytes`) for
    /// HTTP/1.x, 256 MiB (the h2 `initial_stream_window_size`) for HTTP/2.
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.cfg.buffer_limit = Some(bytes);
        self
    }
    /// Fuel per call into the VM (an infinite loop traps when it runs out).
    pub fn fuel_per_call(mut self, fuel: u64) -> Self {
        self.cfg.fuel_per_call = fuel;
        self
    }
    /// Route timeout (None disables it).
    pub fn route_timeout(mut self, d: Option<Duration>) -> Self {
        self.cfg.route_timeout = d;
        self
    }
    /// Adds (or replaces) a cluster.
    pub fn cluster(mut self, c: impl Into<ClusterSpec>) -> Self {
        let c = c.into();
        self.cfg.clusters.insert(c.name.clone(), c);
        self
    }
    /// Replaces the routes (first match wins). Clusters they name are added if missing.
    pub fn routes(mut self, routes: Vec<RouteSpec>) -> Self {
        for r in &routes {
            self.cfg
                .clusters
                .entry(r.cluster.clone())
                .or_insert_with(|| ClusterSpec::new(r.cluster.clone()));
        }
        self.cfg.routes = routes;
        self
    }
    /// The node (`xds.node`).
    pub fn node(mut self, n: NodeSpec) -> Self {
        self.cfg.node = n;
        self
    }
    /// Downstream protocol reported by `request.protocol` (default `HTTP/1.1`).
    pub fn protocol(mut self, p: &str) -> Self {
        self.cfg.protocol = p.into();
        self
    }
    /// RNG seed (WASI `random_get`, FAIL_RELOAD jitter, load arrivals).
    pub fn seed(mut self, s: u64) -> Self {
        self.cfg.seed = s;
        self
    }
    /// Wall clock at start, ns since the Unix epoch.
    pub fn wall_start_ns(mut self, t: u64) -> Self {
        self.cfg.wall_start_ns = t;
        self
    }
    /// Record the trace (default true; the load driver turns it off).
    pub fn tracing(mut self, on: bool) -> Self {
        self.cfg.tracing = on;
        self
    }
    /// Maximum log lines kept (later ones are counted and dropped).
    pub fn log_cap(mut self, n: usize) -> Self {
        self.cfg.log_cap = n;
        self
    }

    /// Starts the simulated Envoy.
    ///
    /// # Errors
    /// [`Error::ConfigRejected`] when `on_configure` returns false (with the module's logs),
    /// [`Error::StartFailed`] when a VM cannot start, [`Error::Abi`] for a bad module.
    pub fn build(self) -> Result<Envoy> {
        let cfg = Arc::new(self.cfg);
        let world = Arc::new(Mutex::new(World::new(
            cfg.seed,
            cfg.wall_start_ns,
            cfg.tracing,
            cfg.log_cap,
        )));
        // The canary: configure once on a throw-away clone; its verdict decides.
        {
            let mut canary = Vm::new(
                &self.module,
                world.clone(),
                cfg.clone(),
                VmRef {
                    slot: Slot::Canary,
                    generation: 0,
                },
            )?;
            canary.start_plugin()?;
            world
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .outbox
                .clear();
        }
        let mut envoy = Envoy {
            module: self.module,
            cfg: cfg.clone(),
            world,
            main: SlotVms {
                vms: Vec::new(),
                last_load_ns: 0,
            },
            workers: Vec::new(),
            streams: HashMap::new(),
            finished: BTreeMap::new(),
            ctx_index: HashMap::new(),
            next_stream: 1,
            rr: 0,
            http_responders: HashMap::new(),
            grpc_responders: HashMap::new(),
            upstream: None,
        };
        let main = envoy.start_vm(VmRef {
            slot: Slot::Main,
            generation: 0,
        })?;
        envoy.main.vms.push(main);
        for i in 0..cfg.workers {
            let vm = envoy.start_vm(VmRef {
                slot: Slot::Worker(i),
                generation: 0,
            })?;
            envoy.workers.push(SlotVms {
                vms: vec![vm],
                last_load_ns: 0,
            });
        }
        envoy.dispatch_outbox();
        envoy.drain();
        Ok(envoy)
    }
}

pub(crate) struct SlotVms {
    pub vms: Vec<Vm>,
    pub last_load_ns: u64,
}

/// A simulated Envoy running one proxy-wasm plugin.
pub struct Envoy {
    module: Module,
    pub(crate) cfg: Arc<SimConfig>,
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) main: SlotVms,
    pub(crate) workers: Vec<SlotVms>,
    pub(crate) streams: HashMap<u64, Stream>,
    pub(crate) finished: BTreeMap<u64, StreamRecord>,
    pub(crate) ctx_index: HashMap<(VmRef, u32), u64>,
    next_stream: u64,
    rr: usize,
    pub(crate) http_responders: HashMap<String, HttpResponder>,
    pub(crate) grpc_responders: HashMap<String, GrpcResponder>,
    pub(crate) upstream: Option<Box<dyn Upstream>>,
}

impl std::fmt::Debug for Envoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envoy")
            .field("module", &self.module)
            .field("workers", &self.workers.len())
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl Envoy {
    /// A builder for `module`.
    pub fn builder(module: Module) -> EnvoyBuilder {
        EnvoyBuilder {
            module,
            cfg: SimConfig::default(),
        }
    }

    fn start_vm(&mut self, r: VmRef) -> Result<Vm> {
        let mut vm = Vm::new(&self.module, self.world.clone(), self.cfg.clone(), r)?;
        vm.start_plugin()?;
        Ok(vm)
    }

    pub(crate) fn w(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.w().now()
    }

    pub(crate) fn vm_mut(&mut self, r: VmRef) -> Option<&mut Vm> {
        let slot = match r.slot {
            Slot::Main => &mut self.main,
            Slot::Worker(i) => self.workers.get_mut(i)?,
            Slot::Canary => return None,
        };
        slot.vms.get_mut(r.generation as usize)
    }

    pub(crate) fn current_vm(&self, worker: usize) -> Option<VmRef> {
        let s = self.workers.get(worker)?;
        let generation = u32::try_from(s.vms.len().checked_sub(1)?).ok()?;
        Some(VmRef {
            slot: Slot::Worker(worker),
            generation,
        })
    }

    // === time ===

    /// Virtual time since the simulation started.
    pub fn now(&self) -> Duration {
        self.w().clock.elapsed()
    }

    /// Wall clock the module sees, ns since the Unix epoch.
    pub fn wall_clock_ns(&self) -> u64 {
        self.w().clock.wall_ns()
    }

    /// Advances virtual time by `d`, firing everything due on the way, in time order.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now_ns().saturating_add(ns(d));
        self.run_until(target);
    }

    /// Advances to `t` since the start (no-op if already past).
    pub fn advance_to(&mut self, t: Duration) {
        self.run_until(ns(t));
    }

    /// Time until the next scheduled event, if any.
    pub fn next_event_in(&self) -> Option<Duration> {
        let w = self.w();
        w.sched
            .next_time()
            .map(|t| Duration::from_nanos(t.saturating_sub(w.now())))
    }

    pub(crate) fn run_until(&mut self, target: u64) {
        loop {
            let next = {
                let mut w = self.w();
                let e = w.sched.pop_due(target);
                if let Some((t, _)) = &e {
                    w.clock.set(*t);
                }
                e
            };
            match next {
                Some((_, ev)) => self.handle(ev),
                None => break,
            }
        }
        self.w().clock.set(target);
    }

    /// Runs the work due now (posted callbacks, zero-latency responses).
    pub(crate) fn drain(&mut self) {
        let now = self.now_ns();
        self.run_until(now);
    }

    // === observation ===

    /// Every log line so far (all VMs, including the canary).
    pub fn logs(&self) -> Vec<LogLine> {
        self.w().rec.logs.clone()
    }

    /// Log lines containing `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<LogLine> {
        self.w()
            .rec
            .logs
            .iter()
            .filter(|l| l.message.contains(needle))
            .cloned()
            .collect()
    }

    /// Forgets the log lines kept so far.
    pub fn clear_logs(&mut self) {
        self.w().rec.logs.clear();
    }

    /// The trace so far.
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.w().rec.events.clone()
    }

    /// Takes (and clears) the trace so far.
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.w().rec.events)
    }

    /// Names of the callbacks in the trace, in order (e.g. `proxy_on_request_headers`).
    pub fn callback_names(&self) -> Vec<String> {
        self.w()
            .rec
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                TraceKind::Callback { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// A snapshot of all metrics (aggregated over every VM, as Envoy's stats are).
    pub fn metrics(&self) -> Metrics {
        self.w().metrics.clone()
    }

    /// A counter's value (the `wasmcustom.` prefix is optional; 0 if undefined).
    pub fn counter(&self, name: &str) -> u64 {
        self.w().metrics.counter(name)
    }

    /// A gauge's value.
    pub fn gauge(&self, name: &str) -> u64 {
        self.w().metrics.gauge(name)
    }

    /// A histogram's samples.
    pub fn histogram(&self, name: &str) -> Vec<u64> {
        self.w().metrics.histogram(name).to_vec()
    }

    /// Host calls the module made since the start (or [`Envoy::reset_host_calls`]), by
    /// import, summed over every VM.
    pub fn host_calls(&self) -> HostCalls {
        self.w().host_calls.clone()
    }

    /// Starts counting host calls from zero (e.g. after warm-up).
    pub fn reset_host_calls(&mut self) {
        self.w().host_calls = HostCalls::default();
    }

    /// Every outbound call attempt so far.
    pub fn callouts(&self) -> Vec<CalloutRecord> {
        self.w().callouts.clone()
    }

    /// Foreign function calls so far.
    pub fn foreign_calls(&self) -> Vec<ForeignCall> {
        self.w().foreign.clone()
    }

    /// Shared data value and CAS for `key` under this plugin's vm_id.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let vm_id = self.cfg.vm_id.clone();
        self.w().shared.get(&vm_id, key.as_bytes())
    }

    /// Sets shared data as another VM would (cas 0 = unconditional).
    pub fn set_shared_data(&mut self, key: &str, value: &[u8]) {
        let vm_id = self.cfg.vm_id.clone();
        self.w().shared.set(&vm_id, key.as_bytes(), value, 0);
    }

    /// Shared data keys under this plugin's vm_id (sorted).
    pub fn shared_data_keys(&self) -> Vec<Vec<u8>> {
        let vm_id = self.cfg.vm_id.clone();
        self.w().shared.keys(&vm_id)
    }

    /// Items waiting in a shared queue of this vm_id.
    pub fn queue_len(&self, name: &str) -> Option<usize> {
        let vm_id = self.cfg.vm_id.clone();
        self.w().queues.len(&vm_id, name)
    }

    /// Number of worker VMs.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Whether worker `n`'s current VM has failed (trapped), with the failure message.
    pub fn worker_failure(&self, n: usize) -> Option<String> {
        self.workers.get(n)?.vms.last()?.failed.clone()
    }

    /// Whether the main-thread VM has failed.
    pub fn main_failure(&self) -> Option<String> {
        self.main.vms.last()?.failed.clone()
    }

    /// How many VMs worker `n` has had (1 + FAIL_RELOAD reloads).
    pub fn worker_generations(&self, n: usize) -> usize {
        self.workers.get(n).map_or(0, |s| s.vms.len())
    }

    /// A stream, live or finished.
    pub fn stream(&self, id: StreamId) -> Option<&StreamRecord> {
        self.streams
            .get(&id.0)
            .map(|s| &s.rec)
            .or_else(|| self.finished.get(&id.0))
    }

    /// Takes the records of finished streams (the load driver drains them to bound memory).
    pub fn take_finished(&mut self) -> Vec<StreamRecord> {
        std::mem::take(&mut self.finished).into_values().collect()
    }

    /// Number of streams not finished yet.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    // === configuration after start ===

    /// Answers http callouts to `cluster` with `f` (the cluster must exist).
    pub fn on_http_call(
        &mut self,
        cluster: &str,
        f: impl FnMut(&CalloutRecord) -> crate::callout::HttpCallReply + Send + 'static,
    ) {
        self.http_responders
            .insert(cluster.to_string(), Box::new(f));
    }

    /// Answers gRPC calls and streams to `cluster` with `f`.
    pub fn on_grpc(
        &mut self,
        cluster: &str,
        f: impl FnMut(crate::callout::GrpcEvent<'_>) -> crate::callout::GrpcReply + Send + 'static,
    ) {
        self.grpc_responders
            .insert(cluster.to_string(), Box::new(f));
    }

    /// Installs an automatic upstream for routed requests.
    pub fn set_upstream(&mut self, u: impl Upstream + 'static) {
        self.upstream = Some(Box::new(u));
    }

    /// Removes the automatic upstream.
    pub fn clear_upstream(&mut self) {
        self.upstream = None;
    }

    // === streams ===

    /// A new stream on the next worker (round-robin).
    pub fn new_stream(&mut self) -> StreamId {
        let w = self.rr % self.workers.len().max(1);
        self.rr = self.rr.wrapping_add(1);
        self.new_stream_on(w)
    }

    /// A new stream on worker `worker` (modulo the worker count).
    pub fn new_stream_on(&mut self, worker: usize) -> StreamId {
        let worker = worker % self.workers.len().max(1);
        let id = self.next_stream;
        self.next_stream += 1;
        let vm = self.current_vm(worker).unwrap_or(VmRef {
            slot: Slot::Worker(worker),
            generation: 0,
        });
        let s = Stream::new(id, worker, vm);
        self.streams.insert(id, s);
        StreamId(id)
    }

    pub(crate) fn failure_policy(&self) -> FailurePolicy {
        self.cfg.failure_policy
    }

    pub(crate) fn get_stream(&self, id: StreamId) -> Result<&Stream> {
        self.streams
            .get(&id.0)
            .ok_or_else(|| Error::Usage(format!("unknown or finished stream {}", id.0)))
    }
}

impl Envoy {
    /// Turns trace recording on or off (the load driver turns it off: tracing millions of
    /// callbacks costs memory and time).
    pub fn set_tracing(&mut self, on: bool) {
        self.w().rec.tracing = on;
    }
}
