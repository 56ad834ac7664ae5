//! The HTTP filter manager around the one Wasm filter: what Envoy does with each callback's
//! result, in both directions.
//!
//! Headers: Continue forwards them (and Envoy drops its pointer to them); Pause becomes
//! StopAllIteration: later body and trailers are held by Envoy and only shown to the filter
//! when it continues. Body: Continue forwards the filter's buffer; Pause is
//! StopIterationAndBuffer: the next call sees the whole buffer (cumulative `body_size`); a
//! buffered body over the buffer limit is a 413 (request) or 500 (response). Trailers: Pause
//! holds them (and any buffered body). Deferred actions (`continue_stream`, `close_stream`,
//! `send_local_response`) run after the callback returns. A local reply before any response
//! goes through the filter's own response callbacks; after the response started it resets
//! the stream.

use super::stream::{LocalReply, Mode, Verdict};
use super::Envoy;
use crate::config::FailurePolicy;
use crate::error::{Error, Result};
use crate::headers::HeaderMap;
use crate::host::{AfterAction, LocalReplySpec, VmRef};
use crate::stream_state::HttpStream;
use crate::trace::TraceKind;
use crate::vm::{Call, Vm};
use crate::StreamId;

/// Direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum D {
    Req,
    Resp,
}

impl D {
    fn name(self) -> &'static str {
        match self {
            D::Req => "request",
            D::Resp => "response",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Continue,
    Stop,
    /// Data only: StopIterationNoBuffer (the data given to the filter is dropped).
    StopNoBuffer,
}

/// Mutable views of one direction's maps in an `HttpStream`.
struct View<'a> {
    headers: &'a mut HeaderMap,
    headers_live: &'a mut bool,
    body: &'a mut Vec<u8>,
    body_live: &'a mut bool,
    trailers: &'a mut Option<HeaderMap>,
    trailers_live: &'a mut bool,
    trailers_added: &'a mut bool,
}

fn view(hs: &mut HttpStream, d: D) -> View<'_> {
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

fn is_grpc(h: &HeaderMap) -> bool {
    h.get("content-type").is_some_and(|c| c.starts_with("application/grpc"))
}

impl Envoy {
    // === public stream operations ===

    /// Sends request headers from the client. The first call on a stream creates the filter
    /// context (`on_context_create`) and runs `on_request_headers`.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown stream or headers sent twice.
    pub fn send_request_headers(&mut self, id: StreamId, headers: impl Into<HeaderMap>, end_stream: bool) -> Result<Verdict> {
        let s = self.get_stream(id)?;
        if s.req.headers_seen {
            return Err(Error::Usage(format!("request headers already sent on stream {}", id.0)));
        }
        self.start_request(id.0, headers.into(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Req))
    }

    /// Sends a request body chunk from the client.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown stream, or before headers / after the end of the request.
    pub fn send_request_body(&mut self, id: StreamId, data: impl AsRef<[u8]>, end_stream: bool) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Req)? {
            return Ok(v);
        }
        self.process_data(id.0, D::Req, data.as_ref().to_vec(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Req))
    }

    /// Sends request trailers from the client (ends the request).
    ///
    /// # Errors
    /// As [`Envoy::send_request_body`].
    pub fn send_request_trailers(&mut self, id: StreamId, trailers: impl Into<HeaderMap>) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Req)? {
            return Ok(v);
        }
        self.process_trailers(id.0, D::Req, trailers.into());
        self.drain();
        Ok(self.verdict(id.0, D::Req))
    }

    /// Sends response headers from the upstream. The request headers must have been forwarded.
    ///
    /// # Errors
    /// [`Error::Usage`] when the request was never forwarded or headers were already sent.
    pub fn send_response_headers(&mut self, id: StreamId, headers: impl Into<HeaderMap>, end_stream: bool) -> Result<Verdict> {
        let s = self.get_stream(id)?;
        if s.ended() || s.local_response {
            return Ok(self.verdict(id.0, D::Resp));
        }
        if s.rec.upstream.headers.is_none() {
            return Err(Error::Usage(format!("stream {}: the request was not forwarded upstream", id.0)));
        }
        if s.resp.headers_seen {
            return Err(Error::Usage(format!("response headers already sent on stream {}", id.0)));
        }
        self.upstream_response_headers(id.0, headers.into(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Resp))
    }

    /// Sends a response body chunk from the upstream.
    ///
    /// # Errors
    /// As [`Envoy::send_request_body`].
    pub fn send_response_body(&mut self, id: StreamId, data: impl AsRef<[u8]>, end_stream: bool) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Resp)? {
            return Ok(v);
        }
        self.process_data(id.0, D::Resp, data.as_ref().to_vec(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Resp))
    }

    /// Sends response trailers from the upstream (ends the response).
    ///
    /// # Errors
    /// As [`Envoy::send_request_body`].
    pub fn send_response_trailers(&mut self, id: StreamId, trailers: impl Into<HeaderMap>) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Resp)? {
            return Ok(v);
        }
        self.process_trailers(id.0, D::Resp, trailers.into());
        self.drain();
        Ok(self.verdict(id.0, D::Resp))
    }

    /// The client resets the stream (on_log, on_done, on_delete follow).
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown stream.
    pub fn reset_stream(&mut self, id: StreamId) -> Result<()> {
        self.get_stream(id)?;
        self.reset(id.0, "downstream_remote_disconnect".into());
        self.drain();
        Ok(())
    }

    /// The current verdict for a stream's request (`D::Req`) or response direction.
    pub fn request_verdict(&self, id: StreamId) -> Option<Verdict> {
        self.stream(id)?;
        Some(self.verdict(id.0, D::Req))
    }

    /// The current verdict for a stream's response direction.
    pub fn response_verdict(&self, id: StreamId) -> Option<Verdict> {
        self.stream(id)?;
        Some(self.verdict(id.0, D::Resp))
    }

    fn precheck(&self, id: StreamId, d: D) -> Result<Option<Verdict>> {
        let s = self.get_stream(id)?;
        if s.ended() || (d == D::Req && s.local_response) {
            return Ok(Some(self.verdict(id.0, d)));
        }
        let dir = if d == D::Req { &s.req } else { &s.resp };
        if !dir.headers_seen {
            return Err(Error::Usage(format!("stream {}: {} headers not sent yet", id.0, d.name())));
        }
        if dir.eos_seen {
            return Err(Error::Usage(format!("stream {}: the {} already ended", id.0, d.name())));
        }
        Ok(None)
    }

    pub(crate) fn verdict(&self, id: u64, d: D) -> Verdict {
        let (rec, dir) = match self.streams.get(&id) {
            Some(s) => (&s.rec, Some(if d == D::Req { &s.req } else { &s.resp })),
            None => match self.finished.get(&id) {
                Some(r) => (r, None),
                None => return Verdict::Reset("unknown stream".into()),
            },
        };
        if let Some(lr) = &rec.local_reply {
            return Verdict::LocalReply(lr.clone());
        }
        if let Some(r) = &rec.reset {
            return Verdict::Reset(r.clone());
        }
        let Some(dir) = dir else { return Verdict::Forwarded };
        let paused = dir.headers_paused || dir.buffering || dir.trailers_paused || !dir.held.is_empty() || !dir.headers_forwarded;
        if paused { Verdict::Paused } else { Verdict::Forwarded }
    }

    // === helpers ===

    pub(crate) fn hs(&mut self, id: u64) -> Option<&mut HttpStream> {
        let (r, ctx) = self.streams.get(&id).map(|s| (s.vm, s.ctx))?;
        self.vm_mut(r)?.store.data_mut().streams.get_mut(&ctx)
    }

    fn stream_vm(&mut self, id: u64) -> Option<(&mut Vm, u32, VmRef)> {
        let (r, ctx) = self.streams.get(&id).map(|s| (s.vm, s.ctx))?;
        self.vm_mut(r).map(|vm| (vm, ctx, r))
    }

    fn live(&self, id: u64) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.ended())
    }

    /// Calls a stream callback and returns its result with the deferred actions.
    fn call<R>(&mut self, id: u64, f: impl FnOnce(&mut Vm, u32) -> Call<R>) -> Option<(Call<R>, Vec<AfterAction>, bool, VmRef)> {
        let (vm, ctx, r) = self.stream_vm(id)?;
        let res = f(vm, ctx);
        let (after, stop) = vm.take_after();
        Some((res, after, stop, r))
    }

    /// CHECK_FAIL: fail-open continues; otherwise the stream fails once (503 local reply).
    fn check_fail(&mut self, id: u64) -> St {
        if self.failure_policy() == FailurePolicy::FailOpen {
            return St::Continue;
        }
        let first = self.streams.get_mut(&id).map(|s| !std::mem::replace(&mut s.stream_failed, true)).unwrap_or(false);
        if first {
            self.fail_stream(id);
        }
        St::Stop
    }

    /// Envoy `failStream`: 503, empty body, `wasm_fail_stream`, gRPC UNAVAILABLE; once.
    fn fail_stream(&mut self, id: u64) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if s.failure_local_reply_sent {
            return;
        }
        s.failure_local_reply_sent = true;
        let spec = LocalReplySpec { status: 503, body: Vec::new(), headers: Vec::new(), grpc_status: 14, details: "wasm_fail_stream".into() };
        self.send_local_reply(id, spec);
    }

    // === request start ===

    fn start_request(&mut self, id: u64, headers: HeaderMap, eos: bool) {
        let now = self.now_ns();
        let wall = self.wall_clock_ns();
        let Some(worker) = self.streams.get(&id).map(|s| s.rec.worker) else { return };
        let (vm_ref, mode) = self.pick_vm(worker);
        let route_index = self.cfg.routes.iter().position(|r| Some(r) == self.cfg.route_for(&headers));
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
    fn pick_vm(&mut self, worker: usize) -> (VmRef, Mode) {
        let Some(cur) = self.current_vm(worker) else { return (VmRef { slot: crate::host::Slot::Worker(worker), generation: 0 }, Mode::Failed) };
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
                let next = VmRef { slot: cur.slot, generation: cur.generation + 1 };
                match self.start_vm_pub(next) {
                    Ok(vm) => {
                        if let Some(s) = self.workers.get_mut(worker) {
                            s.vms.push(vm);
                        }
                        {
                            let mut w = self.w();
                            let t = w.now();
                            let name = crate::host::Slot::Worker(worker).name();
                            w.rec.event(t, &name, TraceKind::VmReload { generation: next.generation as usize });
                        }
                        self.dispatch_outbox();
                        (next, Mode::Wasm)
                    }
                    Err(_) => (cur, Mode::Failed),
                }
            }
        }
    }

    fn create_context(&mut self, id: u64) {
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

    fn process_headers(&mut self, id: u64, d: D, eos: bool) {
        let Some(mode) = self.streams.get(&id).map(|s| s.mode) else { return };
        let skip_vm = d == D::Resp && self.streams.get(&id).is_some_and(|s| s.failure_local_reply_sent);
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
        if st == St::Continue {
            if let Some(hs) = self.hs(id) {
                *view(hs, d).headers_live = false;
            }
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
            self.after_call(r, after);
        }
    }

    pub(crate) fn process_data(&mut self, id: u64, d: D, chunk: Vec<u8>, eos: bool) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        let mode = s.mode;
        let skip_vm = d == D::Resp && s.failure_local_reply_sent;
        let limit = self.cfg.buffer_limit;
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
    fn call_body(&mut self, id: u64, d: D, size: usize, eos: bool) {
        let res = self.call(id, |vm, ctx| match d {
            D::Req => vm.request_body(ctx, size, eos),
            D::Resp => vm.response_body(ctx, size, eos),
        });
        let Some((res, after, stop, r)) = res else { return };
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
        if self.live(id) {
            match st {
                St::Continue => {
                    let (data, added) = match self.hs(id) {
                        Some(hs) => {
                            let v = view(hs, d);
                            *v.body_live = false;
                            (std::mem::take(v.body), *v.trailers_added && v.trailers.is_some())
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
        let Some(s) = self.streams.get_mut(&id) else { return };
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

    fn call_trailers(&mut self, id: u64, d: D) {
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
        let Some((res, after, stop, r)) = res else { return };
        let st = match res {
            Call::Failed => self.check_fail(id),
            Call::Ran(None) => St::Continue,
            Call::Ran(Some(0)) if !stop => St::Continue,
            Call::Ran(Some(_)) => St::Stop,
        };
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
    fn flush_body(&mut self, id: u64, d: D, eos: bool) {
        let buffering = self.streams.get_mut(&id).map(|s| std::mem::replace(&mut dir_mut(s, d).buffering, false)).unwrap_or(false);
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
        let Some(s) = self.streams.get_mut(&id) else { return };
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
            if let Some(t) = held_trailers {
                if self.live(id) {
                    if let Some(hs) = self.hs(id) {
                        *view(hs, d).trailers = Some(t);
                    }
                    self.call_trailers(id, d);
                }
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

    fn too_large(&mut self, id: u64, d: D) {
        let (status, details, body) = match d {
            D::Req => (413, "request_payload_too_large", "Payload Too Large"),
            D::Resp => (500, "response_payload_too_large", "Internal Server Error"),
        };
        let spec = LocalReplySpec { status, body: body.as_bytes().to_vec(), headers: Vec::new(), grpc_status: -1, details: details.into() };
        self.send_local_reply(id, spec);
    }

    // === forwarding ===

    fn trace_forward(&self, id: u64, d: D, part: &str, headers: Option<&HeaderMap>, bytes: Option<usize>, end: bool) {
        let mut w = self.w();
        if w.rec.tracing {
            let t = w.now();
            let kind = TraceKind::Forward {
                stream: id,
                dir: d.name().into(),
                part: part.into(),
                headers: headers.map(HeaderMap::to_pairs),
                bytes,
                end_stream: end,
            };
            w.rec.event(t, "", kind);
        }
    }

    fn forward_headers(&mut self, id: u64, d: D) {
        let Some(s) = self.streams.get(&id) else { return };
        let eos = if d == D::Req { s.req.headers_eos } else { s.resp.headers_eos };
        let headers = match self.hs(id) {
            Some(hs) => view(hs, d).headers.clone(),
            None => return,
        };
        if d == D::Req {
            // The router: (re)select the route, then send upstream.
            let dirty = self.hs(id).is_some_and(|hs| std::mem::replace(&mut hs.info.route_dirty, false));
            if dirty {
                let idx = self.cfg.routes.iter().position(|r| Some(r) == self.cfg.route_for(&headers));
                if let Some(hs) = self.hs(id) {
                    hs.info.route_index = idx;
                }
            }
            let idx = self.hs(id).and_then(|hs| hs.info.route_index);
            let Some(route) = idx.and_then(|i| self.cfg.routes.get(i)).cloned() else {
                let spec = LocalReplySpec { status: 404, body: Vec::new(), headers: Vec::new(), grpc_status: -1, details: "route_not_found".into() };
                self.send_local_reply(id, spec);
                return;
            };
            let addr = self.cfg.clusters.get(&route.cluster).map(|c| c.address.clone());
            let now = self.now_ns();
            if let Some(hs) = self.hs(id) {
                hs.info.upstream_address = addr;
                hs.info.upstream_sent_ns = Some(now);
            }
            if let Some(s) = self.streams.get_mut(&id) {
                s.rec.cluster = Some(route.cluster.clone());
            }
        }
        self.trace_forward(id, d, "headers", Some(&headers), None, eos);
        if let Some(s) = self.streams.get_mut(&id) {
            let dir = dir_mut(s, d);
            dir.headers_forwarded = true;
            let m = msg_mut(s, d);
            m.headers = Some(headers);
            if eos {
                m.end_stream = true;
            }
        }
        if eos {
            self.message_done(id, d);
        }
    }

    fn forward_body(&mut self, id: u64, d: D, data: Vec<u8>, eos: bool) {
        if data.is_empty() && !eos {
            return;
        }
        self.trace_forward(id, d, "body", None, Some(data.len()), eos);
        let len = data.len() as u64;
        if let Some(hs) = self.hs(id) {
            match d {
                D::Req => hs.info.request_body_bytes += len,
                D::Resp => hs.info.response_body_bytes += len,
            }
        }
        if let Some(s) = self.streams.get_mut(&id) {
            let m = msg_mut(s, d);
            m.body.extend_from_slice(&data);
            if eos {
                m.end_stream = true;
            }
        }
        if eos {
            self.message_done(id, d);
        }
    }

    fn forward_trailers_from_filter(&mut self, id: u64, d: D) {
        let trailers = self.hs(id).and_then(|hs| view(hs, d).trailers.clone()).unwrap_or_default();
        self.trace_forward(id, d, "trailers", Some(&trailers), None, true);
        if let Some(s) = self.streams.get_mut(&id) {
            let m = msg_mut(s, d);
            m.trailers = Some(trailers);
            m.end_stream = true;
        }
        self.message_done(id, d);
    }

    /// A direction finished forwarding.
    fn message_done(&mut self, id: u64, d: D) {
        match d {
            D::Req => self.upstream_request_complete(id),
            D::Resp => self.finish(id),
        }
    }

    // === local replies ===

    /// Envoy `sendLocalReply`.
    pub(crate) fn send_local_reply(&mut self, id: u64, spec: LocalReplySpec) {
        let Some(s) = self.streams.get(&id) else { return };
        if s.ended() || s.local_response {
            return;
        }
        if s.rec.downstream.headers.is_some() {
            // Response headers already went downstream: all Envoy can do is reset.
            self.reset(id, spec.details);
            return;
        }
        let is_grpc = s.is_grpc;
        let direct = s.resp.headers_seen;
        let (headers, body, grpc_status) = build_local_reply(&spec, is_grpc);
        let reply = LocalReply { status: spec.status, details: spec.details.clone(), grpc_status, body: spec.body.clone(), headers: headers.clone() };
        {
            let mut w = self.w();
            if w.rec.tracing {
                let t = w.now();
                let kind = TraceKind::LocalReply {
                    stream: id,
                    status: spec.status,
                    details: spec.details.clone(),
                    grpc_status,
                    body: String::from_utf8_lossy(&spec.body).into_owned(),
                };
                w.rec.event(t, "", kind);
            }
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.rec.local_reply = Some(reply);
            s.local_response = true;
            s.waiting_upstream = false;
            s.resp = super::stream::Dir { headers_seen: true, headers_eos: body.is_empty(), eos_seen: true, ..Default::default() };
        }
        let status_for_info = if is_grpc { 200 } else { spec.status };
        if let Some(hs) = self.hs(id) {
            hs.info.response_code = Some(status_for_info);
            hs.info.response_code_details = Some(spec.details.clone());
            hs.info.response_headers_bytes = headers.byte_size() as u64;
            hs.resp_headers = headers;
            hs.has_response = true;
            hs.resp_body.clear();
            hs.resp_trailers = None;
        }
        if direct {
            // Headers from upstream were being processed: bypass the filter chain.
            if let Some(s) = self.streams.get_mut(&id) {
                s.failure_local_reply_sent = true;
            }
        }
        let eos = body.is_empty();
        self.process_headers(id, D::Resp, eos);
        if !eos && self.live(id) {
            self.process_data(id, D::Resp, body, true);
        }
    }

    // === upstream side ===

    fn upstream_request_complete(&mut self, id: u64) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if s.local_response || s.waiting_upstream || s.upstream_done {
            return;
        }
        s.waiting_upstream = true;
        let now = self.now_ns();
        if let Some(t) = self.cfg.route_timeout {
            if !t.is_zero() {
                let at = now.saturating_add(crate::clock::ns(t));
                self.w().sched.at(at, crate::sched::Event::RouteTimeout { stream: id });
            }
        }
        if self.upstream.is_some() {
            let (worker, cluster, headers, body) = match self.streams.get(&id) {
                Some(s) => (
                    s.rec.worker,
                    s.rec.cluster.clone().unwrap_or_default(),
                    s.rec.upstream.headers.clone().unwrap_or_default(),
                    s.rec.upstream.body.clone(),
                ),
                None => return,
            };
            let req = crate::upstream::UpstreamRequest { stream: id, worker, cluster: &cluster, headers: &headers, body: &body };
            let action = match self.upstream.as_mut() {
                Some(u) => u.on_request(&req, std::time::Duration::from_nanos(now)),
                None => return,
            };
            if let crate::upstream::UpstreamAction::Respond { after, reply } = action {
                let at = now.saturating_add(crate::clock::ns(after));
                self.w().sched.at(at, crate::sched::Event::Upstream { stream: id, reply });
            }
        }
    }

    pub(crate) fn upstream_response_headers(&mut self, id: u64, headers: HeaderMap, eos: bool) {
        let now = self.now_ns();
        let code = headers.get(":status").and_then(|v| v.parse::<u32>().ok());
        if let Some(s) = self.streams.get_mut(&id) {
            s.waiting_upstream = false;
            s.upstream_done = true;
            s.resp.headers_seen = true;
            s.resp.headers_eos = eos;
            s.resp.eos_seen = eos;
        }
        if let Some(hs) = self.hs(id) {
            hs.info.response_code = code;
            hs.info.response_code_details = Some("via_upstream".into());
            hs.info.upstream_first_byte_ns = Some(now);
            hs.info.response_headers_bytes = headers.byte_size() as u64;
            hs.resp_headers = headers;
            hs.has_response = true;
        }
        self.process_headers(id, D::Resp, eos);
    }

    /// The router's own local replies (upstream reset, connect failure, timeout).
    pub(crate) fn router_reply(&mut self, id: u64, status: u32, flag: u64, details: &str, body: &str) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.waiting_upstream = false;
            s.upstream_done = true;
        }
        if let Some(hs) = self.hs(id) {
            hs.info.response_flags |= flag;
        }
        let spec = LocalReplySpec { status, body: body.as_bytes().to_vec(), headers: Vec::new(), grpc_status: -1, details: details.into() };
        self.send_local_reply(id, spec);
    }

    // === deferred actions ===

    /// Applies deferred actions and dispatches new callouts after a call into `vm`.
    pub(crate) fn after_call(&mut self, vm: VmRef, after: Vec<AfterAction>) {
        for a in after {
            let (ctx, act) = match &a {
                AfterAction::Continue { ctx, .. } | AfterAction::Close { ctx, .. } | AfterAction::LocalReply { ctx, .. } => (*ctx, a.clone()),
            };
            let Some(&id) = self.ctx_index.get(&(vm, ctx)) else { continue };
            match act {
                AfterAction::Continue { stream, .. } => match stream {
                    crate::abi::StreamType::Request => self.do_continue(id, D::Req),
                    crate::abi::StreamType::Response => self.do_continue(id, D::Resp),
                    _ => {}
                },
                AfterAction::Close { .. } => {
                    let details = self.hs(id).and_then(|hs| hs.info.response_code_details.clone()).unwrap_or_else(|| "wasm_close_stream".into());
                    self.reset(id, details);
                }
                AfterAction::LocalReply { reply, .. } => self.send_local_reply(id, reply),
            }
        }
        self.dispatch_outbox();
    }
}

fn dir_mut(s: &mut super::stream::Stream, d: D) -> &mut super::stream::Dir {
    match d {
        D::Req => &mut s.req,
        D::Resp => &mut s.resp,
    }
}

fn msg_mut(s: &mut super::stream::Stream, d: D) -> &mut super::stream::Message {
    match d {
        D::Req => &mut s.rec.upstream,
        D::Resp => &mut s.rec.downstream,
    }
}

/// Builds a local reply's headers and body as Envoy's `Utility::sendLocalReply` does.
fn build_local_reply(spec: &LocalReplySpec, grpc: bool) -> (HeaderMap, Vec<u8>, Option<u32>) {
    let mut h = HeaderMap::new();
    if grpc {
        h.add(":status", "200");
        for (k, v) in &spec.headers {
            h.add(&String::from_utf8_lossy(k), v);
        }
        h.set("content-type", "application/grpc");
        let code = if (0..=16).contains(&spec.grpc_status) {
            spec.grpc_status as u32
        } else {
            crate::properties::http_to_grpc_status(spec.status)
        };
        h.set("grpc-status", code.to_string());
        if !spec.body.is_empty() {
            h.set("grpc-message", percent_encode(&spec.body));
        }
        (h, Vec::new(), Some(code))
    } else {
        h.add(":status", spec.status.to_string());
        for (k, v) in &spec.headers {
            h.add(&String::from_utf8_lossy(k), v);
        }
        if !spec.body.is_empty() {
            h.set("content-length", spec.body.len().to_string());
            h.set("content-type", "text/plain");
        }
        (h, spec.body.clone(), None)
    }
}

/// gRPC `grpc-message` percent-encoding (RFC: encode outside 0x20..0x7e and `%`).
fn percent_encode(b: &[u8]) -> String {
    let mut out = String::new();
    for &c in b {
        if (0x20..=0x7e).contains(&c) && c != b'%' {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}
