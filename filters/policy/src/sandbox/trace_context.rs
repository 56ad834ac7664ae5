//! W3C Trace Context: `traceparent` validation and `tracestate` members.
//!
//! The spec is strict about order: *if `traceparent` fails to parse, `tracestate` must not be
//! parsed*. So a routing key carried only in `tracestate` is used only when the request also
//! has exactly one valid `traceparent`:
//!
//! ```text
//! traceparent = version "-" trace-id "-" parent-id "-" trace-flags   ; lower-case hex
//!               2 hex (not ff)  32 hex (not all 0)  16 hex (not all 0)  2 hex
//! ```
//! Version `00` is exactly 55 characters; a later version may be longer if character 55 is a
//! `-` (forward compatibility).
//!
//! `tracestate` is a list of up to [`MAX_MEMBERS`] `key=value` members over one or more
//! headers (joined with `,`, empty members allowed): keys `[a-z0-9][a-z0-9_\-*/]{0,255}` or
//! `tenant@system`, values up to 256 printable ASCII characters without `,` or `=` and not
//! ending in a space. Values are not percent-encoded. Malformed members are skipped; members
//! after the 32nd are ignored.

use super::baggage::trim_ows;

/// Members of `tracestate` considered.
pub const MAX_MEMBERS: usize = 32;

/// True when `values` (every `traceparent` header) is exactly one valid `traceparent`.
pub fn traceparent_valid(values: &[&[u8]]) -> bool {
    match values {
        [one] => is_traceparent(trim_ows(one)),
        _ => false,
    }
}

fn is_traceparent(v: &[u8]) -> bool {
    let field = |from: usize, to: usize| v.get(from..to).unwrap_or_default();
    let lower_hex = |s: &[u8], len: usize| {
        s.len() == len && s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let version = field(0, 2);
    if !lower_hex(version, 2) || version == b"ff" || v.len() < 55 {
        return false;
    }
    if version == b"00" && v.len() != 55 {
        return false;
    }
    if v.len() > 55 && v.get(55) != Some(&b'-') {
        return false;
    }
    let trace_id = field(3, 35);
    let parent_id = field(36, 52);
    v.get(2) == Some(&b'-')
        && v.get(35) == Some(&b'-')
        && v.get(52) == Some(&b'-')
        && lower_hex(trace_id, 32)
        && trace_id.iter().any(|b| *b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.iter().any(|b| *b != b'0')
        && lower_hex(field(53, 55), 2)
}

/// A valid `tracestate` key.
pub fn is_key(k: &[u8]) -> bool {
    let rest_ok = |s: &[u8]| {
        s.iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match k.iter().position(|b| *b == b'@') {
        None => {
            matches!(k.first(), Some(b'a'..=b'z' | b'0'..=b'9')) && k.len() <= 256 && rest_ok(k)
        }
        Some(at) => {
            let tenant = k.get(..at).unwrap_or_default();
            let system = k.get(at.saturating_add(1)..).unwrap_or_default();
            matches!(tenant.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
                && tenant.len() <= 241
                && rest_ok(tenant)
                && matches!(system.first(), Some(b'a'..=b'z'))
                && system.len() <= 14
                && rest_ok(system)
        }
    }
}

/// A valid `tracestate` value.
pub fn is_value(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.iter()
            .all(|b| matches!(b, 0x20..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E))
        && v.last() != Some(&b' ')
}

fn items<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    super::baggage::all_items(values)
}

/// The value of the first well-formed member named `key` among the first [`MAX_MEMBERS`].
/// The caller checks `traceparent` first ([`traceparent_valid`]).
pub fn value_of<'a>(values: impl IntoIterator<Item = &'a [u8]>, key: &str) -> Option<&'a [u8]> {
    items(values).take(MAX_MEMBERS).find_map(|item| {
        let eq = item.iter().position(|b| *b == b'=')?;
        let k = item.get(..eq)?;
        let v = item.get(eq.saturating_add(1)..)?;
        (k == key.as_bytes() && is_key(k) && is_value(v)).then_some(v)
    })
}

fn item_key(item: &[u8]) -> &[u8] {
    let end = item.iter().position(|b| *b == b'=').unwrap_or(item.len());
    trim_ows(item.get(..end).unwrap_or_default())
}

/// True when any member of the whole list (malformed too) is named `key` (ASCII case
/// ignored).
pub fn mentions<'a>(values: impl IntoIterator<Item = &'a [u8]>, keys: &[&str]) -> bool {
    super::baggage::mentions_by(values, keys, item_key)
}

/// The list without the members named one of `keys` (see [`super::baggage::strip`]).
pub fn strip<'a>(
    values: impl IntoIterator<Item = &'a [u8]> + Clone,
    keys: &[&str],
) -> Option<Vec<u8>> {
    super::baggage::strip_by(values, keys, item_key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::arithmetic_side_effects)] // tests

    use super::*;
    use crate::sandbox::test_rng::Rng;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_rules() {
        assert!(traceparent_valid(&[TP]));
        assert!(traceparent_valid(&[
            b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 "
        ]));
        assert!(!traceparent_valid(&[]));
        assert!(!traceparent_valid(&[TP, TP]), "two traceparent headers");
        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..], // upper case
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",      // zero trace id
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      // zero parent id
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version ff
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",    // v00 too long
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",         // short
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"\xff\xfe",
        ] {
            assert!(
                !traceparent_valid(&[bad]),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may carry more fields after a '-'.
        assert!(traceparent_valid(&[
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"
        ]));
        assert!(!traceparent_valid(&[
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"
        ]));
    }

    #[test]
    fn tracestate_members() {
        let ts: [&[u8]; 2] = [
            b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7",
            b" ,sandbox=dev-1,sandbox=dev-2",
        ];
        assert_eq!(value_of(ts, "sandbox"), Some(&b"dev-1"[..]));
        assert_eq!(value_of(ts, "rojo"), Some(&b"00f067aa0ba902b7"[..]));
        assert_eq!(
            value_of([&b"sandbox=a=b,sandbox=ok"[..]], "sandbox"),
            Some(&b"ok"[..])
        );
        assert_eq!(value_of([&b"sandbox=,x=1"[..]], "sandbox"), None);
        assert_eq!(value_of([&b"sandbox=a\x7f"[..]], "sandbox"), None);
        assert!(is_key(b"tenant@vendor") && !is_key(b"Upper") && !is_key(b"a@B"));
        // Only the first 32 members count.
        let mut list = String::new();
        for i in 0..32 {
            list.push_str(&format!("k{i}=v,"));
        }
        list.push_str("sandbox=late");
        assert_eq!(value_of([list.as_bytes()], "sandbox"), None);
    }

    #[test]
    fn strip_members() {
        let ts: [&[u8]; 2] = [b"a=1,Sandbox=x", b"sandbox=y, b=2"];
        assert_eq!(strip(ts, &["sandbox"]).unwrap(), b"a=1,b=2".to_vec());
        assert_eq!(strip([&b"a=1"[..]], &["sandbox"]), None);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng::new(3);
        for _ in 0..3000 {
            let v = if rng.chance(50) {
                {
                    let n = rng.below(80);
                    rng.bytes(n)
                }
            } else {
                let mut v = TP.to_vec();
                let i = rng.below(v.len());
                v[i] = rng.pick(b"0af-xF\xff ", 1)[0];
                v
            };
            let _ = traceparent_valid(&[&v]);
            let _ = value_of([v.as_slice()], "a");
            if let Some(s) = strip([v.as_slice()], &["a"]) {
                assert!(!mentions([s.as_slice()], &["a"]));
            }
        }
    }
}
