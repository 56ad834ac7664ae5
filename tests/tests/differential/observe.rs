//! What a runner observed, in one shape for both, and the comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::scenario::{Compare, Mask};

/// Response headers that Envoy adds on its own and host-sim does not model (the brief of the
/// differential suite excludes them): `date`, `server`, `x-envoy-upstream-service-time`.
pub const ENVOY_ONLY_HEADERS: &[&str] = &["date", "server", "x-envoy-upstream-service-time"];

/// What the client got for one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `:status`, if response headers arrived.
    pub status: Option<u16>,
    /// Response headers (without `:status` and [`ENVOY_ONLY_HEADERS`]), in order.
    pub headers: Vec<(String, String)>,
    /// Body (lossy text).
    pub body: String,
    /// Trailers, in order.
    pub trailers: Vec<(String, String)>,
    /// The stream was reset (after whatever arrived before).
    pub reset: bool,
}

impl Outcome {
    /// Builds an outcome, dropping `:status` and the Envoy-only headers.
    pub fn new(
        status: Option<u16>,
        headers: impl IntoIterator<Item = (String, String)>,
        body: &[u8],
        trailers: impl IntoIterator<Item = (String, String)>,
        reset: bool,
    ) -> Self {
        Self {
            status,
            headers: headers
                .into_iter()
                .filter(|(k, _)| k != ":status" && !ENVOY_ONLY_HEADERS.contains(&k.as_str()))
                .collect(),
            body: body_text(body),
            trailers: trailers.into_iter().collect(),
            reset,
        }
    }
}

/// A request as one cluster's endpoint received it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Received {
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// The compared headers ([`Compare::received_headers`]) that were present, in that order.
    pub headers: Vec<(String, String)>,
    /// Body (lossy text; gRPC frames included).
    pub body: String,
    /// Trailers.
    pub trailers: Vec<(String, String)>,
}

/// Everything compared for one scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// One per request step.
    pub responses: Vec<Outcome>,
    /// By cluster: requests received (sorted: arrival order across VMs is not compared).
    pub received: BTreeMap<String, Vec<Received>>,
    /// Compared metrics (Envoy: change during the scenario).
    pub metrics: BTreeMap<String, u64>,
    /// Compared log lines, masked, in order.
    pub logs: Vec<String>,
    /// Number of VMs that ticked, when compared.
    pub ticking_vms: Option<usize>,
}

/// A body as compared: the text when short, else its length and a hash (so reports stay
/// readable).
pub fn body_text(body: &[u8]) -> String {
    if body.len() <= 256 {
        return String::from_utf8_lossy(body).into_owned();
    }
    // FNV-1a.
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("<{} bytes, fnv1a {hash:016x}>", body.len())
}

/// True when a module log message is compared.
pub fn log_selected(c: &Compare, message: &str) -> bool {
    c.logs.iter().any(|p| message.starts_with(p))
        && !c.logs_except.iter().any(|p| message.starts_with(p))
}

/// Applies the masks to a log line.
pub fn mask(c: &Compare, line: &str) -> String {
    let mut out = line.to_owned();
    for m in &c.masks {
        out = match m {
            Mask::Field(name) => mask_field(&out, name, false),
            Mask::Value(name) => mask_field(&out, name, true),
            Mask::Digits(needle) if out.contains(needle) => mask_digits(&out),
            Mask::Digits(_) => out,
        };
    }
    out
}

fn mask_field(line: &str, name: &str, keep_status: bool) -> String {
    let key = format!("{name}=");
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(&key) {
        // Only at the start of a field (start of line, after a space, `|`, `:` or `(`).
        let boundary = i == 0
            || rest[..i]
                .chars()
                .last()
                .is_some_and(|c| matches!(c, ' ' | '|' | ':' | '('));
        let end = i + key.len();
        out.push_str(&rest[..end]);
        rest = &rest[end..];
        if boundary {
            let stop = rest.find([' ', '|']).unwrap_or(rest.len());
            if keep_status && let Some(slash) = rest[..stop].find('/') {
                out.push_str(&rest[..=slash]);
            }
            out.push('*');
            rest = &rest[stop..];
        }
    }
    out.push_str(rest);
    out
}

fn mask_digits(line: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for ch in line.chars() {
        if ch.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(ch);
        }
    }
    out
}

/// A field-by-field account of where the two runners disagree.
///
/// # Errors
/// The report, when they disagree.
pub fn compare(name: &str, sim: &Observed, envoy: &Observed) -> Result<(), String> {
    if sim == envoy {
        return Ok(());
    }
    let mut report = format!("scenario `{name}`: host-sim and Envoy 1.40 disagree\n");
    let n = sim.responses.len().max(envoy.responses.len());
    for i in 0..n {
        let (a, b) = (sim.responses.get(i), envoy.responses.get(i));
        if a != b {
            let _ = writeln!(
                report,
                "  response #{i}:\n    host-sim: {a:?}\n    envoy:    {b:?}"
            );
        }
    }
    if sim.received != envoy.received {
        let _ = writeln!(
            report,
            "  received:\n    host-sim: {:#?}\n    envoy:    {:#?}",
            sim.received, envoy.received
        );
    }
    if sim.metrics != envoy.metrics {
        let _ = writeln!(
            report,
            "  metrics:\n    host-sim: {:?}\n    envoy:    {:?}",
            sim.metrics, envoy.metrics
        );
    }
    if sim.logs != envoy.logs {
        let _ = writeln!(report, "  logs (host-sim | envoy):");
        for i in 0..sim.logs.len().max(envoy.logs.len()) {
            let a = sim.logs.get(i).map_or("-", String::as_str);
            let b = envoy.logs.get(i).map_or("-", String::as_str);
            let mark = if a == b { ' ' } else { '!' };
            let _ = writeln!(report, "   {mark} {a}\n   {mark} {b}");
        }
    }
    if sim.ticking_vms != envoy.ticking_vms {
        let _ = writeln!(
            report,
            "  ticking VMs: host-sim {:?}, envoy {:?}",
            sim.ticking_vms, envoy.ticking_vms
        );
    }
    Err(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_fields_and_digits() {
        let c = Compare {
            masks: vec![Mask::Field("ctx"), Mask::Digits("source.address")],
            ..Compare::default()
        };
        assert_eq!(
            mask(&c, "probe:x:ctx=12 n=3 xctx=4"),
            "probe:x:ctx=* n=3 xctx=4"
        );
        let v = Compare {
            masks: vec![Mask::Value("upstream.address")],
            ..Compare::default()
        };
        assert_eq!(
            mask(&v, "probe:log_property:upstream.address=0/3132 x=1"),
            "probe:log_property:upstream.address=0/* x=1"
        );
        assert_eq!(
            mask(&c, "probe:property:source.address=0/127.0.0.1:5432"),
            "probe:property:source.address=N/N.N.N.N:N"
        );
        assert!(log_selected(&c, "probe:log:x"));
        assert!(!log_selected(&c, "probe:tick:n=1"));
        assert!(!log_selected(&c, "other"));
    }
}
