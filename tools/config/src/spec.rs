//! The service spec: the few things a service owner decides.
//!
//! ```yaml
//! service: shop
//! port: 8080                   # where the service listens (the sidecar forwards inbound here)
//! dependencies:
//!   - name: orders
//!     address: orders.default.svc:8080
//!   - name: payments
//!     address: payments:9090
//!     grpc: true
//! policies:
//!   rate_limit: {rps: 100, burst: 200, per_client: true}
//!   load_shed: {criticality_header: x-criticality}
//!   circuit_breaker: {consecutive_failures: 5, open_for: 5s}
//!   sandbox_router: {registry: sandbox-registry:8080}
//! ```
//! Everything else has a default: ports (inbound 15006, outbound 15001, admin 15000), module
//! source (files in `/etc/envoy/meshguard`), `mode: enforce` (per policy `mode: dry_run`).

use serde::Deserialize;

/// A service and its sidecar.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Service name (Envoy `stat_prefix`es, Istio selector `app`).
    pub service: String,
    /// Port of the local service.
    pub port: u16,
    /// Inbound listener port. Default 15006.
    #[serde(default = "inbound")]
    pub inbound_port: u16,
    /// Outbound listener port. Default 15001.
    #[serde(default = "outbound")]
    pub outbound_port: u16,
    /// Admin port (stats, `/stats/prometheus`). Default 15000.
    #[serde(default = "admin")]
    pub admin_port: u16,
    /// Address the listeners bind. Default `0.0.0.0`.
    #[serde(default = "any")]
    pub bind: String,
    /// Address of the local service. Default `127.0.0.1`.
    #[serde(default = "loopback")]
    pub service_address: String,
    /// Services this one calls (outbound, routed by `:authority`).
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// Which meshguard policies, with a few knobs each.
    #[serde(default)]
    pub policies: Policies,
    /// Where Envoy gets the modules.
    #[serde(default)]
    pub modules: Modules,
}

fn inbound() -> u16 {
    15006
}
fn outbound() -> u16 {
    15001
}
fn admin() -> u16 {
    15000
}
fn any() -> String {
    "0.0.0.0".into()
}
fn loopback() -> String {
    "127.0.0.1".into()
}

/// A dependency.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// Name: the `:authority` callers use, and the Envoy cluster name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Speaks gRPC (HTTP/2 to the upstream).
    #[serde(default)]
    pub grpc: bool,
}

/// Policy knobs; a policy absent here is not installed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Inbound rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Inbound load shedding.
    pub load_shed: Option<LoadShed>,
    /// Outbound circuit breaking.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Outbound sandbox routing.
    pub sandbox_router: Option<SandboxRouter>,
}

/// `mode` shared by all policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Act on decisions.
    #[default]
    Enforce,
    /// Decide and count only.
    DryRun,
}

impl Mode {
    /// Name in filter config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry_run",
        }
    }
}

/// Rate limit knobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second for the whole service.
    pub rps: u32,
    /// Burst. Default = `rps`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Also limit each client address to this many requests per second.
    #[serde(default)]
    pub per_client_rps: Option<u32>,
    /// Mode.
    #[serde(default)]
    pub mode: Mode,
}

/// Load shedding knobs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadShed {
    /// Header carrying the request's criticality.
    #[serde(default)]
    pub criticality_header: Option<String>,
    /// Paths never shed (health checks). Default `/healthz`, `/ready`.
    #[serde(default)]
    pub exempt_paths: Option<Vec<String>>,
    /// Mode.
    #[serde(default)]
    pub mode: Mode,
}

/// Circuit breaker knobs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Failures in a row that open a dependency's breaker. Default 5.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// First open period, e.g. `5s`. Default 5s.
    #[serde(default)]
    pub open_for: Option<String>,
    /// Mode.
    #[serde(default)]
    pub mode: Mode,
}

/// Sandbox router knobs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxRouter {
    /// Mode.
    #[serde(default)]
    pub mode: Mode,
    /// The sandbox registry, `host:port` (polled with `GET registry_path`). Optional.
    #[serde(default)]
    pub registry: Option<String>,
    /// Registry path. Default `/v1/sandboxes`.
    #[serde(default)]
    pub registry_path: Option<String>,
    /// Poll period, e.g. `10s`. Default 10s.
    #[serde(default)]
    pub poll_interval: Option<String>,
}

/// Module source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    /// Folder with `<filter>.wasm` on the Envoy host. Default `/etc/envoy/meshguard`.
    #[serde(default = "module_dir")]
    pub dir: String,
    /// OCI repository for Istio manifests, e.g. `registry.example.com/meshguard`.
    #[serde(default = "registry")]
    pub oci_repository: String,
    /// Tag of the OCI images. Default the meshguard version.
    #[serde(default)]
    pub tag: Option<String>,
    /// Fetch modules over HTTP instead of from `dir`: `<base_url>/<filter>.wasm`, pinned by
    /// sha256 (Envoy's `vm_config.code.remote`).
    #[serde(default)]
    pub remote: Option<Remote>,
}

/// Remote module source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// `http://host:port/path`, the folder holding `<filter>.wasm`.
    pub base_url: String,
    /// sha256 per filter, e.g. `{load_shed: "ab12..."}`; a filter without one gets the
    /// placeholder `${<FILTER>_SHA256}` to fill in at deploy time.
    #[serde(default)]
    pub sha256: std::collections::BTreeMap<String, String>,
}

fn module_dir() -> String {
    "/etc/envoy/meshguard".into()
}
fn registry() -> String {
    "registry.example.com/meshguard".into()
}

impl Default for Modules {
    fn default() -> Self {
        Self {
            dir: module_dir(),
            oci_repository: registry(),
            tag: None,
            remote: None,
        }
    }
}

impl Spec {
    /// Parses a YAML (or JSON) spec and checks it.
    ///
    /// # Errors
    /// Unknown fields, missing required ones, or values that make no sense.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let spec: Self = serde_norway::from_str(text)?;
        anyhow::ensure!(
            is_name(&spec.service),
            "service: {:?} must be a DNS label",
            spec.service
        );
        for (i, d) in spec.dependencies.iter().enumerate() {
            anyhow::ensure!(
                is_name(&d.name),
                "dependencies[{i}].name: {:?} must be a DNS label",
                d.name
            );
            anyhow::ensure!(
                d.address
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                "dependencies[{i}].address: {:?} must be host:port",
                d.address
            );
        }
        let mut names: Vec<&str> = spec.dependencies.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        anyhow::ensure!(
            names.windows(2).all(|w| w[0] != w[1]),
            "dependencies: names must be unique"
        );
        if let Some(r) = &spec.modules.remote {
            let url = r.base_url.strip_prefix("http://").unwrap_or_default();
            anyhow::ensure!(
                url.split('/')
                    .next()
                    .is_some_and(|hp| hp.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty()
                            && (p.parse::<u16>().is_ok()
                                || (p.starts_with("${") && p.ends_with('}')))
                    })),
                "modules.remote.base_url: {:?} must be http://host:port/...",
                r.base_url
            );
        }
        if let Some(r) = &spec.policies.rate_limit {
            anyhow::ensure!(r.rps > 0, "policies.rate_limit.rps: must be positive");
        }
        Ok(spec)
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}
