//! Forwarding past the filter (the router upstream, the codec downstream), local replies,
//! the upstream side of a stream, and deferred actions.

use super::Envoy;
use super::filter::{D, dir_mut, msg_mut, view};
use super::stream::LocalReply;
use crate::headers::HeaderMap;
use crate::host::{AfterAction, LocalReplySpec, VmRef};
use crate::trace::TraceKind;

impl Envoy {
    // === forwarding ===

    pub(crate) fn trace_forward(
        &self,
        id: u64,
        d: D,
        part: &str,
        headers: Option<&HeaderMap>,
        bytes: Option<usize>,
        end: bool,
    ) {
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

    pub(crate) fn forward_headers(&mut self, id: u64, d: D) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let eos = if d == D::Req {
            s.req.headers_eos
        } else {
            s.resp.headers_eos
        };
        // HTTP/1.x: a response that starts before the request ended closes the connection
        // (the HCM drains it and adds `connection: close` after the filters ran).
        let close = d == D::Resp && !s.req.eos_seen && !self.cfg.protocol.starts_with("HTTP/2");
        let mut headers = match self.hs(id) {
            Some(hs) => view(hs, d).headers.clone(),
            None => return,
        };
        if close {
            headers.add("connection", "close");
        }
        if d == D::Req {
            // The router: (re)select the route, then send upstream.
            let dirty = self
                .hs(id)
                .is_some_and(|hs| std::mem::replace(&mut hs.info.route_dirty, false));
            if dirty {
                let idx = self
                    .cfg
                    .routes
                    .iter()
                    .position(|r| Some(r) == self.cfg.route_for(&headers));
                if let Some(hs) = self.hs(id) {
                    hs.info.route_index = idx;
                }
            }
            let idx = self.hs(id).and_then(|hs| hs.info.route_index);
            let Some(route) = idx.and_then(|i| self.cfg.routes.get(i)).cloned() else {
                let spec = LocalReplySpec {
                    status: 404,
                    body: Vec::new(),
                    headers: Vec::new(),
                    grpc_status: -1,
                    details: "route_not_found".into(),
                };
                self.send_local_reply(id, spec);
                return;
            };
            let addr = self
                .cfg
                .clusters
                .get(&route.cluster)
                .map(|c| c.address.clone());
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

    pub(crate) fn forward_body(&mut self, id: u64, d: D, data: Vec<u8>, eos: bool) {
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

    pub(crate) fn forward_trailers_from_filter(&mut self, id: u64, d: D) {
        let trailers = self
            .hs(id)
            .and_then(|hs| view(hs, d).trailers.clone())
            .unwrap_or_default();
        self.trace_forward(id, d, "trailers", Some(&trailers), None, true);
        if let Some(s) = self.streams.get_mut(&id) {
            let m = msg_mut(s, d);
            m.trailers = Some(trailers);
            m.end_stream = true;
        }
        self.message_done(id, d);
    }

    /// A direction finished forwarding.
    pub(crate) fn message_done(&mut self, id: u64, d: D) {
        match d {
            D::Req => self.upstream_request_complete(id),
            D::Resp => self.finish(id),
        }
    }

    // === local replies ===

    /// Envoy `sendLocalReply`.
    pub(crate) fn send_local_reply(&mut self, id: u64, spec: LocalReplySpec) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.ended() || s.local_response {
            return;
        }
        if s.rec.downstream.headers.is_some() {
            // Response headers already went downstream: all Envoy can do is reset; the
            // details still become the response code details (`on_log` sees them).
            if let Some(hs) = self.hs(id) {
                hs.info.response_code_details = Some(spec.details.clone());
            }
            self.reset(id, spec.details);
            return;
        }
        let is_grpc = s.is_grpc;
        let direct = s.resp.headers_seen;
        let (headers, body, grpc_status) = build_local_reply(&spec, is_grpc);
        let reply = LocalReply {
            status: spec.status,
            details: spec.details.clone(),
            grpc_status,
            body: spec.body.clone(),
            headers: headers.clone(),
        };
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
            s.resp = super::stream::Dir {
                headers_seen: true,
                headers_eos: body.is_empty(),
                eos_seen: true,
                ..Default::default()
            };
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

    pub(crate) fn upstream_request_complete(&mut self, id: u64) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.local_response || s.waiting_upstream || s.upstream_done {
            return;
        }
        s.waiting_upstream = true;
        let now = self.now_ns();
        if let Some(t) = self.cfg.route_timeout
            && !t.is_zero()
        {
            let at = now.saturating_add(crate::clock::ns(t));
            self.w()
                .sched
                .at(at, crate::sched::Event::RouteTimeout { stream: id });
        }
        // Split borrows: the upstream sees the forwarded request without copies.
        let Envoy {
            streams,
            upstream,
            world,
            ..
        } = self;
        let (Some(u), Some(s)) = (upstream.as_mut(), streams.get(&id)) else {
            return;
        };
        let empty = HeaderMap::new();
        let req = crate::upstream::UpstreamRequest {
            stream: id,
            worker: s.rec.worker,
            cluster: s.rec.cluster.as_deref().unwrap_or(""),
            headers: s.rec.upstream.headers.as_ref().unwrap_or(&empty),
            body: &s.rec.upstream.body,
        };
        let action = u.on_request(&req, std::time::Duration::from_nanos(now));
        if let crate::upstream::UpstreamAction::Respond { after, reply } = action {
            let at = now.saturating_add(crate::clock::ns(after));
            let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
            w.sched
                .at(at, crate::sched::Event::Upstream { stream: id, reply });
        }
    }

    pub(crate) fn upstream_response_headers(&mut self, id: u64, mut headers: HeaderMap, eos: bool) {
        let now = self.now_ns();
        if !self.cfg.suppress_envoy_headers {
            // The router: milliseconds since the request went upstream, truncated.
            let sent = self.hs(id).and_then(|hs| hs.info.upstream_sent_ns);
            let ms = now.saturating_sub(sent.unwrap_or(now)) / 1_000_000;
            headers.set("x-envoy-upstream-service-time", ms.to_string());
        }
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
    pub(crate) fn router_reply(
        &mut self,
        id: u64,
        status: u32,
        flag: u64,
        details: &str,
        body: &str,
    ) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.waiting_upstream = false;
            s.upstream_done = true;
        }
        if let Some(hs) = self.hs(id) {
            hs.info.response_flags |= flag;
        }
        let spec = LocalReplySpec {
            status,
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
            grpc_status: -1,
            details: details.into(),
        };
        self.send_local_reply(id, spec);
    }

    // === deferred actions ===

    /// Applies deferred actions and dispatches new callouts after a call into `vm`.
    pub(crate) fn after_call(&mut self, vm: VmRef, after: Vec<AfterAction>) {
        for a in after {
            let (ctx, act) = match &a {
                AfterAction::Continue { ctx, .. }
                | AfterAction::Close { ctx, .. }
                | AfterAction::LocalReply { ctx, .. } => (*ctx, a.clone()),
            };
            let Some(&id) = self.ctx_index.get(&(vm, ctx)) else {
                continue;
            };
            match act {
                AfterAction::Continue { stream, .. } => match stream {
                    crate::abi::StreamType::Request => self.do_continue(id, D::Req),
                    crate::abi::StreamType::Response => self.do_continue(id, D::Resp),
                    _ => {}
                },
                AfterAction::Close { .. } => {
                    let details = self
                        .hs(id)
                        .and_then(|hs| hs.info.response_code_details.clone())
                        .unwrap_or_else(|| "wasm_close_stream".into());
                    self.reset(id, details);
                }
                AfterAction::LocalReply { reply, .. } => self.send_local_reply(id, reply),
            }
        }
        self.dispatch_outbox();
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
