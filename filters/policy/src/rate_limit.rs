//! Rate limiting: descriptors built from the request, token buckets shared by every worker of an
//! Envoy (leased to workers in small batches so the request path rarely touches shared data),
//! bounded per-value buckets, and (in the filter) global limits over Envoy's RLS v3 protocol.
//!
//! - [`descriptor`]: rules that turn a request into a descriptor (first full match wins).
//! - [`bucket`]: the token bucket, refilled lazily from elapsed time.
//! - [`config`]: the JSON config and its validated form.
//! - [`engine`]: one worker's side — leases, CAS on shared buckets, the per-value slot table.

pub mod bucket;
pub mod config;
pub mod descriptor;
pub mod engine;
pub mod rls;
