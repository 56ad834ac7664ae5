//! Sandbox routing: send a request that carries a developer's routing key to that developer's
//! sandbox of the destination service, and everything else to the baseline.
//!
//! A developer runs their version of one service as a *sandbox* and marks their requests with
//! a routing key, usually W3C `baggage: sandbox=<key>`, which OpenTelemetry propagates from hop
//! to hop. At each hop the outbound sidecar asks: is there a sandbox of the service this call
//! goes to, for this key? If so the call goes there; otherwise to the baseline, untouched.
//!
//! - [`baggage`], [`trace_context`]: the W3C header formats, parsed as the specs say.
//! - [`key`]: what a valid key is, and its optional HMAC-SHA256 signature.
//! - [`extract`]: the key (first valid source wins) and the rest of what the headers say.
//! - [`table`]: (key, service) → target (an Envoy cluster or an `ip:port`), and how it is
//!   published to every worker.
//! - [`registry`]: the registry's JSON document.
//! - [`config`]: the JSON config and its validated form.
//! - [`engine`]: one worker's side — the per-request decision, the registry poll election and
//!   table reloads.
//! - [`cidr`]: trusted source ranges for edge mode.

pub mod baggage;
pub mod cidr;
pub mod config;
pub mod engine;
pub mod extract;
pub mod key;
pub mod registry;
pub mod table;
pub mod trace_context;

#[cfg(test)]
mod test_rng;
