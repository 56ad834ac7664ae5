//! Descriptors: rules that turn a request into `(key, value)` entries, evaluated in order; the
//! first rule whose every entry matches wins (Envoy's "first full match").
//!
//! One rule is both Envoy's rate-limit *actions* (what to read from the request) and its
//! *descriptor* (what to match), so a rule is self-contained:
//!
//! ```json
//! {"name": "per_client", "entries": [{"client_address": {}}], "token_bucket": {...}}
//! {"name": "checkout", "entries": [{"path": {"prefix": "/checkout"}}, {"method": "POST"}]}
//! {"name": "by_key", "entries": [{"header": {"name": "x-api-key"}}]}
//! {"name": "gold", "entries": [{"header": {"name": "x-plan", "value": "gold"}}]}
//! ```
//!
//! Entries that read a value (`header`, `client_address`, `authority`) without a fixed `value`
//! make the rule **per value**: each distinct value gets its own bucket (Envoy's wildcard
//! descriptors). With a `value`, the entry matches only that value.

use serde::Deserialize;

use crate::matcher::PathMatch;

/// One entry of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// The first value of a request header (absent: no match).
    Header {
        /// Header name (case-insensitive).
        name: String,
        /// Entry key (default: the header name).
        #[serde(default)]
        descriptor_key: Option<String>,
        /// Match only this value (default: any, one bucket per value).
        #[serde(default)]
        value: Option<String>,
    },
    /// Whether a header is present (`present: true`, the default) or absent.
    HeaderPresent {
        /// Header name.
        name: String,
        /// Required presence.
        #[serde(default = "yes")]
        present: bool,
    },
    /// The path (query ignored) matches.
    Path(PathMatch),
    /// The method equals this.
    Method(String),
    /// The client address: `source.address` without its port, or with `trusted_hops: N` the
    /// N-th address of `x-forwarded-for` counted from the right (1 = the rightmost).
    ClientAddress {
        /// Trusted proxies in front of this Envoy; 0 (default) uses `source.address`.
        #[serde(default)]
        trusted_hops: u32,
        /// Match only this address.
        #[serde(default)]
        value: Option<String>,
    },
    /// The `:authority` (host) of the request.
    Authority {
        /// Match only this authority.
        #[serde(default)]
        value: Option<String>,
    },
    /// A constant entry (`generic_key` in Envoy).
    GenericKey {
        /// Its value.
        value: String,
        /// Its key (default `generic_key`).
        #[serde(default)]
        descriptor_key: Option<String>,
    },
}

fn yes() -> bool {
    true
}

/// What a request offers to the rules (read once by the filter).
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    /// Request headers (lower-case names), pseudo-headers included.
    pub headers: &'a [(Vec<u8>, Vec<u8>)],
    /// `source.address` (`ip:port`), when the rules need it.
    pub source_address: Option<&'a [u8]>,
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// The client address per `trusted_hops` (see [`Entry::ClientAddress`]).
    pub fn client_address(&self, trusted_hops: u32) -> Option<Vec<u8>> {
        if trusted_hops == 0 {
            return self.source_address.map(strip_port);
        }
        // All x-forwarded-for values, comma-separated, joined in order.
        let hops: Vec<&[u8]> = self
            .all("x-forwarded-for")
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|h| !h.is_empty())
            .collect();
        let n = usize::try_from(trusted_hops).ok()?;
        let i = hops.len().checked_sub(n)?;
        hops.get(i).map(|h| h.to_vec())
    }
}

/// `1.2.3.4:5678` → `1.2.3.4`; `[::1]:80` → `::1`; anything else unchanged.
fn strip_port(addr: &[u8]) -> Vec<u8> {
    if let Some(rest) = addr.strip_prefix(b"[")
        && let Some(end) = rest.iter().position(|b| *b == b']')
    {
        return rest.get(..end).unwrap_or(rest).to_vec();
    }
    let colons = addr.iter().filter(|b| **b == b':').count();
    if colons == 1
        && let Some(i) = addr.iter().position(|b| *b == b':')
    {
        return addr.get(..i).unwrap_or(addr).to_vec();
    }
    addr.to_vec()
}

impl Entry {
    /// True when this entry reads a value that makes per-value buckets.
    pub fn is_per_value(&self) -> bool {
        matches!(
            self,
            Self::Header { value: None, .. }
                | Self::ClientAddress { value: None, .. }
                | Self::Authority { value: None }
        )
    }

    /// Adds the request headers this entry reads to `reads`.
    pub fn header_reads(&self, reads: &mut Vec<crate::headers::HeaderRead>) {
        use crate::headers::{HeaderRead, add};
        match self {
            Self::Header { name, .. } | Self::HeaderPresent { name, .. } => {
                add(reads, HeaderRead::first(name));
            }
            Self::Path(_) => add(reads, HeaderRead::first(":path")),
            Self::Method(_) => add(reads, HeaderRead::first(":method")),
            Self::ClientAddress { trusted_hops, .. } if *trusted_hops > 0 => {
                add(reads, HeaderRead::all("x-forwarded-for"));
            }
            Self::Authority { .. } => add(reads, HeaderRead::first(":authority")),
            _ => {}
        }
    }

    /// True when the entry needs `source.address`.
    pub fn needs_source_address(&self) -> bool {
        matches!(
            self,
            Self::ClientAddress {
                trusted_hops: 0,
                ..
            }
        )
    }

    /// The `(key, value)` this entry produces for `req`, or `None` when it does not match.
    pub fn evaluate(&self, req: &Request<'_>) -> Option<(String, Vec<u8>)> {
        let fixed = |got: Vec<u8>, want: &Option<String>| match want {
            Some(w) if w.as_bytes() != got.as_slice() => None,
            _ => Some(got),
        };
        match self {
            Self::Header {
                name,
                descriptor_key,
                value,
            } => {
                let got = req.header(name)?.to_vec();
                Some((
                    descriptor_key
                        .clone()
                        .unwrap_or_else(|| name.to_ascii_lowercase()),
                    fixed(got, value)?,
                ))
            }
            Self::HeaderPresent { name, present } => (req.header(name).is_some() == *present)
                .then(|| ("header_present".to_owned(), name.as_bytes().to_vec())),
            Self::Path(m) => {
                let path = req.header(":path")?;
                m.matches(path).then(|| {
                    (
                        "path".to_owned(),
                        crate::matcher::strip_query(path).to_vec(),
                    )
                })
            }
            Self::Method(m) => (req.header(":method")? == m.as_bytes())
                .then(|| ("method".to_owned(), m.as_bytes().to_vec())),
            Self::ClientAddress {
                trusted_hops,
                value,
            } => Some((
                "remote_address".to_owned(),
                fixed(req.client_address(*trusted_hops)?, value)?,
            )),
            Self::Authority { value } => Some((
                "authority".to_owned(),
                fixed(req.header(":authority")?.to_vec(), value)?,
            )),
            Self::GenericKey {
                value,
                descriptor_key,
            } => Some((
                descriptor_key
                    .clone()
                    .unwrap_or_else(|| "generic_key".to_owned()),
                value.as_bytes().to_vec(),
            )),
        }
    }
}

/// The entries of a rule for `req`, or `None` when any entry does not match.
pub fn evaluate(entries: &[Entry], req: &Request<'_>) -> Option<Vec<(String, Vec<u8>)>> {
    entries.iter().map(|e| e.evaluate(req)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    fn h(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn entries(json: &str) -> Vec<Entry> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn all_entries_must_match() {
        let rule = entries(
            r#"[{"path": {"prefix": "/api/"}}, {"method": "POST"}, {"header": {"name": "x-api-key"}}]"#,
        );
        let headers = h(&[
            (":path", "/api/x?y=1"),
            (":method", "POST"),
            ("x-api-key", "k1"),
        ]);
        let req = Request {
            headers: &headers,
            source_address: None,
        };
        let got = evaluate(&rule, &req).unwrap();
        assert_eq!(got[0], ("path".into(), b"/api/x".to_vec()));
        assert_eq!(got[2], ("x-api-key".into(), b"k1".to_vec()));
        let headers = h(&[(":path", "/api/x"), (":method", "GET"), ("x-api-key", "k1")]);
        assert!(
            evaluate(
                &rule,
                &Request {
                    headers: &headers,
                    source_address: None
                }
            )
            .is_none()
        );
        assert!(rule[2].is_per_value() && !rule[0].is_per_value());
    }

    #[test]
    fn fixed_values_and_presence() {
        let rule = entries(
            r#"[{"header": {"name": "x-plan", "value": "gold"}}, {"header_present": {"name": "x-debug", "present": false}}]"#,
        );
        let gold = h(&[("x-plan", "gold")]);
        assert!(
            evaluate(
                &rule,
                &Request {
                    headers: &gold,
                    source_address: None
                }
            )
            .is_some()
        );
        let silver = h(&[("x-plan", "silver")]);
        assert!(
            evaluate(
                &rule,
                &Request {
                    headers: &silver,
                    source_address: None
                }
            )
            .is_none()
        );
        let debug = h(&[("x-plan", "gold"), ("x-debug", "1")]);
        assert!(
            evaluate(
                &rule,
                &Request {
                    headers: &debug,
                    source_address: None
                }
            )
            .is_none()
        );
        assert!(!rule[0].is_per_value());
    }

    #[test]
    fn client_address_from_source_or_trusted_forwarded_for() {
        let headers = h(&[
            ("x-forwarded-for", "6.6.6.6, 1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        let req = Request {
            headers: &headers,
            source_address: Some(b"10.0.0.1:5555"),
        };
        assert_eq!(req.client_address(0).unwrap(), b"10.0.0.1");
        // Spoofed hops on the left are ignored: with one trusted proxy, the rightmost is the client.
        assert_eq!(req.client_address(1).unwrap(), b"2.2.2.2");
        assert_eq!(req.client_address(2).unwrap(), b"1.1.1.1");
        assert_eq!(req.client_address(4), None);
        let v6 = Request {
            headers: &[],
            source_address: Some(b"[::1]:80"),
        };
        assert_eq!(v6.client_address(0).unwrap(), b"::1");
    }

    #[test]
    fn generic_and_authority() {
        let rule = entries(r#"[{"generic_key": {"value": "checkout"}}, {"authority": {}}]"#);
        let headers = h(&[(":authority", "shop.example")]);
        let got = evaluate(
            &rule,
            &Request {
                headers: &headers,
                source_address: None,
            },
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("generic_key".into(), b"checkout".to_vec()),
                ("authority".into(), b"shop.example".to_vec())
            ]
        );
        assert!(serde_json::from_str::<Vec<Entry>>(r#"[{"regex": "x"}]"#).is_err());
    }
}
