//! `rate_limit` configuration.
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "descriptors": [
//!     {"name": "per_client", "entries": [{"client_address": {"trusted_hops": 1}}],
//!      "token_bucket": {"max_tokens": 20, "tokens_per_fill": 10, "fill_interval": "1s"},
//!      "max_dynamic_buckets": 1000},
//!     {"name": "checkout", "entries": [{"path": {"prefix": "/checkout"}}, {"method": "POST"}],
//!      "token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}}
//!   ],
//!   "token_bucket": {"max_tokens": 1000, "tokens_per_fill": 1000, "fill_interval": "1s"},
//!   "status": 429,
//!   "response_body": "rate limited",
//!   "x_ratelimit_headers": false,
//!   "dry_run_header": null
//! }
//! ```
//! `descriptors` are evaluated in order and the first full match takes its bucket; requests no
//! rule matches take the top-level `token_bucket` when there is one, else pass.

use serde::Deserialize;

use super::bucket::Spec;
use super::descriptor::Entry;
use crate::duration::ConfigDuration;
use crate::invalid::{Invalid, ensure};
use crate::mode::Mode;

/// Raw JSON (first phase).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `enforce` or `dry_run`.
    pub mode: Mode,
    /// Rules, first full match wins.
    pub descriptors: Vec<RawRule>,
    /// Bucket of requests no rule matches (none: they pass).
    pub token_bucket: Option<RawBucket>,
    /// Requests a rule admitted also take a token from `token_bucket` (Envoy's
    /// `always_consume_default_token_bucket`). Default true.
    pub always_consume_default_token_bucket: Option<bool>,
    /// Status of a limited request. Default 429.
    pub status: Option<u16>,
    /// Body of a limited request (and `grpc-message`). Default `rate limited`.
    pub response_body: Option<String>,
    /// Send `x-ratelimit-limit/remaining/reset` (IETF DRAFT_VERSION_03). Default false.
    pub x_ratelimit_headers: bool,
    /// In dry run, add this request header (value `1`) to requests that would be limited.
    pub dry_run_header: Option<String>,
    /// Global limits over the RLS v3 protocol.
    pub global: Option<RawGlobal>,
    /// Read route metadata (`filter_metadata.meshguard.rate_limit`: `off`, `on` or a profile
    /// name) to change behaviour per route (see `meshguard_policy::per_route`).
    pub per_route: Option<crate::per_route::PerRoute>,
    /// Named alternatives to `descriptors` + `token_bucket`, chosen per route.
    pub profiles: std::collections::BTreeMap<String, RawProfile>,
}

/// A profile: its own rules and default bucket (everything else is shared with the top level).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProfile {
    /// Rules, first full match wins.
    pub descriptors: Vec<RawRule>,
    /// Bucket of requests no rule of the profile matches.
    pub token_bucket: Option<RawBucket>,
}

/// `global`: the Rate Limit Service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    /// Envoy cluster of the RLS (HTTP/2).
    pub cluster: String,
    /// The limits' domain.
    pub domain: String,
    /// Call timeout. Default `20ms` (Envoy's).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// `allow` (default, Envoy's) or `deny` when the RLS fails or times out.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Status when `failure_mode` is `deny`. Default 500 (Envoy's `status_on_error`).
    #[serde(default)]
    pub failure_status: Option<u16>,
    /// Answer OVER_LIMIT locally until the RLS's `duration_until_reset`, without calling it.
    /// Default true.
    #[serde(default)]
    pub cache_over_limit: Option<bool>,
}

/// What happens when the RLS cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through (counted).
    #[default]
    Allow,
    /// Reject it with `failure_status`.
    Deny,
}

/// A rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Name (metrics, logs): lower-case letters, digits, `_`.
    pub name: String,
    /// Entries, all of which must match.
    pub entries: Vec<Entry>,
    /// The rule's local bucket (a rule needs a bucket, `global`, or both).
    #[serde(default)]
    pub token_bucket: Option<RawBucket>,
    /// Also check this rule's descriptor with the RLS (after the local bucket admits).
    #[serde(default)]
    pub global: bool,
    /// Per-value rules: most buckets kept (older ones are evicted). Default 1000.
    #[serde(default)]
    pub max_dynamic_buckets: Option<u32>,
}

/// A token bucket.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    /// Capacity (burst).
    pub max_tokens: u32,
    /// Tokens per fill. Default 1.
    #[serde(default)]
    pub tokens_per_fill: Option<u32>,
    /// Fill period.
    pub fill_interval: ConfigDuration,
}

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Name.
    pub name: String,
    /// Entries.
    pub entries: Vec<Entry>,
    /// Local bucket.
    pub bucket: Option<Spec>,
    /// Checked with the RLS.
    pub global: bool,
    /// Per value (one bucket per distinct entry values).
    pub per_value: bool,
    /// Slots of the per-value table.
    pub max_dynamic_buckets: u32,
    /// The profile the rule belongs to (`None`: the top level).
    pub profile: Option<usize>,
}

/// A validated profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Name (route metadata value).
    pub name: String,
    /// Its default bucket.
    pub default_bucket: Option<Spec>,
}

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// Enforce or dry run.
    pub mode: Mode,
    /// Rules.
    pub rules: Vec<Rule>,
    /// Default bucket.
    pub default_bucket: Option<Spec>,
    /// Matched requests also consume the default bucket.
    pub always_consume_default: bool,
    /// Limited status.
    pub status: u16,
    /// Limited body.
    pub body: String,
    /// Rate-limit headers.
    pub x_ratelimit_headers: bool,
    /// Dry-run marker header (lower-case).
    pub dry_run_header: Option<String>,
    /// The RLS.
    pub global: Option<Global>,
    /// Per-route behaviour, when route metadata is read.
    pub per_route: Option<crate::per_route::PerRoute>,
    /// Profiles (their rules are in `rules`, tagged with the profile index).
    pub profiles: Vec<Profile>,
}

/// A validated `global` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Cluster.
    pub cluster: String,
    /// Domain.
    pub domain: String,
    /// Timeout.
    pub timeout: core::time::Duration,
    /// Failure mode.
    pub failure_mode: FailureMode,
    /// Deny status.
    pub failure_status: u16,
    /// Cache OVER_LIMIT answers.
    pub cache_over_limit: bool,
}

/// Largest per-value table (slots in shared data, each ~40 bytes).
pub const MAX_DYNAMIC_BUCKETS: u32 = 100_000;

fn bucket(raw: &RawBucket, field: &str) -> Result<Spec, Invalid> {
    ensure(raw.max_tokens >= 1, &format!("{field}.max_tokens"), || {
        "must be at least 1".into()
    })?;
    let per_fill = raw.tokens_per_fill.unwrap_or(1);
    ensure(per_fill >= 1, &format!("{field}.tokens_per_fill"), || {
        "must be at least 1".into()
    })?;
    let interval = raw.fill_interval.as_nanos_u64();
    ensure(
        interval >= 1_000_000,
        &format!("{field}.fill_interval"),
        || "must be at least 1ms".into(),
    )?;
    Ok(Spec {
        max_tokens: raw.max_tokens,
        tokens_per_fill: per_fill,
        fill_interval_ns: interval,
    })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Validates a list of rules; names get `name_prefix` (profiles), rules `profile`.
fn rules_of(
    raw: &[RawRule],
    field: &str,
    name_prefix: &str,
    profile: Option<usize>,
    has_global: bool,
    existing: &[Rule],
) -> Result<Vec<Rule>, Invalid> {
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let f = format!("{field}[{i}]");
        ensure(is_name(&r.name), &format!("{f}.name"), || {
            format!("{:?} must be 1-64 lower-case letters, digits or _", r.name)
        })?;
        let name = format!("{name_prefix}{}", r.name);
        ensure(
            !rules.iter().chain(existing).any(|x: &Rule| x.name == name),
            &format!("{f}.name"),
            || format!("{:?} is used twice", r.name),
        )?;
        ensure(!r.entries.is_empty(), &format!("{f}.entries"), || {
            "needs at least one entry".into()
        })?;
        let max_dynamic = r.max_dynamic_buckets.unwrap_or(1000);
        ensure(
            (1..=MAX_DYNAMIC_BUCKETS).contains(&max_dynamic),
            &format!("{f}.max_dynamic_buckets"),
            || format!("must be between 1 and {MAX_DYNAMIC_BUCKETS}"),
        )?;
        ensure(r.token_bucket.is_some() || r.global, &f, || {
            "needs a token_bucket, global: true, or both".into()
        })?;
        ensure(!r.global || has_global, &format!("{f}.global"), || {
            "needs the top-level global section (the RLS cluster and domain)".into()
        })?;
        rules.push(Rule {
            name,
            per_value: r.entries.iter().any(Entry::is_per_value),
            entries: r.entries.clone(),
            bucket: r
                .token_bucket
                .as_ref()
                .map(|b| bucket(b, &format!("{f}.token_bucket")))
                .transpose()?,
            global: r.global,
            max_dynamic_buckets: max_dynamic,
            profile,
        });
    }
    Ok(rules)
}

impl TryFrom<RawConfig> for Config {
    type Error = Invalid;

    #[inline(never)] // small functions keep V8's compile memory down: docs/bundle.md "Memory"
    fn try_from(raw: RawConfig) -> Result<Self, Invalid> {
        let has_global = raw.global.is_some();
        let mut rules = rules_of(&raw.descriptors, "descriptors", "", None, has_global, &[])?;
        let mut profiles = Vec::new();
        for (i, (name, p)) in raw.profiles.iter().enumerate() {
            let f = format!("profiles.{name}");
            ensure(is_name(name) && name != "on" && name != "off", &f, || {
                "profile names are 1-64 lower-case letters, digits or _, not on/off".into()
            })?;
            let mut r = rules_of(
                &p.descriptors,
                &format!("{f}.descriptors"),
                &format!("{name}."),
                Some(i),
                has_global,
                &rules,
            )?;
            rules.append(&mut r);
            profiles.push(Profile {
                name: name.clone(),
                default_bucket: p
                    .token_bucket
                    .as_ref()
                    .map(|b| bucket(b, &format!("{f}.token_bucket")))
                    .transpose()?,
            });
        }
        let default_bucket = raw
            .token_bucket
            .as_ref()
            .map(|b| bucket(b, "token_bucket"))
            .transpose()?;
        let status = raw.status.unwrap_or(429);
        ensure((400..=599).contains(&status), "status", || {
            "must be a 4xx or 5xx status".into()
        })?;
        let dry_run_header = match raw.dry_run_header {
            Some(h) => {
                ensure(
                    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                    "dry_run_header",
                    || format!("{h:?} is not a header name"),
                )?;
                Some(h.to_ascii_lowercase())
            }
            None => None,
        };
        let global = match &raw.global {
            Some(g) => {
                ensure(!g.cluster.is_empty(), "global.cluster", || {
                    "must not be empty".into()
                })?;
                ensure(!g.domain.is_empty(), "global.domain", || {
                    "must not be empty".into()
                })?;
                let timeout = g
                    .timeout
                    .map_or(core::time::Duration::from_millis(20), ConfigDuration::get);
                ensure(
                    (core::time::Duration::from_millis(1)..=core::time::Duration::from_secs(10))
                        .contains(&timeout),
                    "global.timeout",
                    || "must be between 1ms and 10s".into(),
                )?;
                let failure_status = g.failure_status.unwrap_or(500);
                ensure(
                    (400..=599).contains(&failure_status),
                    "global.failure_status",
                    || "must be a 4xx or 5xx status".into(),
                )?;
                Some(Global {
                    cluster: g.cluster.clone(),
                    domain: g.domain.clone(),
                    timeout,
                    failure_mode: g.failure_mode,
                    failure_status,
                    cache_over_limit: g.cache_over_limit.unwrap_or(true),
                })
            }
            None => None,
        };
        Ok(Self {
            mode: raw.mode,
            global,
            per_route: raw.per_route,
            profiles,
            rules,
            default_bucket,
            always_consume_default: raw.always_consume_default_token_bucket.unwrap_or(true),
            status,
            body: raw.response_body.unwrap_or_else(|| "rate limited".into()),
            x_ratelimit_headers: raw.x_ratelimit_headers,
            dry_run_header,
        })
    }
}

impl Config {
    /// The index of the profile named `name`.
    pub fn profile(&self, name: &str) -> Option<usize> {
        self.profiles.iter().position(|p| p.name == name)
    }

    /// The default bucket of a profile (`None`: the top level).
    pub fn default_of(&self, profile: Option<usize>) -> Option<Spec> {
        match profile {
            None => self.default_bucket,
            Some(i) => self.profiles.get(i).and_then(|p| p.default_bucket),
        }
    }

    /// The request headers the rules read (every rule, profiles' included), each once.
    pub fn header_reads(&self) -> Vec<crate::headers::HeaderRead> {
        let mut reads = Vec::new();
        for e in self.rules.iter().flat_map(|r| &r.entries) {
            e.header_reads(&mut reads);
        }
        reads
    }

    /// True when some rule needs `source.address`.
    pub fn needs_source_address(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.entries.iter().any(Entry::needs_source_address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn parse(json: &str) -> Result<Config, String> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Config::try_from(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_per_value() {
        let c = parse(
            r#"{"descriptors": [{"name": "per_client", "entries": [{"client_address": {}}],
                                 "token_bucket": {"max_tokens": 5, "fill_interval": "1s"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            (c.status, c.body.as_str(), c.x_ratelimit_headers),
            (429, "rate limited", false)
        );
        let r = &c.rules[0];
        assert!(r.per_value);
        assert_eq!(r.max_dynamic_buckets, 1000);
        assert_eq!(
            r.bucket,
            Some(Spec {
                max_tokens: 5,
                tokens_per_fill: 1,
                fill_interval_ns: 1_000_000_000
            })
        );
        assert!(c.needs_source_address() && c.default_bucket.is_none());
    }

    #[test]
    fn profiles_have_their_own_rules() {
        let c = parse(
            r#"{"per_route": {"default": "on"},
                "token_bucket": {"max_tokens": 100, "fill_interval": "1s"},
                "profiles": {"checkout": {"descriptors": [{"name": "post", "entries": [{"method": "POST"}],
                                                           "token_bucket": {"max_tokens": 2, "fill_interval": "1s"}}],
                                          "token_bucket": {"max_tokens": 5, "fill_interval": "1s"}}}}"#,
        )
        .unwrap();
        assert_eq!(c.profile("checkout"), Some(0));
        assert_eq!(c.rules[0].name, "checkout.post");
        assert_eq!(c.rules[0].profile, Some(0));
        assert_eq!(c.default_of(Some(0)).unwrap().max_tokens, 5);
        assert_eq!(c.default_of(None).unwrap().max_tokens, 100);
        assert!(parse(r#"{"profiles": {"off": {}}}"#).is_err());
    }

    #[test]
    fn global_defaults() {
        let c = parse(
            r#"{"global": {"cluster": "rls", "domain": "shop"},
                "descriptors": [{"name": "a", "entries": [{"generic_key": {"value": "x"}}], "global": true}]}"#,
        )
        .unwrap();
        let g = c.global.unwrap();
        assert_eq!(g.timeout, core::time::Duration::from_millis(20));
        assert_eq!(
            (g.failure_mode, g.failure_status, g.cache_over_limit),
            (FailureMode::Allow, 500, true)
        );
        assert!(c.rules[0].global && c.rules[0].bucket.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let b = r#""token_bucket": {"max_tokens": 5, "fill_interval": "1s"}"#;
        let cases = [
            (
                format!(
                    r#"{{"descriptors": [{{"name": "Bad Name", "entries": [{{"method": "GET"}}], {b}}}]}}"#
                ),
                "descriptors[0].name",
            ),
            (
                format!(r#"{{"descriptors": [{{"name": "a", "entries": [], {b}}}]}}"#),
                "descriptors[0].entries",
            ),
            (
                format!(
                    r#"{{"descriptors": [{{"name": "a", "entries": [{{"method": "GET"}}], {b}}}, {{"name": "a", "entries": [{{"method": "GET"}}], {b}}}]}}"#
                ),
                "descriptors[1].name: \"a\" is used twice",
            ),
            (
                r#"{"token_bucket": {"max_tokens": 0, "fill_interval": "1s"}}"#.to_owned(),
                "token_bucket.max_tokens",
            ),
            (
                r#"{"token_bucket": {"max_tokens": 1, "fill_interval": "1us"}}"#.to_owned(),
                "token_bucket.fill_interval",
            ),
            (r#"{"status": 200}"#.to_owned(), "status"),
            (
                r#"{"dry_run_header": "bad header"}"#.to_owned(),
                "dry_run_header",
            ),
        ];
        for (json, want) in cases {
            let e = parse(&json).unwrap_err();
            assert!(e.starts_with(want), "{json}: {e}");
        }
    }
}
