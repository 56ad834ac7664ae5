//! Reading a request's routing key (and what else the filter must know) from its headers, in
//! one pass over the header pairs.
//!
//! Sources are tried in the configured order; the first that yields a *valid* key wins. A
//! source that yields an invalid key (too long, bad characters, bad signature) does not stop
//! the search, but is remembered: if no source yields a valid key, the request is counted as
//! `invalid_key`.

use super::baggage;
use super::config::{Config, ORIGINAL_DST_HEADER, SourceKind};
use super::key::KeyError;
use super::trace_context;

/// What the headers say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection<'h> {
    /// The first valid key, else the first invalid one's error; `None` when no source had a
    /// candidate.
    pub key: Option<Result<String, KeyError>>,
    /// Some source mentions the key (even malformed, or in `tracestate` without a valid
    /// `traceparent`): what edge mode strips.
    pub key_material: bool,
    /// The client sent the routing header.
    pub routing_header: bool,
    /// The client sent `x-envoy-original-dst-host`.
    pub original_dst_header: bool,
    /// Edge mode's trusted header is present with the configured value.
    pub trusted_header: bool,
    /// `:authority`.
    pub authority: Option<&'h [u8]>,
}

const BAGGAGE: u8 = 0;
const TRACESTATE: u8 = 1;
const TRACEPARENT: u8 = 2;
const ROUTING: u8 = 3;
const ORIGINAL_DST: u8 = 4;
const TRUSTED: u8 = 5;
const AUTHORITY: u8 = 6;
/// Source `i` (header kinds) is slot `SOURCE + i`.
const SOURCE: u8 = 8;

/// Which slot a header name belongs to, if any.
fn slot(config: &Config, name: &[u8]) -> Option<u8> {
    match name {
        b"baggage" => return Some(BAGGAGE),
        b"tracestate" => return Some(TRACESTATE),
        b"traceparent" => return Some(TRACEPARENT),
        b":authority" => return Some(AUTHORITY),
        _ => {}
    }
    if name == config.routing_header.as_bytes() {
        return Some(ROUTING);
    }
    if name == ORIGINAL_DST_HEADER.as_bytes() {
        return Some(ORIGINAL_DST);
    }
    if let Some((trusted, _)) = config.edge.as_ref().and_then(|e| e.trusted_header.as_ref())
        && name == trusted.as_bytes()
    {
        return Some(TRUSTED);
    }
    config
        .sources
        .iter()
        .zip(SOURCE..)
        .find(|(s, _)| {
            matches!(s.kind, SourceKind::Header | SourceKind::ItemHeader)
                && name == s.header.as_bytes()
        })
        .map(|(_, i)| i)
}

/// The relevant headers, by slot (allocates only when the request has any).
struct Found<'h>(Vec<(u8, &'h [u8])>);

impl<'h> Found<'h> {
    fn collect(config: &Config, headers: &'h [(Vec<u8>, Vec<u8>)]) -> Self {
        let mut found = Vec::new();
        for (name, value) in headers {
            // Envoy hands over lower-case names; anything else is not ours.
            if let Some(s) = slot(config, name) {
                found.push((s, value.as_slice()));
            }
        }
        Self(found)
    }

    fn values(&self, slot: u8) -> impl Iterator<Item = &'h [u8]> + Clone + '_ {
        self.0
            .iter()
            .filter(move |(s, _)| *s == slot)
            .map(|(_, v)| *v)
    }

    fn has(&self, slot: u8) -> bool {
        self.0.iter().any(|(s, _)| *s == slot)
    }
}

/// Inspects the request headers.
pub fn inspect<'h>(config: &Config, headers: &'h [(Vec<u8>, Vec<u8>)]) -> Inspection<'h> {
    let found = Found::collect(config, headers);
    let mut out = Inspection {
        routing_header: found.has(ROUTING),
        original_dst_header: found.has(ORIGINAL_DST),
        authority: found.values(AUTHORITY).next(),
        ..Inspection::default()
    };
    if let Some((_, want)) = config.edge.as_ref().and_then(|e| e.trusted_header.as_ref()) {
        out.trusted_header = found
            .values(TRUSTED)
            .next()
            .is_some_and(|v| baggage::trim_ows(v) == want.as_slice());
    }
    let mut first_error = None;
    for (source, slot) in config.sources.iter().zip(SOURCE..) {
        let candidate: Option<Result<Vec<u8>, KeyError>> = match source.kind {
            SourceKind::Baggage => {
                let values = found.values(BAGGAGE);
                if !found.has(BAGGAGE) {
                    continue;
                }
                out.key_material |= baggage::mentions(values.clone(), &[&source.member]);
                baggage::value_of(values, &source.member)
                    .map(|v| v.map(String::into_bytes).ok_or(KeyError::BadCharacter))
            }
            SourceKind::Tracestate => {
                let values = found.values(TRACESTATE);
                if !found.has(TRACESTATE) {
                    continue;
                }
                out.key_material |= trace_context::mentions(values.clone(), &[&source.member]);
                let parents: Vec<&[u8]> = found.values(TRACEPARENT).collect();
                if trace_context::traceparent_valid(&parents) {
                    trace_context::value_of(values, &source.member).map(|v| Ok(v.to_vec()))
                } else {
                    None
                }
            }
            SourceKind::Header => found.values(slot).next().map(|v| Ok(v.to_vec())),
            SourceKind::ItemHeader => found.values(slot).next().map(|v| {
                baggage::percent_decode(baggage::trim_ows(v)).ok_or(KeyError::BadCharacter)
            }),
        };
        let Some(candidate) = candidate else { continue };
        out.key_material = true;
        match candidate.and_then(|c| config.keys.check(&c).map(str::to_owned)) {
            Ok(key) => {
                out.key = Some(Ok(key));
                return out;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    out.key = first_error.map(Err);
    out
}

pub use crate::headers::HeaderRead;

/// The request headers [`inspect`] and [`strip_ops`] look at, so a filter can fetch exactly
/// these, one host call each, instead of dumping the whole header map (measured in stock
/// Envoy 1.40: a header-map dump costs as much as seven single reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderReads {
    /// Where keys come from; read on every request.
    pub sources: Vec<HeaderRead>,
    /// Headers only this filter may set, and edge mode's trusted header; read on every request.
    pub guards: Vec<HeaderRead>,
    /// Read only when some source header is present: `traceparent` (it validates
    /// `tracestate`) and `:authority` (when it names the service).
    pub with_key: Vec<HeaderRead>,
}

impl HeaderReads {
    /// The reads a config needs.
    pub fn new(config: &Config) -> Self {
        fn push(list: &mut Vec<HeaderRead>, name: &str, all_values: bool) {
            if !list.iter().any(|r| r.name == name) {
                list.push(HeaderRead {
                    name: name.to_owned(),
                    all_values,
                });
            }
        }
        let mut out = Self::default();
        for s in &config.sources {
            match s.kind {
                SourceKind::Baggage => push(&mut out.sources, "baggage", true),
                SourceKind::Tracestate => {
                    push(&mut out.sources, "tracestate", true);
                    push(&mut out.with_key, "traceparent", true);
                }
                SourceKind::Header | SourceKind::ItemHeader => {
                    push(&mut out.sources, &s.header, false);
                }
            }
        }
        if config.strip_client_routing_headers {
            push(&mut out.guards, &config.routing_header, false);
            push(&mut out.guards, ORIGINAL_DST_HEADER, false);
        }
        if let Some((trusted, _)) = config.edge.as_ref().and_then(|e| e.trusted_header.as_ref()) {
            push(&mut out.guards, trusted, false);
        }
        if config.service_from == super::config::ServiceFrom::Authority {
            push(&mut out.with_key, ":authority", false);
        }
        out
    }
}

/// A header change the filter makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderOp {
    /// Remove every value.
    Remove(String),
    /// Replace every value with this one.
    Replace(String, Vec<u8>),
}

/// The changes that remove every routing key from a request (edge mode): key members out of
/// `baggage` and `tracestate` (the rest kept), key headers removed.
pub fn strip_ops(config: &Config, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<HeaderOp> {
    let found = Found::collect(config, headers);
    let mut ops = Vec::new();
    for (slot, header, members) in [
        (BAGGAGE, "baggage", config.baggage_members()),
        (TRACESTATE, "tracestate", config.tracestate_members()),
    ] {
        if members.is_empty() || !found.has(slot) {
            continue;
        }
        let stripped = if slot == BAGGAGE {
            baggage::strip(found.values(slot), &members)
        } else {
            trace_context::strip(found.values(slot), &members)
        };
        match stripped {
            Some(v) if v.is_empty() => ops.push(HeaderOp::Remove(header.into())),
            Some(v) => ops.push(HeaderOp::Replace(header.into(), v)),
            None => {}
        }
    }
    for (source, slot) in config.sources.iter().zip(SOURCE..) {
        if matches!(source.kind, SourceKind::Header | SourceKind::ItemHeader)
            && found.has(slot)
            && !ops.contains(&HeaderOp::Remove(source.header.clone()))
        {
            ops.push(HeaderOp::Remove(source.header.clone()));
        }
    }
    ops
}

/// The host of an `:authority` (port dropped, lower case); `None` if it is not visible ASCII.
pub fn authority_host(authority: &[u8]) -> Option<String> {
    let text = core::str::from_utf8(authority).ok()?.trim();
    let host = if text.starts_with('[') {
        // [v6]:port → [v6]
        let end = text.find(']')?;
        text.get(..=end)?
    } else {
        match text.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => text,
        }
    };
    (!host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
