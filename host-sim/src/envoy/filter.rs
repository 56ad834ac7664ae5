//! The HTTP filter manager around the one Wasm filter: what Envoy does with each callback's
//! result, in both directions.
//!
//! Headers: Continue forwards them (and Envoy drops its pointer to them); Pause becomes
//! StopAllIteration: later body and trailers are held by Envoy and only shown to the filter
//! when it continues. Body: Continue forwards the filter's buffer; Pause is
//! StopIterationAndBuffer: the next call sees the whole buffer (cumulative `body_size`); a
//! buffered body over the buffer limit is a 413 (request) or 500 (response). Trailers: Pause
//! holds them (and any buffered body). Deferred actions run when the callback returns:
//! `close_stream` and `send_local_response` before Envoy acts on the callback's result,
//! `continue_stream` after it. A local reply before any response
//! goes through the filter's own response callbacks; after the response started it resets
//! the stream.

use super::Envoy;
use super::stream::Mode;
use crate::config::FailurePolicy;
use crate::headers::HeaderMap;
use crate::host::{AfterAction, LocalReplySpec, VmRef};
use crate::stream_state::HttpStream;
use crate::trace::TraceKind;
use crate::vm::{Call, Vm};

/// Direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum D {
    Req,
    Resp,
}

impl D {
    pub(crate) fn name(self) -> &'static str {
        match self {
            D::Req => "request",
            D::Resp => "response",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum St {
    Continue,
    Stop,
    /// Data only: StopIterationNoBuffer (the data given to the filter is dropped).
    StopNoBuffer,
}

/// Mutable views of one direction's maps in an `HttpStream`.
pub(crate) struct View<'a> {
    pub(crate) headers: &'a mut HeaderMap,
    pub(crate) headers_live: &'a mut bool,
    pub(crate) body: &'a mut Vec<u8>,
    pub(crate) body_live: &'a mut bool,
    pub(crate) trailers: &'a mut Option<HeaderMap>,
    pub(crate) trailers_live: &'a mut bool,
    pub(crate) trailers_added: &'a mut bool,
}

pub(crate) fn view(hs: &mut HttpStream, d: D) -> View<'_> {
    match d {
        D::Req => View {
            headers: &mut hs.req_headers,
            headers_live: &mut hs.req_headers_live,
            body: &mut hs.req_body,
            body_live: &mut hs.req_body_live,
            trailers: &mut hs.req_trailers,
            trailers_live: &mut hs.req_trailers_live,
            trailers_added: &mut hs.req_trailers_added,
        },
        D::Resp => View {
            headers: &mut hs.resp_headers,
            headers_live: &mut hs.resp_headers_live,
            body: &mut hs.resp_body,
            body_live: &mut hs.resp_body_live,
            trailers: &mut hs.resp_trailers,
            trailers_live: &mut hs.resp_trailers_live,
            trailers_added: &mut hs.resp_trailers_added,
        },
    }
}

pub(crate) fn is_grpc(h: &HeaderMap) -> bool {
    h.get("content-type")
        .is_some_and(|c| c.starts_with("application/grpc"))
}

impl Envoy {
    // === helpers ===

    pub(crate) fn hs(&mut self, id: u64) -> Option<&mut HttpStream> {
        let (r, ctx) = self.streams.get(&id).map(|s| (s.vm, s.ctx))?;
        self.vm_mut(r)?.store.data_mut().streams.get_mut(&ctx)
    }

    pub(crate) fn stream_vm(&mut self, id: u64) -> Option<(&mut Vm, u32, VmRef)> {
        let (r, ctx) = self.streams.get(&id).map(|s| (s.vm, s.ctx))?;
        self.vm_mut(r).map(|vm| (vm, ctx, r))
    }

    pub(crate) fn live(&self, id: u64) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.ended())
    }

    /// Calls a stream callback and returns its result with the deferred actions.
    pub(crate) fn call<R>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Vm, u32) -> Call<R>,
    ) -> Option<(Call<R>, Vec<AfterAction>, bool, VmRef)> {
        let (vm, ctx, r) = self.stream_vm(id)?;
        let res = f(vm, ctx);
        let (after, stop) = vm.take_after();
        Some((res, after, stop, r))
    }

    /// CHECK_FAIL: the stream fails once (503 local reply) and stops.
    ///
    /// Whatever the failure policy: Envoy 1.40's `failure_policy: FAIL_OPEN` only decides
    /// whether *new* streams on a failed VM get the filter (they skip it, see
    /// [`Envoy::pick_vm`]); the stream whose callback trapped, and any other stream already
    /// in the failed VM, fail like FAIL_CLOSED (checked against Envoy 1.40 by the
    /// differential suite; cpp-host's own `fail_open` is the legacy field, not set by it).
    pub(crate) fn check_fail(&mut self, id: u64) -> St {
        let first = self
            .streams
            .get_mut(&id)
            .map(|s| !std::mem::replace(&mut s.stream_failed, true))
            .unwrap_or(false);
        if first {
            self.fail_stream(id);
        }
        St::Stop
    }

    /// Envoy `failStream`: 503, empty body, `wasm_fail_stream`, gRPC UNAVAILABLE; once.
    pub(crate) fn fail_stream(&mut self, id: u64) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.failure_local_reply_sent {
            return;
        }
        s.failure_local_reply_sent = true;
        let spec = LocalReplySpec {
            status: 503,
            body: Vec::new(),
            headers: Vec::new(),
            grpc_status: 14,
            details: "wasm_fail_stream".into(),
        };
        self.send_local_reply(id, spec);
    }

    // === request start ===

    pub(crate) fn start_request(&mut self, id: u64, mut headers: HeaderMap, eos: bool) {
        if self.cfg.hcm_headers {
            // ConnectionManagerUtility::mutateRequestHeaders with the default config
            // (use_remote_address false, generate_request_id true), plaintext listener.
            if !headers.contains(":scheme") {
                // HTTP/1.x requests carry no scheme; the HCM adds it (plaintext: http).
                headers.add(":scheme", "http");
            }
            if !headers.contains("x-forwarded-proto") {
                headers.add("x-forwarded-proto", "http");
            }
            if !headers.contains("x-request-id") {
                headers.add("x-request-id", request_id(self.cfg.seed, id));
            }
        }
        let now = self.now_ns();
        let wall = self.wall_clock_ns();
        let Some(worker) = self.streams.get(&id).map(|s| s.rec.worker) else {
            return;
        };
        let (vm_ref, mode) = self.pick_vm(worker);
        let route_index = self
            .cfg
            .routes
            .iter()
            .position(|r| Some(r) == self.cfg.route_for(&headers));
        let grpc = is_grpc(&headers);
        let ctx = match self.vm_mut(vm_ref) {
            Some(vm) => {
                let ctx = vm.alloc_ctx();
                let root = vm.root_ctx;
                let st = vm.store.data_mut();
                let mut hs = HttpStream::default();
                hs.info.stream_id = id;
                hs.info.connection_id = id;
                hs.info.start_ns = now;
                hs.info.start_wall_ns = wall;
                hs.info.request_headers_bytes = headers.byte_size() as u64;
                hs.info.route_index = route_index;
                hs.info.is_grpc = grpc;
                hs.req_headers = headers;
                st.streams.insert(ctx, hs);
                if mode == Mode::Wasm {
                    st.contexts.insert(ctx, crate::host::Ctx::Http { root });
                }
                ctx
            }
            None => return,
        };
        if mode == Mode::Wasm {
            self.ctx_index.insert((vm_ref, ctx), id);
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.vm = vm_ref;
            s.ctx = ctx;
            s.mode = mode;
            s.rec.bypassed = mode == Mode::Bypass;
            s.rec.start_ns = now;
            s.is_grpc = grpc;
            s.req.headers_seen = true;
            s.req.headers_eos = eos;
            s.req.eos_seen = eos;
        }
        if mode == Mode::Wasm {
            self.create_context(id);
        }
        self.process_headers(id, D::Req, eos);
    }

    /// The VM a new stream on `worker` uses, reloading a failed VM under FAIL_RELOAD.
    pub(crate) fn pick_vm(&mut self, worker: usize) -> (VmRef, Mode) {
        let Some(cur) = self.current_vm(worker) else {
            return (
                VmRef {
                    slot: crate::host::Slot::Worker(worker),
                    generation: 0,
                },
                Mode::Failed,
            );
        };
        let failed = self.vm_mut(cur).is_some_and(|v| v.failed.is_some());
        if !failed {
            return (cur, Mode::Wasm);
        }
        match self.failure_policy() {
            FailurePolicy::FailOpen => (cur, Mode::Bypass),
            FailurePolicy::FailClosed => (cur, Mode::Failed),
            FailurePolicy::FailReload => {
                let now = self.now_ns();
                let base = crate::clock::ns(self.cfg.reload_backoff);
                let jitter = {
                    let mut w = self.w();
                    (w.rng.next_f64() * 0.5 * base as f64) as u64
                };
                let last = self.workers.get(worker).map_or(0, |s| s.last_load_ns);
                if now.saturating_sub(last) < base.saturating_add(jitter) {
                    return (cur, Mode::Failed);
                }
                if let Some(s) = self.workers.get_mut(worker) {
                    s.last_load_ns = now;
                }
                let next = VmRef {
                    slot: cur.slot,
                    generation: cur.generation + 1,
                };
                match self.start_vm_pub(next) {
                    Ok(vm) => {
                        if let Some(s) = self.workers.get_mut(worker) {
                            s.vms.push(vm);
                        }
                        {
                            let mut w = self.w();
                            let t = w.now();
                            let name = crate::host::Slot::Worker(worker).name();
                            w.rec.event(
                                t,
                                &name,
                                TraceKind::VmReload {
                                    generation: next.generation as usize,
                                },
                            );
                        }
                        self.dispatch_outbox();
                        (next, Mode::Wasm)
                    }
                    Err(_) => (cur, Mode::Failed),
                }
            }
        }
    }

    pub(crate) fn create_context(&mut self, id: u64) {
        let created = self.streams.get(&id).is_some_and(|s| s.created);
        if created {
            return;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.created = true;
        }
        let root = match self.stream_vm(id) {
            Some((vm, _, _)) => vm.root_ctx,
            None => return,
        };
        if let Some((_, after, _, r)) = self.call(id, |vm, ctx| vm.context_create(ctx, root)) {
            self.after_call(r, after);
        }
    }

    // === generic direction processing ===

    pub(crate) fn process_headers(&mut self, id: u64, d: D, eos: bool) {
        let Some(mode) = self.streams.get(&id).map(|s| s.mode) else {
            return;
        };
        let skip_vm = d == D::Resp
            && self
                .streams
                .get(&id)
                .is_some_and(|s| s.failure_local_reply_sent);
        let mut after = Vec::new();
        let mut vm_ref = None;
        let st = match mode {
            Mode::Bypass => St::Continue,
            Mode::Failed if !skip_vm => self.check_fail(id),
            Mode::Failed => St::Continue,
            Mode::Wasm if skip_vm => St::Continue,
            Mode::Wasm => {
                let n = match self.hs(id) {
                    Some(hs) => {
                        hs.end_of_stream = eos;
                        let v = view(hs, d);
                        *v.headers_live = true;
                        v.headers.len()
                    }
                    None => return,
                };
                let allow_single = self.cfg.allow_on_headers_stop_iteration;
                let res = self.call(id, |vm, ctx| match d {
                    D::Req => vm.request_headers(ctx, n, eos),
                    D::Resp => vm.response_headers(ctx, n, eos),
                });
                let Some((res, a, stop, r)) = res else { return };
                after = a;
                vm_ref = Some(r);
                match res {
                    Call::Failed => self.check_fail(id),
                    Call::Ran(None) => St::Continue,
                    Call::Ran(Some(v)) => {
                        if stop || v != 0 {
                            // StopIteration is StopAllIteration unless allowed (then data still
                            // reaches the filter; host-sim treats it the same for headers).
                            let _ = allow_single;
                            St::Stop
                        } else {
                            St::Continue
                        }
                    }
                }
            }
        };
        let later = match vm_ref {
            Some(r) => self.after_call_terminal(r, after),
            None => Vec::new(),
        };
        if st == St::Continue
            && let Some(hs) = self.hs(id)
        {
            *view(hs, d).headers_live = false;
        }
        if self.live(id) {
            match st {
                St::Continue => self.forward_headers(id, d),
                _ => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        dir_mut(s, d).headers_paused = true;
                    }
                }
            }
        }
        if let Some(r) = vm_ref {
            self.after_call(r, later);
        }
    }

    /// Runs the deferred `close_stream` and `send_local_response` of a stream callback now —
    /// Envoy runs them when the VM call returns, *before* the filter manager acts on the
    /// callback's result (so a stream closed from `on_request_headers` never reaches the
    /// upstream) — and returns the `continue_stream` actions, which take effect after it.
    pub(crate) fn after_call_terminal(
        &mut self,
        vm: VmRef,
        after: Vec<AfterAction>,
    ) -> Vec<AfterAction> {
        let (later, now): (Vec<_>, Vec<_>) = after
            .into_iter()
            .partition(|a| matches!(a, AfterAction::Continue { .. }));
        if !now.is_empty() {
            self.after_call(vm, now);
        }
        later
    }

    pub(crate) fn process_data(&mut self, id: u64, d: D, chunk: Vec<u8>, eos: bool) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let mode = s.mode;
        let skip_vm = d == D::Resp && s.failure_local_reply_sent;
        let limit = self.cfg.buffer_limit();
        {
            let dir = dir_mut(s, d);
            if eos {
                dir.eos_seen = true;
            }
            if dir.headers_paused {
                dir.held.extend_from_slice(&chunk);
                if dir.held.len() > limit {
                    self.too_large(id, d);
                }
                return;
            }
        }
        if matches!(mode, Mode::Bypass | Mode::Failed) || skip_vm {
            self.forward_body(id, d, chunk, eos);
            return;
        }
        let buffering = dir_mut(s, d).buffering;
        let size = match self.hs(id) {
            Some(hs) => {
                hs.end_of_stream = eos;
                let v = view(hs, d);
                if buffering {
                    v.body.extend_from_slice(&chunk);
                } else {
                    *v.body = chunk;
                }
                *v.body_live = true;
                v.body.len()
            }
            None => return,
        };
        if buffering && size > limit {
            self.too_large(id, d);
            return;
        }
        self.call_body(id, d, size, eos);
    }

    /// Runs the body callback on the filter's current buffer and acts on the result.
    pub(crate) fn call_body(&mut self, id: u64, d: D, size: usize, eos: bool) {
        let res = self.call(id, |vm, ctx| match d {
            D::Req => vm.request_body(ctx, size, eos),
            D::Resp => vm.response_body(ctx, size, eos),
        });
        let Some((res, after, stop, r)) = res else {
            return;
        };
        let st = match res {
            Call::Failed => match self.check_fail(id) {
                St::Continue => St::Continue,
                _ => St::StopNoBuffer,
            },
            Call::Ran(None) => St::Continue,
            Call::Ran(Some(_)) if stop => St::StopNoBuffer,
            Call::Ran(Some(0)) => St::Continue,
            Call::Ran(Some(1 | 2)) => St::Stop,
            Call::Ran(Some(_)) => St::StopNoBuffer,
        };
        if let Some(s) = self.streams.get_mut(&id) {
            dir_mut(s, d).buffering = false;
        }
        let after = self.after_call_terminal(r, after);
        if self.live(id) {
            match st {
                St::Continue => {
                    let (data, added) = match self.hs(id) {
                        Some(hs) => {
                            let v = view(hs, d);
                            *v.body_live = false;
                            (
                                std::mem::take(v.body),
                                *v.trailers_added && v.trailers.is_some(),
                            )
                        }
                        None => (Vec::new(), false),
                    };
                    self.forward_body(id, d, data, eos && !added);
                    if eos && added {
                        self.forward_trailers_from_filter(id, d);
                    }
                }
                St::Stop => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        dir_mut(s, d).buffering = true;
                    }
                }
                St::StopNoBuffer => {
                    if let Some(hs) = self.hs(id) {
                        let v = view(hs, d);
                        v.body.clear();
                        *v.body_live = false;
                    }
                    if let Some(s) = self.streams.get_mut(&id) {
                        dir_mut(s, d).buffering = true;
                    }
                }
            }
        }
        self.after_call(r, after);
    }

    pub(crate) fn process_trailers(&mut self, id: u64, d: D, trailers: HeaderMap) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let mode = s.mode;
        let skip_vm = d == D::Resp && s.failure_local_reply_sent;
        {
            let dir = dir_mut(s, d);
            dir.eos_seen = true;
            dir.trailers_seen = true;
            if dir.headers_paused {
                dir.held_trailers = Some(trailers);
                return;
            }
        }
        if let Some(hs) = self.hs(id) {
            let v = view(hs, d);
            *v.trailers = Some(trailers);
        }
        if matches!(mode, Mode::Bypass | Mode::Failed) || skip_vm {
            self.flush_body(id, d, false);
            self.forward_trailers_from_filter(id, d);
            return;
        }
        self.call_trailers(id, d);
    }

    pub(crate) fn call_trailers(&mut self, id: u64, d: D) {
        let n = match self.hs(id) {
            Some(hs) => {
                let v = view(hs, d);
                *v.trailers_live = true;
                v.trailers.as_ref().map_or(0, HeaderMap::len)
            }
            None => return,
        };
        let res = self.call(id, |vm, ctx| match d {
            D::Req => vm.request_trailers(ctx, n),
            D::Resp => vm.response_trailers(ctx, n),
        });
        let Some((res, after, stop, r)) = res else {
            return;
        };
        let st = match res {
            Call::Failed => self.check_fail(id),
            Call::Ran(None) => St::Continue,
            Call::Ran(Some(0)) if !stop => St::Continue,
            Call::Ran(Some(_)) => St::Stop,
        };
        let after = self.after_call_terminal(r, after);
        if self.live(id) {
            match st {
                St::Continue => {
                    if let Some(hs) = self.hs(id) {
                        *view(hs, d).trailers_live = false;
                    }
                    self.flush_body(id, d, false);
                    self.forward_trailers_from_filter(id, d);
                }
                _ => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        dir_mut(s, d).trailers_paused = true;
                    }
                }
            }
        }
        self.after_call(r, after);
    }

    /// Forwards a buffered body (the filter stopped with StopIterationAndBuffer).
    pub(crate) fn flush_body(&mut self, id: u64, d: D, eos: bool) {
        let buffering = self
            .streams
            .get_mut(&id)
            .map(|s| std::mem::replace(&mut dir_mut(s, d).buffering, false))
            .unwrap_or(false);
        if !buffering {
            return;
        }
        let data = match self.hs(id) {
            Some(hs) => {
                let v = view(hs, d);
                *v.body_live = false;
                std::mem::take(v.body)
            }
            None => Vec::new(),
        };
        self.forward_body(id, d, data, eos);
    }

    /// `continueDecoding` / `continueEncoding`.
    pub(crate) fn do_continue(&mut self, id: u64, d: D) {
        if !self.live(id) {
            return;
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let dir = dir_mut(s, d);
        if dir.headers_paused {
            dir.headers_paused = false;
            let held = std::mem::take(&mut dir.held);
            let held_trailers = dir.held_trailers.take();
            let eos_seen = dir.eos_seen;
            let headers_eos = dir.headers_eos;
            if let Some(hs) = self.hs(id) {
                *view(hs, d).headers_live = false;
            }
            self.forward_headers(id, d);
            if !self.live(id) || headers_eos {
                return;
            }
            let data_eos = eos_seen && held_trailers.is_none();
            if !held.is_empty() || data_eos {
                // Held data is shown to the filter now (it stopped before seeing it).
                if let Some(hs) = self.hs(id) {
                    hs.end_of_stream = data_eos;
                    let v = view(hs, d);
                    *v.body = held;
                    *v.body_live = true;
                }
                let size = self.hs(id).map_or(0, |hs| view(hs, d).body.len());
                self.call_body(id, d, size, data_eos);
            }
            if let Some(t) = held_trailers
                && self.live(id)
            {
                if let Some(hs) = self.hs(id) {
                    *view(hs, d).trailers = Some(t);
                }
                self.call_trailers(id, d);
            }
            return;
        }
        let trailers_paused = std::mem::replace(&mut dir.trailers_paused, false);
        let trailers_seen = dir.trailers_seen;
        let eos_seen = dir.eos_seen;
        let added = self.hs(id).is_some_and(|hs| {
            let v = view(hs, d);
            *v.trailers_added && v.trailers.is_some()
        });
        let has_trailers = trailers_seen || added;
        self.flush_body(id, d, eos_seen && !has_trailers);
        if trailers_paused || (added && eos_seen) {
            self.forward_trailers_from_filter(id, d);
        }
    }

    pub(crate) fn too_large(&mut self, id: u64, d: D) {
        let (status, details, body) = match d {
            D::Req => (413, "request_payload_too_large", "Payload Too Large"),
            D::Resp => (500, "response_payload_too_large", "Internal Server Error"),
        };
        let spec = LocalReplySpec {
            status,
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
            grpc_status: -1,
            details: details.into(),
        };
        self.send_local_reply(id, spec);
    }
}

/// A UUID v4 for `x-request-id`, from the seed and the stream id (its own generator, so
/// request ids do not shift the module's random numbers or the load driver's draws).
fn request_id(seed: u64, stream: u64) -> String {
    let mut rng = crate::rng::Rng::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let a = (a & !0xF000) | 0x4000; // version 4
    let b = (b & !(0xC << 60)) | (0x8 << 60); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

pub(crate) fn dir_mut(s: &mut super::stream::Stream, d: D) -> &mut super::stream::Dir {
    match d {
        D::Req => &mut s.req,
        D::Resp => &mut s.resp,
    }
}

pub(crate) fn msg_mut(s: &mut super::stream::Stream, d: D) -> &mut super::stream::Message {
    match d {
        D::Req => &mut s.rec.upstream,
        D::Resp => &mut s.rec.downstream,
    }
}
