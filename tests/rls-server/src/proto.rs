//! The Envoy RLS v3 messages and service, generated from the vendored protos in `proto/` (same
//! packages and field numbers as Envoy's, trimmed to what the service uses). The modules mirror
//! the proto packages (the generated code refers to sibling packages by relative paths); the
//! short aliases [`rls`], [`descriptor`] and [`core`] are what the rest of the crate uses.

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod extensions {
        pub mod common {
            pub mod ratelimit {
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    pub mod service {
        pub mod ratelimit {
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
}

/// `envoy.config.core.v3` (only `HeaderValue`).
pub use envoy::config::core::v3 as core;
/// `envoy.extensions.common.ratelimit.v3` (only `RateLimitDescriptor`).
pub use envoy::extensions::common::ratelimit::v3 as descriptor;
/// `envoy.service.ratelimit.v3`: request, response, client and server.
pub use envoy::service::ratelimit::v3 as rls;
