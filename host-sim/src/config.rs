//! The simulated Envoy's static configuration: plugin, VM, clusters, routes, node, limits.
//! Built by [`crate::EnvoyBuilder`]; immutable once the Envoy starts.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::abi::LogLevel;

/// What Envoy does when a VM traps (`failure_policy` in `envoy.extensions.wasm.v3.PluginConfig`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailurePolicy {
    /// Every later stream on the failed VM gets a 503 local reply (`wasm_fail_stream`; gRPC
    /// UNAVAILABLE). Envoy's default.
    #[default]
    FailClosed,
    /// The filter is skipped for later streams on the failed VM (legacy `fail_open: true`).
    FailOpen,
    /// Like FAIL_CLOSED, but a new stream on the failed worker reloads a fresh VM once the
    /// backoff since the last load has passed (`reload_config.backoff`, default 1 s base,
    /// jittered lower bound: uniform in [base, 1.5 base)).
    FailReload,
}

/// An upstream cluster the module may call (`http_call`, `grpc_call`) or a route may target.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterSpec {
    /// Cluster name.
    pub name: String,
    /// Address reported as `upstream.address` (`ip:port`).
    #[serde(default = "default_upstream_address")]
    pub address: String,
    /// `xds.cluster_metadata` (JSON object of filter-metadata namespaces).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

fn default_upstream_address() -> String {
    "127.0.0.1:8080".into()
}

impl ClusterSpec {
    /// A cluster with the default address.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address: default_upstream_address(),
            metadata: serde_json::Value::Null,
        }
    }
}

/// A route: the first route whose prefix (and optional header) matches is used.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteSpec {
    /// `xds.route_name`.
    pub name: String,
    /// Path prefix to match (default `/`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Optional exact header match `(name, value)`.
    #[serde(default)]
    pub header: Option<(String, String)>,
    /// Target cluster (`xds.cluster_name`).
    pub cluster: String,
    /// `xds.route_metadata` filter metadata (JSON object: namespace -> struct).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// `xds.virtual_host_name`.
    #[serde(default = "default_vhost")]
    pub virtual_host: String,
}

fn default_prefix() -> String {
    "/".into()
}
fn default_vhost() -> String {
    "local_service".into()
}

impl RouteSpec {
    /// A catch-all route to `cluster`.
    pub fn new(name: impl Into<String>, cluster: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            prefix: default_prefix(),
            header: None,
            cluster: cluster.into(),
            metadata: serde_json::Value::Null,
            virtual_host: default_vhost(),
        }
    }
}

/// The Envoy node (`xds.node`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeSpec {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.metadata` (JSON object).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self {
            id: "host-sim".into(),
            cluster: "host-sim".into(),
            metadata: serde_json::Value::Null,
        }
    }
}

/// Static configuration shared by every VM of one simulated Envoy.
#[derive(Clone, Debug)]
pub(crate) struct SimConfig {
    pub workers: usize,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub log_level: LogLevel,
    pub failure_policy: FailurePolicy,
    pub reload_backoff: Duration,
    pub allow_on_headers_stop_iteration: bool,
    pub hcm_headers: bool,
    pub suppress_envoy_headers: bool,
    /// Explicit per-stream buffer limit; `None` = Envoy's default for the protocol.
    pub buffer_limit: Option<usize>,
    pub fuel_per_call: u64,
    pub route_timeout: Option<Duration>,
    pub clusters: BTreeMap<String, ClusterSpec>,
    pub routes: Vec<RouteSpec>,
    pub node: NodeSpec,
    pub listener_direction: i64,
    pub protocol: String,
    pub source_address: String,
    pub destination_address: String,
    pub seed: u64,
    pub wall_start_ns: u64,
    pub tracing: bool,
    pub log_cap: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        let mut clusters = BTreeMap::new();
        clusters.insert("upstream".to_string(), ClusterSpec::new("upstream"));
        Self {
            workers: 2,
            plugin_name: "host-sim".into(),
            root_id: String::new(),
            vm_id: String::new(),
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            env: Vec::new(),
            log_level: LogLevel::Info,
            failure_policy: FailurePolicy::FailClosed,
            reload_backoff: Duration::from_secs(1),
            allow_on_headers_stop_iteration: false,
            hcm_headers: true,
            suppress_envoy_headers: false,
            buffer_limit: None,
            fuel_per_call: 2_000_000_000,
            route_timeout: Some(Duration::from_secs(15)),
            clusters,
            routes: vec![RouteSpec::new("default", "upstream")],
            node: NodeSpec::default(),
            listener_direction: 1,
            protocol: "HTTP/1.1".into(),
            source_address: "10.0.0.2:40000".into(),
            destination_address: "10.0.0.1:10000".into(),
            seed: 1,
            wall_start_ns: crate::clock::DEFAULT_WALL_START_NS,
            tracing: true,
            log_cap: 100_000,
        }
    }
}

/// Envoy's per-stream buffer limit for HTTP/1.x: `per_connection_buffer_limit_bytes` (1 MiB).
pub const HTTP1_BUFFER_LIMIT: usize = 1024 * 1024;
/// Envoy's per-stream buffer limit for HTTP/2: the codec's `initial_stream_window_size`
/// (256 MiB) — a 1.5 MiB buffered body passes over h2 (checked against Envoy 1.40).
pub const HTTP2_BUFFER_LIMIT: usize = 256 * 1024 * 1024;

impl SimConfig {
    /// The per-stream buffer limit: explicit, or Envoy's default for the downstream protocol
    /// (the HCM takes it from the codec stream's `bufferLimit()`).
    pub fn buffer_limit(&self) -> usize {
        self.buffer_limit
            .unwrap_or(if self.protocol.starts_with("HTTP/2") {
                HTTP2_BUFFER_LIMIT
            } else {
                HTTP1_BUFFER_LIMIT
            })
    }

    /// The first route matching `path` and headers.
    pub fn route_for(&self, headers: &crate::headers::HeaderMap) -> Option<&RouteSpec> {
        let path = headers.get(":path").unwrap_or("/");
        self.routes.iter().find(|r| {
            path.starts_with(&r.prefix)
                && r.header
                    .as_ref()
                    .is_none_or(|(k, v)| headers.get(k) == Some(v.as_str()))
        })
    }
}

impl From<&str> for ClusterSpec {
    fn from(s: &str) -> Self {
        ClusterSpec::new(s)
    }
}
