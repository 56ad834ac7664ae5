//! `meshguard-config`: a short service spec in, a complete meshguard sidecar out.
//!
//! Service owners should not hand-write 1,000-line Envoy configs. They write which service,
//! which dependencies, which policies with a few knobs ([`spec::Spec`]); this fills in the
//! listeners, routes, clusters, filter chains and meshguard's defaults, and emits the plain Envoy
//! bootstrap and the equivalent Istio `WasmPlugin` manifests ([`generate`]).

pub mod generate;
pub mod spec;

/// Renders a JSON value as YAML.
///
/// # Errors
/// Serialization failure (not expected for JSON values).
pub fn to_yaml(v: &serde_json::Value) -> anyhow::Result<String> {
    Ok(serde_norway::to_string(v)?)
}
