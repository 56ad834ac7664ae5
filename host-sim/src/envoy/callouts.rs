//! Callouts: handing new calls to the responders, delivering their answers to the owning root
//! context (with Envoy's call-data lifetimes), and manual answers.

use super::Envoy;
use crate::CallId;
use crate::callout::{
    CalloutKind, GrpcDelivery, GrpcEvent, HttpCallOutcome, HttpCallReply, Outbound,
};
use crate::clock::ns;
use crate::headers::HeaderMap;
use crate::host::VmRef;
use crate::sched::Event;
use crate::trace::TraceKind;
use crate::vm::Call;

impl Envoy {
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

    pub(crate) fn dispatch_one(&mut self, item: Outbound) {
        let idx = match &item {
            Outbound::NewCall(i) | Outbound::StreamMessage(i, _) | Outbound::StreamClose(i) => *i,
        };
        let Some(rec) = self.w().callouts.get(idx).cloned() else {
            return;
        };
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
                if let (Outbound::NewCall(_), Some(t), CalloutKind::GrpcCall) =
                    (&item, rec.timeout, rec.kind)
                {
                    let close = GrpcDelivery::Close {
                        status: 14,
                        // Envoy's async gRPC client appends the response code details
                        // (checked against Envoy 1.40; a routed gRPC request's timeout has
                        // just the body as grpc-message).
                        message: "upstream request timeout{response_timeout}".into(),
                    };
                    self.w().sched.at(
                        now.saturating_add(ns(t)),
                        Event::Grpc {
                            vm,
                            root: rec.root_ctx,
                            token: rec.token,
                            delivery: close,
                        },
                    );
                }
            }
        }
    }

    pub(crate) fn schedule_http(
        &mut self,
        vm: VmRef,
        rec: &crate::callout::CalloutRecord,
        reply: Option<HttpCallReply>,
        now: u64,
    ) {
        let timeout = rec.timeout.map(ns);
        let (at, outcome) = match reply.and_then(|r| r.delay.map(|d| (ns(d), r.outcome))) {
            Some((d, o)) if timeout.is_none_or(|t| d < t) => (now.saturating_add(d), o),
            _ => match timeout {
                Some(t) => (now.saturating_add(t), HttpCallOutcome::Timeout),
                None => return,
            },
        };
        self.w().sched.at(
            at,
            Event::HttpCallDone {
                vm,
                root: rec.root_ctx,
                token: rec.token,
                outcome,
            },
        );
    }

    pub(crate) fn schedule_grpc(
        &mut self,
        vm: VmRef,
        rec: &crate::callout::CalloutRecord,
        reply: crate::callout::GrpcReply,
        now: u64,
    ) {
        let mut w = self.w();
        for (d, delivery) in reply.deliveries {
            w.sched.at(
                now.saturating_add(ns(d)),
                Event::Grpc {
                    vm,
                    root: rec.root_ctx,
                    token: rec.token,
                    delivery,
                },
            );
        }
    }

    pub(crate) fn set_outcome(&mut self, idx: usize, outcome: String) {
        let mut w = self.w();
        let tracing = w.rec.tracing;
        let t = w.now();
        if let Some(r) = w.callouts.get_mut(idx) {
            if r.outcome.is_none() {
                r.outcome = Some(outcome.clone());
            }
            let (token, vm) = (r.token, r.vm.clone());
            if tracing {
                w.rec
                    .event(t, &vm, TraceKind::CalloutDone { token, outcome });
            }
        }
    }

    pub(crate) fn deliver_http(
        &mut self,
        vm_ref: VmRef,
        root: u32,
        token: u32,
        outcome: HttpCallOutcome,
    ) {
        let Some(vm) = self.vm_mut(vm_ref) else {
            return;
        };
        if vm.failed.is_some() {
            return;
        }
        let Some(idx) = vm.store.data_mut().http_calls.remove(&token) else {
            return;
        };
        // The async client's router answers some failures itself (a local reply with
        // `:status`, `content-length`, `content-type: text/plain`), like for routed requests.
        let router_reply = |status: &str, body: &str| {
            let mut h = HeaderMap::new();
            h.add(":status", status);
            h.add("content-length", body.len().to_string());
            h.add("content-type", "text/plain");
            (h, body.as_bytes().to_vec(), HeaderMap::new())
        };
        let (headers, body, trailers, label, reset) = match outcome {
            HttpCallOutcome::Response {
                mut headers,
                body,
                trailers,
            } => {
                let label = format!("response {}", headers.get(":status").unwrap_or("?"));
                if !self.cfg.suppress_envoy_headers {
                    let now = self.now_ns();
                    let start = self.w().callouts.get(idx).map_or(now, |r| r.t_ns);
                    let ms = now.saturating_sub(start) / 1_000_000;
                    headers.set("x-envoy-upstream-service-time", ms.to_string());
                }
                (headers, body, trailers, label, false)
            }
            HttpCallOutcome::Timeout => {
                let (h, b, t) = router_reply("504", "upstream request timeout");
                (h, b, t, "timeout".into(), false)
            }
            HttpCallOutcome::ConnectFailure => {
                let (h, b, t) = router_reply(
                    "503",
                    "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
                );
                (h, b, t, "connect_failure".into(), false)
            }
            HttpCallOutcome::ResetBeforeHeaders => {
                let (h, b, t) = router_reply(
                    "503",
                    "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
                );
                (h, b, t, "reset_before_headers".into(), false)
            }
            HttpCallOutcome::Reset => (
                HeaderMap::new(),
                Vec::new(),
                HeaderMap::new(),
                "reset".into(),
                true,
            ),
        };
        self.set_outcome(idx, label);
        let Some(vm) = self.vm_mut(vm_ref) else {
            return;
        };
        let (nh, nb, nt) = if reset {
            (0, 0, 0)
        } else {
            (headers.len(), body.len(), trailers.len())
        };
        {
            let st = vm.store.data_mut();
            if reset {
                st.status = (
                    crate::abi::Status::BrokenConnection as u32,
                    b"reset".to_vec(),
                );
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

    pub(crate) fn deliver_grpc(
        &mut self,
        vm_ref: VmRef,
        root: u32,
        token: u32,
        delivery: GrpcDelivery,
    ) {
        let Some(vm) = self.vm_mut(vm_ref) else {
            return;
        };
        if vm.failed.is_some() {
            return;
        }
        let Some(g) = vm.store.data().grpc.get(&token).copied() else {
            return;
        };
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
        let Some(rec) = self.w().callouts.get(call.0).cloned() else {
            return;
        };
        let Some(vm) = rec.vm_ref else { return };
        let now = self.now_ns();
        let at = now.saturating_add(reply.delay.map_or(0, ns));
        self.w().sched.at(
            at,
            Event::HttpCallDone {
                vm,
                root: rec.root_ctx,
                token: rec.token,
                outcome: reply.outcome,
            },
        );
        self.drain();
    }

    /// Delivers gRPC events to a pending call or stream now (plus each delay).
    pub fn reply_grpc(&mut self, call: CallId, reply: crate::callout::GrpcReply) {
        let Some(rec) = self.w().callouts.get(call.0).cloned() else {
            return;
        };
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
        let Some(r) = self.current_vm(worker) else {
            return;
        };
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
