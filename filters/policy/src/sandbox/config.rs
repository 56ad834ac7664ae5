//! `sandbox_router` configuration.
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "key_sources": [{"baggage": "sandbox"}],
//!   "key": {"max_length": 64, "hmac_secret": null},
//!   "service_from": "cluster",
//!   "routes": [{"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"}],
//!   "registry": {"cluster": "sandbox_registry", "path": "/v1/sandboxes", "authority": null,
//!                "poll_interval": "10s", "timeout": "5s", "max_entries": 10000,
//!                "max_body_bytes": 1048576},
//!   "routing_header": "x-meshguard-sandbox-cluster",
//!   "original_dst_cluster": "meshguard_sandbox_original_dst",
//!   "edge": {"trusted_source_cidrs": ["10.0.0.0/8"],
//!            "trusted_header": {"name": "x-meshguard-trusted", "value": "..."}},
//!   "response_header": false,
//!   "max_sandbox_metrics": 100,
//!   "strip_client_routing_headers": true,
//!   "clear_route_cache": true
//! }
//! ```
//! Every field is optional; `{}` routes on `baggage: sandbox=<key>` with an empty table (so
//! every request goes to its baseline until routes or a registry are configured).

use core::time::Duration;

use serde::Deserialize;

use super::baggage::is_token;
use super::cidr::Cidr;
use super::key::{self, KeyRules};
use super::registry::{self, RawEntry};
use super::table::{Table, check_name};
use super::trace_context;
use crate::duration::ConfigDuration;
use crate::invalid::{Invalid, ensure};
use crate::mode::Mode;

/// The header Envoy's `ORIGINAL_DST` cluster reads (`use_http_header`).
pub const ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";
/// The optional response header naming the sandbox that served the request.
pub const RESPONSE_HEADER: &str = "x-meshguard-sandbox";
/// Default routing header (read by the `cluster_header` route).
pub const DEFAULT_ROUTING_HEADER: &str = "x-meshguard-sandbox-cluster";
/// Default name of the `ORIGINAL_DST` cluster for address targets.
pub const DEFAULT_ORIGINAL_DST_CLUSTER: &str = "meshguard_sandbox_original_dst";
/// Most table entries (config routes, or a registry document).
pub const MAX_ENTRIES: u32 = 100_000;
/// Most key sources.
pub const MAX_SOURCES: usize = 8;

/// Where a routing key is read from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSource {
    /// A member of W3C `baggage`: `{"baggage": "sandbox"}`.
    Baggage(String),
    /// A plain request header: `{"header": "x-sandbox"}`.
    Header(String),
    /// A member of W3C `tracestate` (used only with a valid `traceparent`).
    Tracestate(String),
    /// OpenTracing's `ot-baggage-<key>` header.
    OtBaggage(String),
    /// Jaeger's `uberctx-<key>` header.
    Uberctx(String),
}

/// Which kind of source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `baggage` member.
    Baggage,
    /// Plain header (value used as sent).
    Header,
    /// `tracestate` member.
    Tracestate,
    /// A baggage-item header (`ot-baggage-*`, `uberctx-*`): value percent-decoded.
    ItemHeader,
}

/// A validated key source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Kind.
    pub kind: SourceKind,
    /// The header it is read from (lower case).
    pub header: String,
    /// The member name inside `baggage` / `tracestate` (empty for header kinds).
    pub member: String,
}

/// How the destination service of a request is named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceFrom {
    /// The cluster of the matched route (`xds.cluster_name`), read before any header changes.
    #[default]
    Cluster,
    /// The `:authority` host (lower case, port dropped).
    Authority,
}

/// Raw JSON (first phase).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `enforce` or `dry_run`.
    pub mode: Mode,
    /// Sources in order; the first that yields a valid key wins. Default `[{"baggage": "sandbox"}]`.
    pub key_sources: Option<Vec<RawSource>>,
    /// Key rules.
    pub key: RawKey,
    /// How the destination service is named. Default `cluster`.
    pub service_from: ServiceFrom,
    /// Static table entries (win over registry entries for the same key and service).
    pub routes: Vec<RawRoute>,
    /// The registry polled for more entries.
    pub registry: Option<RawRegistry>,
    /// Header carrying the target cluster. Default `x-meshguard-sandbox-cluster`.
    pub routing_header: Option<String>,
    /// `ORIGINAL_DST` cluster for address targets. Default `meshguard_sandbox_original_dst`.
    pub original_dst_cluster: Option<String>,
    /// Edge mode: strip keys from untrusted requests.
    pub edge: Option<RawEdge>,
    /// Add `x-meshguard-sandbox: <key>` to responses served by a sandbox. Default false.
    pub response_header: bool,
    /// Distinct per-sandbox metrics per worker. Default 100.
    pub max_sandbox_metrics: Option<u32>,
    /// Remove client-sent routing headers (the routing header and `x-envoy-original-dst-host`)
    /// in the filter. Default true. Set false only when the listener strips them before any
    /// filter runs (HCM `early_header_mutation_extensions`, as `envoy-configs/sandbox-outbound.yaml`
    /// does): saves two header reads per request.
    pub strip_client_routing_headers: Option<bool>,
    /// Call Envoy's `clear_route_cache` after setting the routing header. Default true. Envoy
    /// 1.40 already recomputes the route after a Wasm filter changes a request header (tested),
    /// so false saves a host call there.
    pub clear_route_cache: Option<bool>,
}

/// `key`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKey {
    /// Longest key. Default 64.
    pub max_length: Option<u32>,
    /// Require `<key>.<hex HMAC-SHA256(secret, key)>`; the secret (at least 16 bytes).
    pub hmac_secret: Option<String>,
}

/// A static route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Routing key.
    pub key: String,
    /// Destination service.
    pub service: String,
    /// Target cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Target `ip:port`.
    #[serde(default)]
    pub address: Option<String>,
}

/// `registry`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    /// Envoy cluster of the registry.
    pub cluster: String,
    /// Request path. Default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// `:authority` of the request. Default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// Poll period. Default 10 s.
    #[serde(default)]
    pub poll_interval: Option<ConfigDuration>,
    /// Call timeout. Default 5 s, or `poll_interval` if shorter.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Most entries in a document. Default 10,000.
    #[serde(default)]
    pub max_entries: Option<u32>,
    /// Largest body. Default 1 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<u32>,
}

/// `edge`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEdge {
    /// Sources whose keys are honoured.
    pub trusted_source_cidrs: Vec<String>,
    /// A header (set by the edge) whose exact value marks a request as trusted.
    pub trusted_header: Option<RawHeaderValue>,
}

/// A header name and value.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderValue {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A validated `registry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    /// Cluster.
    pub cluster: String,
    /// Path.
    pub path: String,
    /// Authority.
    pub authority: String,
    /// Poll period.
    pub poll_interval: Duration,
    /// Call timeout.
    pub timeout: Duration,
    /// Most entries.
    pub max_entries: usize,
    /// Largest body.
    pub max_body_bytes: usize,
}

/// A validated `edge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Trusted source ranges.
    pub trusted_source_cidrs: Vec<Cidr>,
    /// Trusted header name (lower case) and value.
    pub trusted_header: Option<(String, Vec<u8>)>,
}

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// Enforce or dry run.
    pub mode: Mode,
    /// Key sources in order.
    pub sources: Vec<Source>,
    /// Key rules.
    pub keys: KeyRules,
    /// Service naming.
    pub service_from: ServiceFrom,
    /// Static entries.
    pub routes: Table,
    /// Registry.
    pub registry: Option<Registry>,
    /// Routing header (lower case).
    pub routing_header: String,
    /// `ORIGINAL_DST` cluster.
    pub original_dst_cluster: String,
    /// Edge mode.
    pub edge: Option<Edge>,
    /// Response header on sandbox responses.
    pub response_header: bool,
    /// Per-sandbox metrics per worker.
    pub max_sandbox_metrics: usize,
    /// The filter removes client-sent routing headers.
    pub strip_client_routing_headers: bool,
    /// Call `clear_route_cache` after routing.
    pub clear_route_cache: bool,
}

impl Config {
    /// The member names of all `baggage` sources.
    pub fn baggage_members(&self) -> Vec<&str> {
        self.members_of(SourceKind::Baggage)
    }

    /// Whether the first `baggage` header value decides the request the same as every
    /// `baggage` value joined: the first source is a `baggage` member, that value holds it
    /// well-formed and it is a valid key (the first member found wins, and sources are tried
    /// in order), and there is no edge mode (which strips members from every value). The
    /// filter then skips the host call that joins repeated `baggage` headers.
    pub fn first_baggage_value_decides(&self, first: &[u8]) -> bool {
        if self.edge.is_some() {
            return false;
        }
        let Some(source) = self.sources.first() else {
            return false;
        };
        source.kind == SourceKind::Baggage
            && matches!(
                super::baggage::value_of([first], &source.member),
                Some(Some(v)) if self.keys.check(v.as_bytes()).is_ok()
            )
    }

    /// The member names of all `tracestate` sources.
    pub fn tracestate_members(&self) -> Vec<&str> {
        self.members_of(SourceKind::Tracestate)
    }

    fn members_of(&self, kind: SourceKind) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.member.as_str())
            .collect()
    }
}

/// A lower-case header name that is not a pseudo-header.
fn header_name(raw: &str, field: &str) -> Result<String, Invalid> {
    ensure(is_token(raw.as_bytes()), field, || {
        format!("{raw:?} is not a header name")
    })?;
    Ok(raw.to_ascii_lowercase())
}

fn source(raw: &RawSource, field: &str) -> Result<Source, Invalid> {
    let token = |name: &str| {
        ensure(is_token(name.as_bytes()), field, || {
            format!("{name:?} is not a valid key name (a token)")
        })
    };
    Ok(match raw {
        RawSource::Baggage(m) => {
            token(m)?;
            Source {
                kind: SourceKind::Baggage,
                header: "baggage".into(),
                member: m.clone(),
            }
        }
        RawSource::Tracestate(m) => {
            ensure(trace_context::is_key(m.as_bytes()), field, || {
                format!("{m:?} is not a tracestate key (lower case, [a-z0-9_-*/@])")
            })?;
            Source {
                kind: SourceKind::Tracestate,
                header: "tracestate".into(),
                member: m.clone(),
            }
        }
        RawSource::Header(h) => Source {
            kind: SourceKind::Header,
            header: header_name(h, field)?,
            member: String::new(),
        },
        RawSource::OtBaggage(k) | RawSource::Uberctx(k) => {
            token(k)?;
            let prefix = if matches!(raw, RawSource::OtBaggage(_)) {
                "ot-baggage-"
            } else {
                "uberctx-"
            };
            Source {
                kind: SourceKind::ItemHeader,
                header: format!("{prefix}{}", k.to_ascii_lowercase()),
                member: String::new(),
            }
        }
    })
}

fn registry(raw: &RawRegistry) -> Result<Registry, Invalid> {
    check_name(&raw.cluster).map_err(|e| Invalid::new("registry.cluster", e))?;
    let path = raw.path.clone().unwrap_or_else(|| "/".into());
    ensure(
        path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()),
        "registry.path",
        || format!("{path:?} must start with / and be visible ASCII"),
    )?;
    let authority = raw.authority.clone().unwrap_or_else(|| raw.cluster.clone());
    check_name(&authority).map_err(|e| Invalid::new("registry.authority", e))?;
    let poll_interval = raw
        .poll_interval
        .map_or(Duration::from_secs(10), ConfigDuration::get);
    ensure(
        (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&poll_interval),
        "registry.poll_interval",
        || "must be between 100ms and 1h".into(),
    )?;
    let timeout = raw.timeout.map_or(
        Duration::from_secs(5).min(poll_interval),
        ConfigDuration::get,
    );
    ensure(
        timeout >= Duration::from_millis(10) && timeout <= poll_interval,
        "registry.timeout",
        || "must be at least 10ms and at most poll_interval".into(),
    )?;
    let max_entries = raw.max_entries.unwrap_or(10_000);
    ensure(
        (1..=MAX_ENTRIES).contains(&max_entries),
        "registry.max_entries",
        || format!("must be between 1 and {MAX_ENTRIES}"),
    )?;
    let max_body = raw.max_body_bytes.unwrap_or(1 << 20);
    ensure(
        (1024..=(64 << 20)).contains(&max_body),
        "registry.max_body_bytes",
        || "must be between 1024 and 67108864".into(),
    )?;
    Ok(Registry {
        cluster: raw.cluster.clone(),
        path,
        authority,
        poll_interval,
        timeout,
        max_entries: usize::try_from(max_entries).unwrap_or(usize::MAX),
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
    })
}

fn edge(raw: &RawEdge) -> Result<Edge, Invalid> {
    let mut cidrs = Vec::new();
    for (i, c) in raw.trusted_source_cidrs.iter().enumerate() {
        cidrs.push(
            Cidr::parse(c)
                .map_err(|e| Invalid::new(format!("edge.trusted_source_cidrs[{i}]"), e))?,
        );
    }
    let trusted_header = match &raw.trusted_header {
        Some(h) => {
            let name = header_name(&h.name, "edge.trusted_header.name")?;
            ensure(
                !h.value.is_empty()
                    && h.value.len() <= 1024
                    && h.value.bytes().all(|b| b.is_ascii_graphic()),
                "edge.trusted_header.value",
                || "must be 1-1024 visible ASCII characters".into(),
            )?;
            Some((name, h.value.clone().into_bytes()))
        }
        None => None,
    };
    Ok(Edge {
        trusted_source_cidrs: cidrs,
        trusted_header,
    })
}

impl TryFrom<RawConfig> for Config {
    type Error = Invalid;

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn try_from(raw: RawConfig) -> Result<Self, Invalid> {
        let raw_sources = raw
            .key_sources
            .clone()
            .unwrap_or_else(|| vec![RawSource::Baggage("sandbox".into())]);
        ensure(
            (1..=MAX_SOURCES).contains(&raw_sources.len()),
            "key_sources",
            || format!("needs 1-{MAX_SOURCES} sources"),
        )?;
        let sources = raw_sources
            .iter()
            .enumerate()
            .map(|(i, s)| source(s, &format!("key_sources[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, s) in sources.iter().enumerate() {
            let reserved = [
                "baggage",
                "tracestate",
                "traceparent",
                "host",
                ORIGINAL_DST_HEADER,
            ];
            ensure(
                s.kind == SourceKind::Baggage
                    || s.kind == SourceKind::Tracestate
                    || !reserved.contains(&s.header.as_str()),
                &format!("key_sources[{i}]"),
                || format!("{:?} is not a plain header source", s.header),
            )?;
        }

        let max_length = raw.key.max_length.map_or(key::DEFAULT_MAX_LENGTH, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
        ensure(
            (1..=key::MAX_MAX_LENGTH).contains(&max_length),
            "key.max_length",
            || format!("must be between 1 and {}", key::MAX_MAX_LENGTH),
        )?;
        if let Some(s) = &raw.key.hmac_secret {
            ensure(s.len() >= key::MIN_SECRET_LEN, "key.hmac_secret", || {
                format!("must be at least {} bytes", key::MIN_SECRET_LEN)
            })?;
        }
        let keys = KeyRules::new(
            max_length,
            raw.key.hmac_secret.as_ref().map(|s| s.clone().into_bytes()),
        );

        ensure(
            u32::try_from(raw.routes.len()).is_ok_and(|n| n <= MAX_ENTRIES),
            "routes",
            || format!("at most {MAX_ENTRIES} routes"),
        )?;
        let mut routes = Table::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let entry = RawEntry {
                key: r.key.clone(),
                service: r.service.clone(),
                cluster: r.cluster.clone(),
                address: r.address.clone(),
            };
            let e = registry::entry(&entry, &keys)
                .map_err(|(field, why)| Invalid::new(format!("routes[{i}].{field}"), why))?;
            ensure(routes.insert(e), &format!("routes[{i}]"), || {
                format!("({}, {}) is listed twice", r.key, r.service)
            })?;
        }

        let routing_header = header_name(
            raw.routing_header
                .as_deref()
                .unwrap_or(DEFAULT_ROUTING_HEADER),
            "routing_header",
        )?;
        let reserved = [
            "baggage",
            "tracestate",
            "traceparent",
            "host",
            ORIGINAL_DST_HEADER,
        ];
        ensure(
            !reserved.contains(&routing_header.as_str())
                && !sources.iter().any(|s| s.header == routing_header),
            "routing_header",
            || format!("{routing_header:?} is reserved or used as a key source"),
        )?;
        let original_dst_cluster = raw
            .original_dst_cluster
            .clone()
            .unwrap_or_else(|| DEFAULT_ORIGINAL_DST_CLUSTER.into());
        check_name(&original_dst_cluster).map_err(|e| Invalid::new("original_dst_cluster", e))?;

        let registry = raw.registry.as_ref().map(registry).transpose()?;
        let edge = raw.edge.as_ref().map(edge).transpose()?;
        if let Some((name, _)) = edge.as_ref().and_then(|e| e.trusted_header.as_ref()) {
            ensure(
                *name != routing_header
                    && name != ORIGINAL_DST_HEADER
                    && !sources.iter().any(|s| s.header == *name),
                "edge.trusted_header.name",
                || format!("{name:?} is the routing header or a key source"),
            )?;
        }
        let max_sandbox_metrics = raw.max_sandbox_metrics.unwrap_or(100);
        ensure(max_sandbox_metrics <= 10_000, "max_sandbox_metrics", || {
            "must be at most 10000".into()
        })?;
        Ok(Self {
            mode: raw.mode,
            sources,
            keys,
            service_from: raw.service_from,
            routes,
            registry,
            routing_header,
            original_dst_cluster,
            edge,
            response_header: raw.response_header,
            strip_client_routing_headers: raw.strip_client_routing_headers.unwrap_or(true),
            clear_route_cache: raw.clear_route_cache.unwrap_or(true),
            max_sandbox_metrics: usize::try_from(max_sandbox_metrics).unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::table::Target;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn parse(json: &str) -> Result<Config, String> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Config::try_from(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn the_first_baggage_value_decides_only_when_it_holds_a_valid_key() {
        let c = parse("{}").unwrap();
        assert!(c.first_baggage_value_decides(b"user=ana, sandbox=dev-1"));
        // Not there, malformed or not a valid key: the other values may hold the key.
        assert!(!c.first_baggage_value_decides(b"user=ana"));
        assert!(!c.first_baggage_value_decides(b"sandbox"));
        assert!(!c.first_baggage_value_decides(b"sandbox=not%20valid"));
        // A header source first: it is tried before baggage.
        let c =
            parse(r#"{"key_sources": [{"header": "x-sandbox"}, {"baggage": "sandbox"}]}"#).unwrap();
        assert!(!c.first_baggage_value_decides(b"sandbox=dev-1"));
        // Edge mode strips members from every value: all are needed.
        let c = parse(r#"{"edge": {"trusted_source_cidrs": ["10.0.0.0/8"]}}"#).unwrap();
        assert!(!c.first_baggage_value_decides(b"sandbox=dev-1"));
    }

    #[test]
    fn defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(
            c.sources,
            vec![Source {
                kind: SourceKind::Baggage,
                header: "baggage".into(),
                member: "sandbox".into()
            }]
        );
        assert_eq!(c.keys.max_length, 64);
        assert!(!c.keys.signed());
        assert_eq!(c.service_from, ServiceFrom::Cluster);
        assert!(c.routes.is_empty() && c.registry.is_none() && c.edge.is_none());
        assert_eq!(c.routing_header, "x-meshguard-sandbox-cluster");
        assert_eq!(c.original_dst_cluster, "meshguard_sandbox_original_dst");
        assert!(!c.response_header);
        assert_eq!(c.max_sandbox_metrics, 100);
        // The demo config stays valid.
        assert!(parse(r#"{"mode": "enforce"}"#).is_ok());
    }

    #[test]
    fn registry_defaults() {
        let c = parse(r#"{"registry": {"cluster": "reg"}}"#).unwrap();
        let r = c.registry.unwrap();
        assert_eq!(
            (
                r.path.as_str(),
                r.authority.as_str(),
                r.poll_interval,
                r.timeout
            ),
            ("/", "reg", Duration::from_secs(10), Duration::from_secs(5))
        );
        assert_eq!((r.max_entries, r.max_body_bytes), (10_000, 1 << 20));
        let c = parse(r#"{"registry": {"cluster": "reg", "poll_interval": "1s"}}"#).unwrap();
        assert_eq!(c.registry.unwrap().timeout, Duration::from_secs(1));
    }

    #[test]
    fn sources_and_routes() {
        let c = parse(
            r#"{"key_sources": [{"header": "X-Sandbox"}, {"tracestate": "sb"}, {"ot_baggage": "Sandbox"},
                                {"uberctx": "sandbox"}, {"baggage": "sandbox"}],
                "routes": [{"key": "dev-1", "service": "reviews", "cluster": "reviews-dev-1"},
                           {"key": "dev-1", "service": "ratings", "address": "127.0.0.1:9000"}],
                "edge": {"trusted_source_cidrs": ["10.0.0.0/8"], "trusted_header": {"name": "X-Trusted", "value": "s3cret"}}}"#,
        )
        .unwrap();
        let headers: Vec<&str> = c.sources.iter().map(|s| s.header.as_str()).collect();
        assert_eq!(
            headers,
            [
                "x-sandbox",
                "tracestate",
                "ot-baggage-sandbox",
                "uberctx-sandbox",
                "baggage"
            ]
        );
        assert_eq!(c.baggage_members(), ["sandbox"]);
        assert_eq!(c.tracestate_members(), ["sb"]);
        assert_eq!(
            c.routes.get("dev-1", "ratings"),
            Some(&Target::Address("127.0.0.1:9000".into()))
        );
        let edge = c.edge.unwrap();
        assert_eq!(
            edge.trusted_header,
            Some(("x-trusted".into(), b"s3cret".to_vec()))
        );
        assert_eq!(edge.trusted_source_cidrs.len(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"key_sources": []}"#, "key_sources"),
            (r#"{"key_sources": [{"baggage": "a b"}]}"#, "key_sources[0]"),
            (
                r#"{"key_sources": [{"header": "x"}, {"tracestate": "Upper"}]}"#,
                "key_sources[1]",
            ),
            (r#"{"key_sources": [{"cookie": "x"}]}"#, "unknown variant"),
            (
                r#"{"key_sources": [{"header": "Baggage"}]}"#,
                "key_sources[0]",
            ),
            (r#"{"key": {"max_length": 0}}"#, "key.max_length"),
            (r#"{"key": {"max_length": 257}}"#, "key.max_length"),
            (r#"{"key": {"hmac_secret": "short"}}"#, "key.hmac_secret"),
            (
                r#"{"routes": [{"key": "a.b", "service": "s", "cluster": "c"}]}"#,
                "routes[0].key",
            ),
            (
                r#"{"routes": [{"key": "a", "service": "s", "address": "host:80"}]}"#,
                "routes[0].address",
            ),
            (
                r#"{"routes": [{"key": "a", "service": "s"}]}"#,
                "routes[0].cluster",
            ),
            (
                r#"{"routes": [{"key": "a", "service": "s", "cluster": "c"}, {"key": "a", "service": "s", "cluster": "d"}]}"#,
                "routes[1]: (a, s) is listed twice",
            ),
            (
                r#"{"routes": [{"key": "a", "service": "s", "cluster": "c", "x": 1}]}"#,
                "unknown field",
            ),
            (
                r#"{"routing_header": "x-envoy-original-dst-host"}"#,
                "routing_header",
            ),
            (r#"{"routing_header": "baggage"}"#, "routing_header"),
            (r#"{"routing_header": ":authority"}"#, "routing_header"),
            (
                r#"{"key_sources": [{"header": "x-a"}], "routing_header": "X-A"}"#,
                "routing_header",
            ),
            (r#"{"original_dst_cluster": "a b"}"#, "original_dst_cluster"),
            (r#"{"registry": {"cluster": ""}}"#, "registry.cluster"),
            (
                r#"{"registry": {"cluster": "r", "path": "v1"}}"#,
                "registry.path",
            ),
            (
                r#"{"registry": {"cluster": "r", "poll_interval": "10ms"}}"#,
                "registry.poll_interval",
            ),
            (
                r#"{"registry": {"cluster": "r", "poll_interval": "1s", "timeout": "2s"}}"#,
                "registry.timeout",
            ),
            (
                r#"{"registry": {"cluster": "r", "max_entries": 0}}"#,
                "registry.max_entries",
            ),
            (
                r#"{"registry": {"cluster": "r", "max_body_bytes": 10}}"#,
                "registry.max_body_bytes",
            ),
            (
                r#"{"edge": {"trusted_source_cidrs": ["10.0.0.0/40"]}}"#,
                "edge.trusted_source_cidrs[0]",
            ),
            (
                r#"{"edge": {"trusted_header": {"name": "x-t", "value": ""}}}"#,
                "edge.trusted_header.value",
            ),
            (
                r#"{"edge": {"trusted_header": {"name": "x-meshguard-sandbox-cluster", "value": "v"}}}"#,
                "edge.trusted_header.name",
            ),
            (r#"{"max_sandbox_metrics": 10001}"#, "max_sandbox_metrics"),
            (r#"{"mode": "off"}"#, "unknown variant"),
        ];
        for (json, want) in cases {
            let e = parse(json).unwrap_err();
            assert!(e.starts_with(want) || e.contains(want), "{json}: {e}");
        }
    }
}
