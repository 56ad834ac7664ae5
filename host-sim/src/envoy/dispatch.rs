//! Stream completion and everything that happens "later": scheduled events (ticks, queue
//! notifications, callout responses, upstream responses, timeouts) and handing new callouts to
//! the responders.

use super::Envoy;
use super::filter::D;
use super::stream::Mode;
use crate::error::Result;
use crate::host::VmRef;
use crate::sched::Event;
use crate::trace::TraceKind;
use crate::upstream::UpstreamReply;
use crate::vm::Vm;

impl Envoy {
    pub(crate) fn start_vm_pub(&mut self, r: VmRef) -> Result<Vm> {
        let mut vm = Vm::new(&self.module, self.world.clone(), self.cfg.clone(), r)?;
        vm.start_plugin()?;
        Ok(vm)
    }

    /// Resets a stream (downstream sees a reset), then completes it.
    pub(crate) fn reset(&mut self, id: u64, details: String) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.rec.complete {
            return;
        }
        s.rec.reset = Some(details.clone());
        s.waiting_upstream = false;
        {
            let mut w = self.w();
            if w.rec.tracing {
                let t = w.now();
                w.rec.event(
                    t,
                    "",
                    TraceKind::Reset {
                        stream: id,
                        details,
                    },
                );
            }
        }
        self.finish(id);
    }

    /// The stream is over: `on_log` (access-log phase), `on_done`, `on_delete`.
    pub(crate) fn finish(&mut self, id: u64) {
        let now = self.now_ns();
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.rec.complete {
            return;
        }
        s.rec.complete = true;
        s.rec.end_ns = Some(now);
        let mode = s.mode;
        let created = s.created;
        if let Some(hs) = self.hs(id) {
            hs.info.request_complete_ns = Some(now);
        }
        if mode == Mode::Wasm {
            if !created {
                self.create_context_for_log(id);
            }
            if let Some(hs) = self.hs(id) {
                hs.access_log_phase = true;
            }
            self.run_simple(id, |vm, ctx| {
                let _ = vm.on_log(ctx);
            });
            if let Some(hs) = self.hs(id) {
                hs.access_log_phase = false;
            }
            self.run_simple(id, |vm, ctx| {
                let _ = vm.on_done(ctx);
            });
            self.run_simple(id, |vm, ctx| {
                let _ = vm.on_delete(ctx);
            });
        }
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        if let Some(vm) = self.vm_mut(s.vm) {
            let st = vm.store.data_mut();
            st.streams.remove(&s.ctx);
            st.contexts.remove(&s.ctx);
        }
        self.ctx_index.remove(&(s.vm, s.ctx));
        {
            let mut w = self.w();
            if w.rec.tracing {
                let t = w.now();
                w.rec.event(t, "", TraceKind::StreamComplete { stream: id });
            }
        }
        self.finished.insert(id, s.rec);
    }

    fn create_context_for_log(&mut self, id: u64) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.created = true;
        }
        let root = self
            .streams
            .get(&id)
            .map(|s| s.vm)
            .and_then(|r| self.vm_mut(r))
            .map_or(0, |vm| vm.root_ctx);
        self.run_simple(id, |vm, ctx| {
            let _ = vm.context_create(ctx, root);
        });
    }

    /// Runs a callback on a finished stream: deferred stream actions no longer apply, but
    /// callouts made from it are dispatched.
    fn run_simple(&mut self, id: u64, f: impl FnOnce(&mut Vm, u32)) {
        let Some((r, ctx)) = self.streams.get(&id).map(|s| (s.vm, s.ctx)) else {
            return;
        };
        if let Some(vm) = self.vm_mut(r) {
            f(vm, ctx);
            let _ = vm.take_after();
        }
        self.dispatch_outbox();
    }

    // === events ===

    pub(crate) fn handle(&mut self, ev: Event) {
        match ev {
            Event::Tick {
                vm,
                root,
                generation,
            } => self.on_tick_event(vm, root, generation),
            Event::QueueReady { vm, root, token } => {
                if let Some(v) = self.vm_mut(vm) {
                    let _ = v.queue_ready(root, token);
                    let (after, _) = v.take_after();
                    self.after_call(vm, after);
                }
            }
            Event::HttpCallDone {
                vm,
                root,
                token,
                outcome,
            } => self.deliver_http(vm, root, token, outcome),
            Event::Grpc {
                vm,
                root,
                token,
                delivery,
            } => self.deliver_grpc(vm, root, token, delivery),
            Event::Upstream { stream, reply } => self.on_upstream_event(stream, reply),
            Event::RouteTimeout { stream } => {
                let waiting = self
                    .streams
                    .get(&stream)
                    .is_some_and(|s| s.waiting_upstream && !s.resp.headers_seen);
                if waiting {
                    self.router_reply(
                        stream,
                        504,
                        0x4,
                        "response_timeout",
                        "upstream request timeout",
                    );
                }
            }
        }
    }

    fn on_tick_event(&mut self, vm: VmRef, root: u32, generation: u64) {
        let current = {
            let w = self.w();
            w.timers
                .get(&(vm, root))
                .filter(|t| t.generation == generation && t.period_ns > 0)
                .map(|t| t.period_ns)
        };
        if current.is_none() {
            return;
        }
        let Some(v) = self.vm_mut(vm) else { return };
        if v.failed.is_some() || !v.has_tick() {
            return;
        }
        let _ = v.on_tick(root);
        let (after, _) = v.take_after();
        self.after_call(vm, after);
        // Re-armed after the tick returns, with the period in force then.
        let mut w = self.w();
        let rearm = w
            .timers
            .get(&(vm, root))
            .filter(|t| t.generation == generation && t.period_ns > 0)
            .map(|t| t.period_ns);
        if let Some(p) = rearm {
            let at = w.now().saturating_add(p);
            w.sched.at(
                at,
                Event::Tick {
                    vm,
                    root,
                    generation,
                },
            );
        }
    }

    fn on_upstream_event(&mut self, id: u64, reply: UpstreamReply) {
        let waiting = self
            .streams
            .get(&id)
            .is_some_and(|s| s.waiting_upstream && !s.resp.headers_seen && !s.local_response);
        if !waiting {
            return;
        }
        match reply {
            UpstreamReply::Response { headers, body, trailers } => {
                let eos = body.is_empty() && trailers.is_none();
                self.upstream_response_headers(id, headers, eos);
                if !body.is_empty() && self.live_pub(id) {
                    self.process_data(id, D::Resp, body, trailers.is_none());
                }
                if let Some(t) = trailers
                    && self.live_pub(id) {
                        self.process_trailers(id, D::Resp, t);
                    }
            }
            UpstreamReply::Reset => self.router_reply(
                id,
                503,
                0x10,
                "upstream_reset_before_response_started{remote_reset}",
                "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
            ),
            UpstreamReply::ConnectFailure => self.router_reply(
                id,
                503,
                0x20,
                "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
            ),
        }
    }

    pub(crate) fn live_pub(&self, id: u64) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.ended())
    }
}
