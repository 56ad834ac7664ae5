//! Stream completion and everything that happens "later": scheduled events (ticks, queue
//! notifications, callout responses, upstream responses, timeouts) and handing new callouts to
//! the responders.

use super::filter::D;
use super::stream::Mode;
use super::Envoy;
use crate::callout::{CalloutKind, GrpcDelivery, GrpcEvent, HttpCallOutcome, HttpCallReply, Outbound};
use crate::clock::ns;
use crate::error::Result;
use crate::headers::HeaderMap;
use crate::host::VmRef;
use crate::sched::Event;
use crate::trace::TraceKind;
use crate::upstream::UpstreamReply;
use crate::vm::{Call, Vm};
use crate::CallId;

impl Envoy {
    pub(crate) fn start_vm_pub(&mut self, r: VmRef) -> Result<Vm> {
        let mut vm = Vm::new(&self.module, self.world.clone(), self.cfg.clone(), r)?;
        vm.start_plugin()?;
        Ok(vm)
    }

    /// Resets a stream (downstream sees a reset), then completes it.
    pub(crate) fn reset(&mut self, id: u64, details: String) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if s.rec.complete {
            return;
        }
        s.rec.reset = Some(details.clone());
        s.waiting_upstream = false;
        {
            let mut w = self.w();
            if w.rec.tracing {
                let t = w.now();
                w.rec.event(t, "", TraceKind::Reset { stream: id, details });
            }
        }
        self.finish(id);
    }

    /// The stream is over: `on_log` (access-log phase), `on_done`, `on_delete`.
    pub(crate) fn finish(&mut self, id: u64) {
        let now = self.now_ns();
        let Some(s) = self.streams.get_mut(&id) else { return };
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
        let Some(s) = self.streams.remove(&id) else { return };
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
        let root = self.streams.get(&id).map(|s| s.vm).and_then(|r| self.vm_mut(r)).map_or(0, |vm| vm.root_ctx);
        self.run_simple(id, |vm, ctx| {
            let _ = vm.context_create(ctx, root);
        });
    }

    /// Runs a callback on a finished stream: deferred stream actions no longer apply, but
    /// callouts made from it are dispatched.
    fn run_simple(&mut self, id: u64, f: impl FnOnce(&mut Vm, u32)) {
        let Some((r, ctx)) = self.streams.get(&id).map(|s| (s.vm, s.ctx)) else { return };
        if let Some(vm) = self.vm_mut(r) {
            f(vm, ctx);
            let _ = vm.take_after();
        }
        self.dispatch_outbox();
    }

    // === events ===

    pub(crate) fn handle(&mut self, ev: Event) {
        match ev {
            Event::Tick { vm, root, generation } => self.on_tick_event(vm, root, generation),
            Event::QueueReady { vm, root, token } => {
                if let Some(v) = self.vm_mut(vm) {
                    let _ = v.queue_ready(root, token);
                    let (after, _) = v.take_after();
                    self.after_call(vm, after);
                }
            }
            Event::HttpCallDone { vm, root, token, outcome } => self.deliver_http(vm, root, token, outcome),
            Event::Grpc { vm, root, token, delivery } => self.deliver_grpc(vm, root, token, delivery),
            Event::Upstream { stream, reply } => self.on_upstream_event(stream, reply),
            Event::RouteTimeout { stream } => {
                let waiting = self.streams.get(&stream).is_some_and(|s| s.waiting_upstream && !s.resp.headers_seen);
                if waiting {
                    self.router_reply(stream, 504, 0x4, "response_timeout", "upstream request timeout");
                }
            }
        }
    }

    fn on_tick_event(&mut self, vm: VmRef, root: u32, generation: u64) {
        let current = {
            let w = self.w();
            w.timers.get(&(vm, root)).filter(|t| t.generation == generation && t.period_ns > 0).map(|t| t.period_ns)
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
        let rearm = w.timers.get(&(vm, root)).filter(|t| t.generation == generation && t.period_ns > 0).map(|t| t.period_ns);
        if let Some(p) = rearm {
            let at = w.now().saturating_add(p);
            w.sched.at(at, Event::Tick { vm, root, generation });
        }
    }

    fn on_upstream_event(&mut self, id: u64, reply: UpstreamReply) {
        let waiting = self.streams.get(&id).is_some_and(|s| s.waiting_upstream && !s.resp.headers_seen && !s.local_response);
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
                if let Some(t) = trailers {
                    if self.live_pub(id) {
                        self.process_trailers(id, D::Resp, t);
                    }
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
                "upstream_reset_before_response_started{remote_connection_failure}",
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
            ),
        }
    }

    pub(crate) fn live_pub(&self, id: u64) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.ended())
    }

    // === callouts ===

    /// Hands new callouts (and gRPC stream sends) to the responders and schedules answers.
    pub(crate) fn dispatch_outbox(&mut self) {
        loop {
            let items = std::mem::take(&mut self.w().outbox);
            if items.is_empty() {
                break;
            }
            for item in items {
                self.dispatch_one(item);
            }
        }
    }

    fn dispatch_one(&mut self, item: Outbound) {
        let idx = match &item {
            Outbound::NewCall(i) | Outbound::StreamMessage(i, _) | Outbound::StreamClose(i) => *i,
        };
        let Some(rec) = self.w().callouts.get(idx).cloned() else { return };
        let Some(vm) = rec.vm_ref else { return };
        if vm.slot == crate::host::Slot::Canary {
            return;
        }
        let now = self.now_ns();
        match rec.kind {
            CalloutKind::Http => {
                let reply = self.http_responders.get_mut(&rec.cluster).map(|f| f(&rec));
                self.schedule_http(vm, &rec, reply, now);
            }
            CalloutKind::GrpcCall | CalloutKind::GrpcStream => {
                let reply = match self.grpc_responders.get_mut(&rec.cluster) {
                    Some(f) => match &item {
                        Outbound::NewCall(_) => Some(f(GrpcEvent::Open(&rec))),
                        Outbound::StreamMessage(_, m) => Some(f(GrpcEvent::Message(&rec, m))),
                        Outbound::StreamClose(_) => Some(f(GrpcEvent::ClientClose(&rec))),
                    },
                    None => None,
                };
                if let Some(reply) = reply {
                    self.schedule_grpc(vm, &rec, reply, now);
                }
                if let (Outbound::NewCall(_), Some(t), CalloutKind::GrpcCall) = (&item, rec.timeout, rec.kind) {
                    let close = GrpcDelivery::Close { status: 14, message: "upstream request timeout".into() };
                    self.w().sched.at(now.saturating_add(ns(t)), Event::Grpc { vm, root: rec.root_ctx, token: rec.token, delivery: close });
                }
            }
        }
    }

    fn schedule_http(&mut self, vm: VmRef, rec: &crate::callout::CalloutRecord, reply: Option<HttpCallReply>, now: u64) {
        let timeout = rec.timeout.map(ns);
        let (at, outcome) = match reply.and_then(|r| r.delay.map(|d| (ns(d), r.outcome))) {
            Some((d, o)) if timeout.is_none_or(|t| d < t) => (now.saturating_add(d), o),
            _ => match timeout {
                Some(t) => (now.saturating_add(t), HttpCallOutcome::Timeout),
                None => return,
            },
        };
        self.w().sched.at(at, Event::HttpCallDone { vm, root: rec.root_ctx, token: rec.token, outcome });
    }

    fn schedule_grpc(&mut self, vm: VmRef, rec: &crate::callout::CalloutRecord, reply: crate::callout::GrpcReply, now: u64) {
        let mut w = self.w();
        for (d, delivery) in reply.deliveries {
            w.sched.at(now.saturating_add(ns(d)), Event::Grpc { vm, root: rec.root_ctx, token: rec.token, delivery });
        }
    }

    fn set_outcome(&mut self, idx: usize, outcome: String) {
        let mut w = self.w();
        let tracing = w.rec.tracing;
        let t = w.now();
        if let Some(r) = w.callouts.get_mut(idx) {
            if r.outcome.is_none() {
                r.outcome = Some(outcome.clone());
            }
            let (token, vm) = (r.token, r.vm.clone());
            if tracing {
                w.rec.event(t, &vm, TraceKind::CalloutDone { token, outcome });
            }
        }
    }

    fn deliver_http(&mut self, vm_ref: VmRef, root: u32, token: u32, outcome: HttpCallOutcome) {
        let Some(vm) = self.vm_mut(vm_ref) else { return };
        if vm.failed.is_some() {
            return;
        }
        let Some(idx) = vm.store.data_mut().http_calls.remove(&token) else { return };
        let (headers, body, trailers, label, reset) = match outcome {
            HttpCallOutcome::Response { headers, body, trailers } => {
                let label = format!("response {}", headers.get(":status").unwrap_or("?"));
                (headers, body, trailers, label, false)
            }
            HttpCallOutcome::Timeout => {
                let mut h = HeaderMap::new();
                h.add(":status", "504");
                h.add("content-length", "24");
                h.add("content-type", "text/plain");
                (h, b"upstream request timeout".to_vec(), HeaderMap::new(), "timeout".into(), false)
            }
            HttpCallOutcome::Reset => (HeaderMap::new(), Vec::new(), HeaderMap::new(), "reset".into(), true),
        };
        self.set_outcome(idx, label);
        let Some(vm) = self.vm_mut(vm_ref) else { return };
        let (nh, nb, nt) = if reset { (0, 0, 0) } else { (headers.len(), body.len(), trailers.len()) };
        {
            let st = vm.store.data_mut();
            if reset {
                st.status = (crate::abi::Status::BrokenConnection as u32, b"reset".to_vec());
            } else {
                st.call_data.http_headers = Some(headers);
                st.call_data.http_body = Some(body);
                st.call_data.http_trailers = Some(trailers);
            }
        }
        let _ = vm.http_call_response(root, token, nh, nb, nt);
        let (after, _) = vm.take_after();
        {
            let st = vm.store.data_mut();
            st.call_data = Default::default();
            st.status.1.clear();
        }
        self.after_call(vm_ref, after);
    }

    fn deliver_grpc(&mut self, vm_ref: VmRef, root: u32, token: u32, delivery: GrpcDelivery) {
        let Some(vm) = self.vm_mut(vm_ref) else { return };
        if vm.failed.is_some() {
            return;
        }
        let Some(g) = vm.store.data().grpc.get(&token).copied() else { return };
        let unary = token & 3 == crate::abi::KIND_GRPC_CALL;
        let mut outcome = None;
        let r = match delivery {
            GrpcDelivery::InitialMetadata(m) if !unary => {
                let n = m.len();
                vm.store.data_mut().call_data.grpc_initial = Some(m);
                vm.grpc_initial(root, token, n)
            }
            GrpcDelivery::TrailingMetadata(m) if !unary => {
                let n = m.len();
                vm.store.data_mut().call_data.grpc_trailing = Some(m);
                vm.grpc_trailing(root, token, n)
            }
            GrpcDelivery::InitialMetadata(_) | GrpcDelivery::TrailingMetadata(_) => Call::Ran(None),
            GrpcDelivery::Message(b) => {
                let n = b.len();
                vm.store.data_mut().call_data.grpc_message = Some(b);
                if unary {
                    vm.store.data_mut().grpc.remove(&token);
                    outcome = Some("response".to_string());
                }
                vm.grpc_receive(root, token, n)
            }
            GrpcDelivery::Close { status, message } => {
                {
                    let st = vm.store.data_mut();
                    st.status = (status, message.into_bytes());
                    if unary || g.local_closed {
                        st.grpc.remove(&token);
                    } else if let Some(g) = st.grpc.get_mut(&token) {
                        g.remote_closed = true;
                    }
                }
                outcome = Some(format!("grpc_close {status}"));
                vm.grpc_close(root, token, status)
            }
        };
        let _ = r;
        let (after, _) = vm.take_after();
        {
            let st = vm.store.data_mut();
            st.call_data = Default::default();
            st.status.1.clear();
        }
        if let Some(o) = outcome {
            self.set_outcome(g.record, o);
        }
        self.after_call(vm_ref, after);
    }

    // === manual callout answers ===

    /// Answers a pending http callout now (when no responder is installed for its cluster).
    pub fn reply_http(&mut self, call: CallId, reply: HttpCallReply) {
        let Some(rec) = self.w().callouts.get(call.0).cloned() else { return };
        let Some(vm) = rec.vm_ref else { return };
        let now = self.now_ns();
        let at = now.saturating_add(reply.delay.map_or(0, ns));
        self.w().sched.at(at, Event::HttpCallDone { vm, root: rec.root_ctx, token: rec.token, outcome: reply.outcome });
        self.drain();
    }

    /// Delivers gRPC events to a pending call or stream now (plus each delay).
    pub fn reply_grpc(&mut self, call: CallId, reply: crate::callout::GrpcReply) {
        let Some(rec) = self.w().callouts.get(call.0).cloned() else { return };
        let Some(vm) = rec.vm_ref else { return };
        let now = self.now_ns();
        self.schedule_grpc(vm, &rec, reply, now);
        self.drain();
    }

    /// Calls that were accepted and have not ended yet.
    pub fn pending_callouts(&self) -> Vec<CallId> {
        self.w()
            .callouts
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == crate::abi::Status::Ok && r.outcome.is_none())
            .map(|(i, _)| CallId(i))
            .collect()
    }

    /// Calls `proxy_on_foreign_function` on a worker's root context (Envoy-only extension
    /// callbacks use it).
    pub fn call_on_foreign_function(&mut self, worker: usize, function_id: u32, args: &[u8]) {
        let Some(r) = self.current_vm(worker) else { return };
        let Some(vm) = self.vm_mut(r) else { return };
        vm.store.data_mut().call_data.foreign_args = Some(args.to_vec());
        let root = vm.root_ctx;
        let _ = vm.foreign_function(root, function_id, args.len());
        vm.store.data_mut().call_data.foreign_args = None;
        let (after, _) = vm.take_after();
        self.after_call(r, after);
        self.drain();
    }
}
