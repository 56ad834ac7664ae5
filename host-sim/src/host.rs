//! The host side of one VM: [`HostState`] (everything a host function can reach, kept in the
//! wasmtime `Store`) and the linker that defines the 39 proxy-wasm host functions, the v0.1
//! aliases and the WASI preview1 imports.
//!
//! Host functions read and write guest memory only through bounds-checked copies
//! ([`mem`]); a bad pointer is `INVALID_MEMORY_ACCESS`, never a host panic. A host function
//! returns `Err` (a trap) only where Envoy fails the VM too (a restricted call during
//! `_initialize`, a trap inside the guest allocator).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Caller, Engine, Linker, Memory, StoreLimits, TypedFunc};

use crate::abi::{CALLOUT_STEP, KIND_GRPC_CALL, KIND_GRPC_STREAM, KIND_HTTP, StreamType};
use crate::config::SimConfig;
use crate::headers::HeaderMap;
use crate::stream_state::HttpStream;
use crate::world::World;

mod buffers;
mod callouts;
mod headers;
pub(crate) mod mem;
mod metrics;
mod misc;
mod properties;
mod shared;
mod wasi;

/// Which VM: the main-thread VM, a worker VM or the configuration canary, and its generation
/// (a FAIL_RELOAD replaces a failed VM by the next generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmRef {
    /// `Main`, `Worker(n)` or `Canary`.
    pub slot: Slot,
    /// Generation within the slot (0 for the first VM).
    pub generation: u32,
}

/// A VM slot of the simulated Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The main-thread VM (ticks, queues; no HTTP streams).
    Main,
    /// Worker `n` (serves streams).
    Worker(usize),
    /// The throw-away VM that runs the canary `on_vm_start`/`on_configure`.
    Canary,
}

impl Slot {
    /// Display name: `main`, `worker0`, `canary`.
    pub fn name(&self) -> String {
        match self {
            Slot::Main => "main".into(),
            Slot::Worker(n) => format!("worker{n}"),
            Slot::Canary => "canary".into(),
        }
    }
}

/// A context known to the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ctx {
    Root,
    Http { root: u32 },
}

/// A local reply requested by the module, applied after the callback returns.
#[derive(Clone, Debug)]
pub(crate) struct LocalReplySpec {
    pub status: u32,
    pub body: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub grpc_status: i32,
    pub details: String,
}

/// Work Envoy defers until the VM call returns (`addAfterVmCallAction`).
#[derive(Clone, Debug)]
pub(crate) enum AfterAction {
    Continue { ctx: u32, stream: StreamType },
    Close { ctx: u32 },
    LocalReply { ctx: u32, reply: LocalReplySpec },
}

/// Data only readable during one callback (http call response, gRPC message/metadata,
/// foreign-function arguments).
#[derive(Clone, Debug, Default)]
pub(crate) struct CallData {
    pub http_headers: Option<HeaderMap>,
    pub http_body: Option<Vec<u8>>,
    pub http_trailers: Option<HeaderMap>,
    pub grpc_message: Option<Vec<u8>>,
    pub grpc_initial: Option<HeaderMap>,
    pub grpc_trailing: Option<HeaderMap>,
    pub foreign_args: Option<Vec<u8>>,
}

/// Which configuration buffer is readable right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigPhase {
    None,
    Plugin,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GrpcState {
    /// Index of the call's record in `World::callouts`.
    pub record: usize,
    pub local_closed: bool,
    pub remote_closed: bool,
}

/// Everything host functions of one VM can reach.
pub struct HostState {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) cfg: Arc<SimConfig>,
    pub(crate) vm: VmRef,
    pub(crate) vm_name: String,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
    pub(crate) limits: StoreLimits,
    /// During `_initialize`/`main`: only logging, WASI and a few others may be called.
    pub(crate) restricted: bool,
    pub(crate) current_ctx: u32,
    pub(crate) effective_ctx: u32,
    pub(crate) contexts: HashMap<u32, Ctx>,
    pub(crate) streams: HashMap<u32, HttpStream>,
    pub(crate) config_phase: ConfigPhase,
    pub(crate) call_data: CallData,
    /// `proxy_get_status` (kept on the root context in Envoy).
    pub(crate) status: (u32, Vec<u8>),
    pub(crate) next_http_call: u32,
    pub(crate) next_grpc_call: u32,
    pub(crate) next_grpc_stream: u32,
    pub(crate) http_calls: HashMap<u32, usize>,
    pub(crate) grpc: HashMap<u32, GrpcState>,
    pub(crate) metric_ids: HashMap<u32, String>,
    pub(crate) next_metric: [u32; 3],
    pub(crate) after: Vec<AfterAction>,
    pub(crate) stop_next_iteration: bool,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("vm", &self.vm_name)
            .field("contexts", &self.contexts.len())
            .finish()
    }
}

impl HostState {
    pub(crate) fn new(world: Arc<Mutex<World>>, cfg: Arc<SimConfig>, vm: VmRef) -> Self {
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(crate::abi::MAX_MEMORY_BYTES)
            .instances(1)
            .build();
        let vm_name = if vm.generation == 0 {
            vm.slot.name()
        } else {
            format!("{}#{}", vm.slot.name(), vm.generation)
        };
        Self {
            world,
            cfg,
            vm,
            vm_name,
            memory: None,
            alloc: None,
            limits,
            restricted: false,
            current_ctx: 0,
            effective_ctx: 0,
            contexts: HashMap::new(),
            streams: HashMap::new(),
            config_phase: ConfigPhase::None,
            call_data: CallData::default(),
            status: (0, Vec::new()),
            next_http_call: KIND_HTTP,
            next_grpc_call: KIND_GRPC_CALL,
            next_grpc_stream: KIND_GRPC_STREAM,
            http_calls: HashMap::new(),
            grpc: HashMap::new(),
            metric_ids: HashMap::new(),
            next_metric: [0, 1, 2],
            after: Vec::new(),
            stop_next_iteration: false,
        }
    }

    /// The context host calls act on: the effective context if it still exists, else the
    /// context of the running callback (cpp-host `contextOrEffectiveContext`).
    pub(crate) fn ctx(&self) -> u32 {
        if self.effective_ctx != 0 && self.contexts.contains_key(&self.effective_ctx) {
            self.effective_ctx
        } else {
            self.current_ctx
        }
    }

    /// The root context of `ctx` (callouts, timers and queues belong to it).
    pub(crate) fn root_of(&self, ctx: u32) -> u32 {
        match self.contexts.get(&ctx) {
            Some(Ctx::Http { root }) => *root,
            _ => ctx,
        }
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_callout_id(&mut self, kind: u32) -> u32 {
        let slot = match kind {
            KIND_GRPC_CALL => &mut self.next_grpc_call,
            KIND_GRPC_STREAM => &mut self.next_grpc_stream,
            _ => &mut self.next_http_call,
        };
        *slot = slot.wrapping_add(CALLOUT_STEP);
        *slot
    }
}

/// A host function's view of its caller.
pub(crate) type C<'a> = Caller<'a, HostState>;

/// Traps when a host function that Envoy restricts is called during `_initialize`/`main`.
pub(crate) fn check_restricted(caller: &C<'_>, name: &str) -> wasmtime::Result<()> {
    if caller.data().restricted {
        return Err(wasmtime::Error::msg(format!(
            "restricted_callback: {name} may not be called during VM start (_initialize/main)"
        )));
    }
    Ok(())
}

pub(crate) struct Registry {
    pub linker: Linker<HostState>,
    pub names: Vec<(&'static str, &'static str)>,
}

impl Registry {
    /// Defines a host function that counts its calls (see [`HostFn`]).
    pub fn func<Args, R>(
        &mut self,
        module: &'static str,
        name: &'static str,
        f: impl HostFn<Args, R>,
    ) {
        f.define(&mut self.linker, module, name);
        self.names.push((module, name));
    }
}

/// A host function: `Fn(Caller, args...) -> R`, defined in the linker wrapped so that every
/// call is counted by name (and by whether an HTTP stream or a root context made it) before
/// it runs. What a filter costs in Envoy is mostly its host calls, so tests and benchmarks
/// read these counts per request ([`crate::Envoy::host_calls`]).
pub(crate) trait HostFn<Args, R>: Send + Sync + 'static {
    fn define(self, linker: &mut Linker<HostState>, module: &'static str, name: &'static str);
}

macro_rules! host_fn {
    ($($a:ident)*) => {
        impl<F, R, $($a,)*> HostFn<($($a,)*), R> for F
        where
            F: Fn(C<'_>, $($a),*) -> R + Send + Sync + 'static,
            $($a: wasmtime::WasmTy,)*
            R: wasmtime::WasmRet,
        {
            #[allow(non_snake_case)]
            fn define(
                self,
                linker: &mut Linker<HostState>,
                module: &'static str,
                name: &'static str,
            ) {
                // Only fails on a duplicate definition, which the registration lists never
                // contain.
                let _ = linker.func_wrap(module, name, move |caller: C<'_>, $($a: $a),*| -> R {
                    count_call(&caller, name);
                    self(caller, $($a),*)
                });
            }
        }
    };
}

host_fn!();
host_fn!(A1);
host_fn!(A1 A2);
host_fn!(A1 A2 A3);
host_fn!(A1 A2 A3 A4);
host_fn!(A1 A2 A3 A4 A5);
host_fn!(A1 A2 A3 A4 A5 A6);
host_fn!(A1 A2 A3 A4 A5 A6 A7);
host_fn!(A1 A2 A3 A4 A5 A6 A7 A8);
host_fn!(A1 A2 A3 A4 A5 A6 A7 A8 A9);
host_fn!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10);
host_fn!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11);
host_fn!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12);
host_fn!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12 A13);
host_fn!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12 A13 A14);

fn count_call(caller: &C<'_>, name: &'static str) {
    let st = caller.data();
    let stream = matches!(st.contexts.get(&st.current_ctx), Some(Ctx::Http { .. }));
    st.world().host_calls.count(name, stream);
}

/// Builds the linker with every host function, and the list of names it defines.
pub(crate) fn linker(engine: &Engine) -> (Linker<HostState>, Vec<(&'static str, &'static str)>) {
    let mut r = Registry {
        linker: Linker::new(engine),
        names: Vec::new(),
    };
    misc::register(&mut r);
    metrics::register(&mut r);
    headers::register(&mut r);
    buffers::register(&mut r);
    callouts::register(&mut r);
    shared::register(&mut r);
    properties::register(&mut r);
    wasi::register(&mut r);
    (r.linker, r.names)
}

/// Every (module, name) host-sim provides.
pub(crate) fn provided_imports() -> &'static [(&'static str, &'static str)] {
    crate::module::provided_names()
}
