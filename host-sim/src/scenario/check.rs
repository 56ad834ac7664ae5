//! Evaluating a scenario's expectations.

use std::collections::BTreeMap;

use super::Expect;
use crate::{Envoy, StreamId};

/// Every way `e` does not hold (empty: it holds).
pub(super) fn check(
    envoy: &Envoy,
    streams: &BTreeMap<String, StreamId>,
    e: &Expect,
) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(name) = &e.stream {
        match streams.get(name).and_then(|s| envoy.stream(*s)) {
            None => f.push(format!("unknown stream {name:?}")),
            Some(rec) => {
                let d = &rec.downstream;
                if let Some(st) = e.status
                    && d.status() != Some(st)
                {
                    f.push(format!("status: want {st}, got {:?}", d.status()));
                }
                if let Some(lr) = e.local_reply
                    && rec.local_reply.is_some() != lr
                {
                    f.push(format!(
                        "local_reply: want {lr}, got {:?}",
                        rec.local_reply.as_ref().map(|l| l.status)
                    ));
                }
                if let Some(det) = &e.details {
                    let got = rec.local_reply.as_ref().map(|l| l.details.as_str());
                    if got != Some(det.as_str()) {
                        f.push(format!("details: want {det:?}, got {got:?}"));
                    }
                }
                if let Some(g) = e.grpc_status
                    && d.grpc_status() != Some(g)
                {
                    f.push(format!("grpc_status: want {g}, got {:?}", d.grpc_status()));
                }
                if let Some(fw) = e.forwarded
                    && rec.upstream.headers.is_some() != fw
                {
                    f.push(format!("forwarded: want {fw}"));
                }
                if let Some(c) = e.complete
                    && rec.complete != c
                {
                    f.push(format!("complete: want {c}"));
                }
                if let Some(b) = &e.body
                    && d.body != b.as_bytes()
                {
                    f.push(format!(
                        "body: want {b:?}, got {:?}",
                        String::from_utf8_lossy(&d.body)
                    ));
                }
                if let Some((k, v)) = &e.header
                    && d.header(k) != Some(v.as_str())
                {
                    f.push(format!("header {k}: want {v:?}, got {:?}", d.header(k)));
                }
                if let Some((k, v)) = &e.upstream_header {
                    let got = rec.upstream.header(k);
                    if got != v.as_deref() {
                        f.push(format!("upstream header {k}: want {v:?}, got {got:?}"));
                    }
                }
            }
        }
    }
    if let Some(c) = &e.counter {
        let got = envoy.counter(c);
        if Some(got) != e.value {
            f.push(format!("counter {c}: want {:?}, got {got}", e.value));
        }
    }
    if let Some(g) = &e.gauge {
        let got = envoy.gauge(g);
        if Some(got) != e.value {
            f.push(format!("gauge {g}: want {:?}, got {got}", e.value));
        }
    }
    if let Some(needle) = &e.log_contains
        && envoy.logs_containing(needle).is_empty()
    {
        f.push(format!("no log line contains {needle:?}"));
    }
    if let Some(n) = e.callouts {
        let got = envoy
            .callouts()
            .iter()
            .filter(|c| e.cluster.as_ref().is_none_or(|cl| &c.cluster == cl))
            .count();
        if got != n {
            f.push(format!("callouts: want {n}, got {got}"));
        }
    }
    if let Some((w, failed)) = e.worker_failed
        && envoy.worker_failure(w).is_some() != failed
    {
        f.push(format!("worker {w} failed: want {failed}"));
    }
    f
}
