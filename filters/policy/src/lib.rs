//! Decisions for meshguard's Envoy filters, free of any host.
//!
//! Everything here is plain Rust: it never calls proxy-wasm, never reads a clock (time is an
//! argument) and never allocates per request where it can avoid it. That makes each algorithm
//! natively testable and property-testable, and the same tests run compiled to
//! `wasm32-unknown-unknown` (`wasm-bindgen-test`), so the code that runs inside Envoy is the
//! code that was tested.
//!
//! The filters reach the host only through `meshguard-proxy`; this crate gives them config
//! types ([`duration`], [`mode`]), gRPC vocabulary ([`grpc`]) and the shape of a rejection
//! ([`reject`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod circuit_breaker;
pub mod duration;
pub mod grpc;
pub mod headers;
pub mod histogram;
pub mod idle;
pub mod invalid;
pub mod load_shed;
pub mod matcher;
pub mod mode;
pub mod num;
pub mod per_route;
pub mod rate_limit;
pub mod reject;
pub mod sandbox;
pub mod store;

pub use duration::ConfigDuration;
pub use grpc::GrpcStatus;
pub use mode::Mode;
pub use reject::Rejection;

/// Test attribute that also runs under `wasm-bindgen-test` when compiled to wasm32.
#[cfg(test)]
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm_bindgen_test::wasm_bindgen_test as test;
