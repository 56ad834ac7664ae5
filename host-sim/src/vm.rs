//! One Wasm VM: a wasmtime `Store<HostState>` with an instance of the module, its exported
//! callbacks, and the calling convention Envoy uses: fuel refilled per call, the current
//! context set, traps turned into a failed VM, deferred actions collected after the call.

use std::sync::{Arc, Mutex};

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::LogLevel;
use crate::config::SimConfig;
use crate::error::{Error, Result};
use crate::host::{AfterAction, ConfigPhase, Ctx, HostState, VmRef};
use crate::module::{AbiVersion, Module};
use crate::trace::TraceKind;
use crate::world::World;

type F<P, R> = Option<TypedFunc<P, R>>;

#[derive(Clone)]
enum HeadersFn {
    V1(TypedFunc<(i32, i32), i32>),
    V2(TypedFunc<(i32, i32, i32), i32>),
}

#[derive(Clone, Default)]
struct Exports {
    initialize: F<(), ()>,
    main: F<(i32, i32), i32>,
    start: F<(), ()>,
    context_create: F<(i32, i32), ()>,
    vm_start: F<(i32, i32), i32>,
    configure: F<(i32, i32), i32>,
    done: F<i32, i32>,
    log: F<i32, ()>,
    delete: F<i32, ()>,
    tick: F<i32, ()>,
    queue_ready: F<(i32, i32), ()>,
    request_headers: Option<HeadersFn>,
    request_body: F<(i32, i32, i32), i32>,
    request_trailers: F<(i32, i32), i32>,
    response_headers: Option<HeadersFn>,
    response_body: F<(i32, i32, i32), i32>,
    response_trailers: F<(i32, i32), i32>,
    http_call_response: F<(i32, i32, i32, i32, i32), ()>,
    grpc_initial: F<(i32, i32, i32), ()>,
    grpc_receive: F<(i32, i32, i32), ()>,
    grpc_trailing: F<(i32, i32, i32), ()>,
    grpc_close: F<(i32, i32, i32), ()>,
    foreign_function: F<(i32, i32, i32), ()>,
}

/// Result of calling into the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call<T> {
    /// The callback ran (or is not exported: `None`).
    Ran(Option<T>),
    /// The VM is failed (it trapped now or before); nothing ran.
    Failed,
}

pub(crate) struct Vm {
    pub store: Store<HostState>,
    f: Exports,
    pub failed: Option<String>,
    pub root_ctx: u32,
    next_ctx: u32,
    fuel: u64,
}

fn typed<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    inst: &Instance,
    name: &str,
) -> Result<F<P, R>> {
    if inst.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    inst.get_typed_func::<P, R>(&mut *store, name)
        .map(Some)
        .map_err(|_| Error::Abi(format!("Bad function signature for: {name}")))
}

fn headers_fn(
    store: &mut Store<HostState>,
    inst: &Instance,
    name: &str,
    abi: AbiVersion,
) -> Result<Option<HeadersFn>> {
    Ok(match abi {
        AbiVersion::V0_1_0 => typed(store, inst, name)?.map(HeadersFn::V1),
        _ => typed(store, inst, name)?.map(HeadersFn::V2),
    })
}

impl Vm {
    /// Instantiates the module and runs `_initialize` (+ `main`) or `_start`, with host calls
    /// restricted like Envoy does during VM start.
    pub fn new(
        module: &Module,
        world: Arc<Mutex<World>>,
        cfg: Arc<SimConfig>,
        vm: VmRef,
    ) -> Result<Vm> {
        let fuel = cfg.fuel_per_call;
        let mut store = Store::new(crate::module::engine(), HostState::new(world, cfg, vm));
        store.limiter(|s| &mut s.limits);
        let _ = store.set_fuel(fuel);
        let name = store.data().vm_name.clone();
        let fail = |reason: String, store: &Store<HostState>| Error::StartFailed {
            vm: name.clone(),
            reason,
            logs: logs_of(store.data()),
        };
        let inst = match module.inner.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(fail(format!("instantiation failed: {e:#}"), &store)),
        };
        let memory = inst
            .get_memory(&mut store, "memory")
            .ok_or_else(|| Error::Abi("module exports no memory".into()))?;
        let alloc = match typed::<i32, i32>(&mut store, &inst, "malloc")? {
            Some(f) => Some(f),
            None => typed::<i32, i32>(&mut store, &inst, "proxy_on_memory_allocate")?,
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = alloc;
        let abi = module.inner.abi;
        let s = &mut store;
        let f = Exports {
            initialize: typed(s, &inst, "_initialize")?,
            main: typed(s, &inst, "main")?,
            start: typed(s, &inst, "_start")?,
            context_create: typed(s, &inst, "proxy_on_context_create")?,
            vm_start: typed(s, &inst, "proxy_on_vm_start")?,
            configure: typed(s, &inst, "proxy_on_configure")?,
            done: typed(s, &inst, "proxy_on_done")?,
            log: typed(s, &inst, "proxy_on_log")?,
            delete: typed(s, &inst, "proxy_on_delete")?,
            tick: typed(s, &inst, "proxy_on_tick")?,
            queue_ready: typed(s, &inst, "proxy_on_queue_ready")?,
            request_headers: headers_fn(s, &inst, "proxy_on_request_headers", abi)?,
            request_body: typed(s, &inst, "proxy_on_request_body")?,
            request_trailers: typed(s, &inst, "proxy_on_request_trailers")?,
            response_headers: headers_fn(s, &inst, "proxy_on_response_headers", abi)?,
            response_body: typed(s, &inst, "proxy_on_response_body")?,
            response_trailers: typed(s, &inst, "proxy_on_response_trailers")?,
            http_call_response: typed(s, &inst, "proxy_on_http_call_response")?,
            grpc_initial: typed(s, &inst, "proxy_on_grpc_receive_initial_metadata")?,
            grpc_receive: typed(s, &inst, "proxy_on_grpc_receive")?,
            grpc_trailing: typed(s, &inst, "proxy_on_grpc_receive_trailing_metadata")?,
            grpc_close: typed(s, &inst, "proxy_on_grpc_close")?,
            foreign_function: if abi == AbiVersion::V0_1_0 {
                None
            } else {
                typed(s, &inst, "proxy_on_foreign_function")?
            },
        };
        let mut vm = Vm {
            store,
            f,
            failed: None,
            root_ctx: 0,
            next_ctx: 1,
            fuel,
        };
        vm.store.data_mut().restricted = true;
        let init = vm.f.initialize.clone();
        let r = if let Some(init) = init {
            let mut r = vm.invoke("_initialize", Some(init), 0, (), &[]);
            if r == Call::Ran(Some(()))
                && let Some(main) = vm.f.main.clone()
            {
                r = match vm.invoke("main", Some(main), 0, (0, 0), &[]) {
                    Call::Ran(_) => Call::Ran(Some(())),
                    Call::Failed => Call::Failed,
                };
            }
            r
        } else {
            let start = vm.f.start.clone();
            vm.invoke("_start", start, 0, (), &[])
        };
        vm.store.data_mut().restricted = false;
        if r == Call::Failed {
            let reason = vm.failed.clone().unwrap_or_default();
            return Err(fail(reason, &vm.store));
        }
        Ok(vm)
    }

    /// Creates the root context and runs `on_context_create`, `on_vm_start` and
    /// `on_configure`, as Envoy does for each plugin on each VM.
    pub fn start_plugin(&mut self) -> Result<()> {
        let root = self.alloc_ctx();
        self.root_ctx = root;
        self.store.data_mut().contexts.insert(root, Ctx::Root);
        let cc = self.f.context_create.clone();
        // Envoy makes the plugin configuration readable while the root context is created.
        self.store.data_mut().config_phase = ConfigPhase::Plugin;
        let r = self.invoke("proxy_on_context_create", cc, root, (root as i32, 0), &[0]);
        self.store.data_mut().config_phase = ConfigPhase::None;
        let name = self.store.data().vm_name.clone();
        if r == Call::Failed {
            return Err(Error::StartFailed {
                vm: name,
                reason: self.failed.clone().unwrap_or_default(),
                logs: self.logs(),
            });
        }
        let vm_cfg_len = self.store.data().cfg.vm_config.len() as i32;
        let vs = self.f.vm_start.clone();
        match self.invoke(
            "proxy_on_vm_start",
            vs,
            root,
            (root as i32, vm_cfg_len),
            &[i64::from(vm_cfg_len)],
        ) {
            Call::Failed => {
                return Err(Error::StartFailed {
                    vm: name,
                    reason: self.failed.clone().unwrap_or_default(),
                    logs: self.logs(),
                });
            }
            Call::Ran(Some(0)) => {
                return Err(Error::StartFailed {
                    vm: name,
                    reason: "proxy_on_vm_start returned false".into(),
                    logs: self.logs(),
                });
            }
            Call::Ran(_) => {}
        }
        let plugin_len = self.store.data().cfg.plugin_config.len() as i32;
        self.store.data_mut().config_phase = ConfigPhase::Plugin;
        let cf = self.f.configure.clone();
        let r = self.invoke(
            "proxy_on_configure",
            cf,
            root,
            (root as i32, plugin_len),
            &[i64::from(plugin_len)],
        );
        self.store.data_mut().config_phase = ConfigPhase::None;
        match r {
            Call::Failed | Call::Ran(Some(0)) => Err(Error::ConfigRejected {
                vm: name,
                logs: self.logs(),
            }),
            Call::Ran(_) => Ok(()),
        }
    }

    pub fn alloc_ctx(&mut self) -> u32 {
        let id = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1);
        id
    }

    fn logs(&self) -> Vec<crate::trace::LogLine> {
        logs_of(self.store.data())
    }

    /// Calls an export with Envoy's conventions. `args` are recorded in the trace.
    pub fn invoke<P: WasmParams, R: WasmResults + Copy + Into<TraceVal>>(
        &mut self,
        name: &'static str,
        f: F<P, R>,
        ctx: u32,
        params: P,
        args: &[i64],
    ) -> Call<R> {
        if self.failed.is_some() {
            return Call::Failed;
        }
        let Some(f) = f else { return Call::Ran(None) };
        self.store.data().world().host_calls.count_callback(name);
        let _ = self.store.set_fuel(self.fuel);
        {
            let st = self.store.data_mut();
            st.current_ctx = ctx;
            st.effective_ctx = 0;
            st.stop_next_iteration = false;
        }
        let result = f.call(&mut self.store, params);
        let used = self
            .fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(self.fuel));
        self.store.data().world().host_calls.add_fuel(name, used);
        match result {
            Ok(r) => {
                if self.store.data().world().rec.tracing {
                    let result = r.into().0;
                    self.trace(TraceKind::Callback {
                        name: name.to_string(),
                        ctx,
                        args: args.to_vec(),
                        result,
                    });
                }
                Call::Ran(Some(r))
            }
            Err(e) => {
                // The root cause names the trap ("wasm trap: ...", "all fuel consumed ...") or
                // the host error (a restricted call); the outer context is a backtrace.
                let root = e.root_cause().to_string();
                let msg = root.lines().next().unwrap_or("").to_string();
                self.fail(name, msg);
                Call::Failed
            }
        }
    }

    fn fail(&mut self, function: &str, message: String) {
        self.failed = Some(format!("Function: {function} failed: {message}"));
        let st = self.store.data();
        let vm = st.vm_name.clone();
        let mut w = st.world();
        let t = w.now();
        w.rec.log(
            t,
            &vm,
            LogLevel::Error,
            format!("Wasm VM failed: Function: {function} failed: {message}"),
        );
        w.rec.event(
            t,
            &vm,
            TraceKind::Trap {
                function: function.to_string(),
                message,
            },
        );
    }

    fn trace(&self, kind: TraceKind) {
        let st = self.store.data();
        let mut w = st.world();
        let t = w.now();
        w.rec.event(t, &st.vm_name, kind);
    }

    /// Deferred actions from the last call (continue/close/local reply), in order.
    pub fn take_after(&mut self) -> (Vec<AfterAction>, bool) {
        let st = self.store.data_mut();
        (
            std::mem::take(&mut st.after),
            std::mem::replace(&mut st.stop_next_iteration, false),
        )
    }

    // === callbacks ===

    pub fn context_create(&mut self, ctx: u32, parent: u32) -> Call<()> {
        let f = self.f.context_create.clone();
        self.invoke(
            "proxy_on_context_create",
            f,
            ctx,
            (ctx as i32, parent as i32),
            &[i64::from(parent)],
        )
    }

    pub fn request_headers(&mut self, ctx: u32, n: usize, eos: bool) -> Call<i32> {
        let f = self.f.request_headers.clone();
        self.headers_cb("proxy_on_request_headers", f, ctx, n, eos)
    }

    pub fn response_headers(&mut self, ctx: u32, n: usize, eos: bool) -> Call<i32> {
        let f = self.f.response_headers.clone();
        self.headers_cb("proxy_on_response_headers", f, ctx, n, eos)
    }

    fn headers_cb(
        &mut self,
        name: &'static str,
        f: Option<HeadersFn>,
        ctx: u32,
        n: usize,
        eos: bool,
    ) -> Call<i32> {
        let n = n as i32;
        match f {
            None => Call::Ran(None),
            Some(HeadersFn::V1(f)) => {
                self.invoke(name, Some(f), ctx, (ctx as i32, n), &[i64::from(n)])
            }
            Some(HeadersFn::V2(f)) => self.invoke(
                name,
                Some(f),
                ctx,
                (ctx as i32, n, i32::from(eos)),
                &[i64::from(n), i64::from(eos)],
            ),
        }
    }

    pub fn request_body(&mut self, ctx: u32, size: usize, eos: bool) -> Call<i32> {
        let f = self.f.request_body.clone();
        let size = size as i32;
        self.invoke(
            "proxy_on_request_body",
            f,
            ctx,
            (ctx as i32, size, i32::from(eos)),
            &[i64::from(size), i64::from(eos)],
        )
    }

    pub fn response_body(&mut self, ctx: u32, size: usize, eos: bool) -> Call<i32> {
        let f = self.f.response_body.clone();
        let size = size as i32;
        self.invoke(
            "proxy_on_response_body",
            f,
            ctx,
            (ctx as i32, size, i32::from(eos)),
            &[i64::from(size), i64::from(eos)],
        )
    }

    pub fn request_trailers(&mut self, ctx: u32, n: usize) -> Call<i32> {
        let f = self.f.request_trailers.clone();
        self.invoke(
            "proxy_on_request_trailers",
            f,
            ctx,
            (ctx as i32, n as i32),
            &[n as i64],
        )
    }

    pub fn response_trailers(&mut self, ctx: u32, n: usize) -> Call<i32> {
        let f = self.f.response_trailers.clone();
        self.invoke(
            "proxy_on_response_trailers",
            f,
            ctx,
            (ctx as i32, n as i32),
            &[n as i64],
        )
    }

    pub fn on_log(&mut self, ctx: u32) -> Call<()> {
        let f = self.f.log.clone();
        self.invoke("proxy_on_log", f, ctx, ctx as i32, &[])
    }

    pub fn on_done(&mut self, ctx: u32) -> Call<i32> {
        let f = self.f.done.clone();
        self.invoke("proxy_on_done", f, ctx, ctx as i32, &[])
    }

    pub fn on_delete(&mut self, ctx: u32) -> Call<()> {
        let f = self.f.delete.clone();
        self.invoke("proxy_on_delete", f, ctx, ctx as i32, &[])
    }

    pub fn on_tick(&mut self, root: u32) -> Call<()> {
        let f = self.f.tick.clone();
        self.invoke("proxy_on_tick", f, root, root as i32, &[])
    }

    pub fn has_tick(&self) -> bool {
        self.f.tick.is_some()
    }

    pub fn queue_ready(&mut self, root: u32, token: u32) -> Call<()> {
        let f = self.f.queue_ready.clone();
        self.invoke(
            "proxy_on_queue_ready",
            f,
            root,
            (root as i32, token as i32),
            &[i64::from(token)],
        )
    }

    pub fn http_call_response(
        &mut self,
        root: u32,
        token: u32,
        h: usize,
        b: usize,
        t: usize,
    ) -> Call<()> {
        let f = self.f.http_call_response.clone();
        let args = [i64::from(token), h as i64, b as i64, t as i64];
        self.invoke(
            "proxy_on_http_call_response",
            f,
            root,
            (root as i32, token as i32, h as i32, b as i32, t as i32),
            &args,
        )
    }

    pub fn grpc_initial(&mut self, root: u32, token: u32, n: usize) -> Call<()> {
        let f = self.f.grpc_initial.clone();
        self.invoke(
            "proxy_on_grpc_receive_initial_metadata",
            f,
            root,
            (root as i32, token as i32, n as i32),
            &[i64::from(token), n as i64],
        )
    }

    pub fn grpc_receive(&mut self, root: u32, token: u32, n: usize) -> Call<()> {
        let f = self.f.grpc_receive.clone();
        self.invoke(
            "proxy_on_grpc_receive",
            f,
            root,
            (root as i32, token as i32, n as i32),
            &[i64::from(token), n as i64],
        )
    }

    pub fn grpc_trailing(&mut self, root: u32, token: u32, n: usize) -> Call<()> {
        let f = self.f.grpc_trailing.clone();
        self.invoke(
            "proxy_on_grpc_receive_trailing_metadata",
            f,
            root,
            (root as i32, token as i32, n as i32),
            &[i64::from(token), n as i64],
        )
    }

    pub fn grpc_close(&mut self, root: u32, token: u32, status: u32) -> Call<()> {
        let f = self.f.grpc_close.clone();
        self.invoke(
            "proxy_on_grpc_close",
            f,
            root,
            (root as i32, token as i32, status as i32),
            &[i64::from(token), i64::from(status)],
        )
    }

    pub fn foreign_function(&mut self, root: u32, id: u32, size: usize) -> Call<()> {
        let f = self.f.foreign_function.clone();
        self.invoke(
            "proxy_on_foreign_function",
            f,
            root,
            (root as i32, id as i32, size as i32),
            &[i64::from(id), size as i64],
        )
    }
}

fn logs_of(st: &HostState) -> Vec<crate::trace::LogLine> {
    let w = st.world();
    w.rec
        .logs
        .iter()
        .filter(|l| l.vm == st.vm_name)
        .cloned()
        .collect()
}

/// A callback result as recorded in the trace.
pub(crate) struct TraceVal(Option<i64>);

impl From<()> for TraceVal {
    fn from(_: ()) -> Self {
        TraceVal(None)
    }
}
impl From<i32> for TraceVal {
    fn from(v: i32) -> Self {
        TraceVal(Some(i64::from(v)))
    }
}
