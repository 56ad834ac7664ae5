//! W3C Baggage: the `baggage` request header, parsed the way the spec tells a receiver to.
//!
//! ```text
//! baggage-string = list-member 0*179( OWS "," OWS list-member )
//! list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
//! property       = key OWS "=" OWS value / key OWS
//! key            = token                         ; RFC 7230
//! value          = *baggage-octet                ; percent-encoded UTF-8
//! baggage-octet  = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
//! ```
//!
//! A request may carry several `baggage` headers; they are one list, joined with `,` (RFC 7230
//! §3.2.2), so every value must be read (Envoy's single-value getter returns only the first).
//! Receivers must handle at least 180 members and 8192 bytes; this parser considers exactly
//! the first [`MAX_MEMBERS`] members that end within the first [`MAX_BYTES`] bytes of the
//! joined list and ignores the rest. A member that does not parse (bad key, bytes outside
//! `baggage-octet`, a bad percent escape, a malformed property) is skipped, never fatal; empty
//! members (`a=1,,b=2`) are not members. Keys are case-sensitive; properties are validated but
//! not interpreted. Everything works on bytes, so non-UTF-8 input is just another malformed
//! member.
//!
//! [`strip`] removes members by key from the *whole* list (no limits, malformed members too,
//! keys compared ignoring ASCII case), which is what edge mode needs: a key that is not seen
//! here must not reach a hop that might parse it differently.

/// Members a receiver considers.
pub const MAX_MEMBERS: usize = 180;
/// Bytes of the joined list a receiver considers.
pub const MAX_BYTES: usize = 8192;

/// One well-formed list-member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// The key (a token).
    pub key: &'a [u8],
    /// The value as sent (percent-encoded).
    pub value: &'a [u8],
}

impl Member<'_> {
    /// The value percent-decoded, as UTF-8; `None` when an escape is malformed or the bytes
    /// are not UTF-8.
    pub fn decoded(&self) -> Option<String> {
        String::from_utf8(percent_decode(self.value)?).ok()
    }
}

/// Why a list item is not a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// The members of the list made of `values` (each a `baggage` header value), in order, within
/// the limits; malformed items are `Err`.
pub fn members<'a, I>(values: I) -> Members<'a, I::IntoIter>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    Members {
        values: values.into_iter(),
        current: &[],
        offset: 0,
        count: 0,
        started: false,
        done: false,
    }
}

/// Iterator returned by [`members`].
#[derive(Debug)]
pub struct Members<'a, I> {
    values: I,
    /// What is left of the header value being read.
    current: &'a [u8],
    /// Bytes of the joined list consumed so far (separators included).
    offset: usize,
    /// Non-empty items seen.
    count: usize,
    started: bool,
    done: bool,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Iterator for Members<'a, I> {
    type Item = Result<Member<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let item = match next_item(&mut self.current) {
                Some(item) => item,
                None => {
                    // Next header value; joining two values costs one `,`.
                    let Some(v) = self.values.next() else {
                        self.done = true;
                        return None;
                    };
                    if self.started {
                        self.offset = self.offset.saturating_add(1);
                    }
                    self.started = true;
                    self.current = v;
                    continue;
                }
            };
            let end = self.offset.saturating_add(item.len);
            // The separator after the item (if any) is counted with the next item.
            self.offset = end.saturating_add(usize::from(item.comma));
            if end > MAX_BYTES {
                self.done = true;
                return None;
            }
            let text = trim_ows(item.text);
            if text.is_empty() {
                continue;
            }
            self.count = self.count.saturating_add(1);
            if self.count > MAX_MEMBERS {
                self.done = true;
                return None;
            }
            return Some(parse_member(text));
        }
    }
}

struct Item<'a> {
    text: &'a [u8],
    len: usize,
    comma: bool,
}

/// Splits the next `,`-separated item off `rest`.
fn next_item<'a>(rest: &mut &'a [u8]) -> Option<Item<'a>> {
    if rest.is_empty() {
        return None;
    }
    let s: &'a [u8] = rest;
    match s.iter().position(|b| *b == b',') {
        Some(i) => {
            let text = s.get(..i).unwrap_or_default();
            *rest = s.get(i.saturating_add(1)..).unwrap_or_default();
            // A trailing comma leaves an empty rest: still one (empty) item after it, which
            // is skipped anyway.
            Some(Item {
                text,
                len: i,
                comma: true,
            })
        }
        None => {
            *rest = &[];
            Some(Item {
                text: s,
                len: s.len(),
                comma: false,
            })
        }
    }
}

fn parse_member(text: &[u8]) -> Result<Member<'_>, Malformed> {
    let mut parts = text.split(|b| *b == b';');
    let head = parts.next().ok_or(Malformed)?;
    let eq = head.iter().position(|b| *b == b'=').ok_or(Malformed)?;
    let key = trim_ows(head.get(..eq).ok_or(Malformed)?);
    let value = trim_ows(head.get(eq.saturating_add(1)..).ok_or(Malformed)?);
    if !is_token(key) || !value.iter().all(|b| is_baggage_octet(*b)) {
        return Err(Malformed);
    }
    for property in parts {
        let property = trim_ows(property);
        let ok = match property.iter().position(|b| *b == b'=') {
            Some(i) => {
                let k = trim_ows(property.get(..i).unwrap_or_default());
                let v = trim_ows(property.get(i.saturating_add(1)..).unwrap_or_default());
                is_token(k) && v.iter().all(|b| is_baggage_octet(*b))
            }
            None => is_token(property),
        };
        if !ok {
            return Err(Malformed);
        }
    }
    Ok(Member { key, value })
}

/// The value of the first well-formed member named `key` (case-sensitive) within the limits,
/// percent-decoded: `None` when there is none, `Some(None)` when its value does not decode to
/// UTF-8.
pub fn value_of<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    key: &str,
) -> Option<Option<String>> {
    members(values)
        .filter_map(Result::ok)
        .find(|m| m.key == key.as_bytes())
        .map(|m| m.decoded())
}

/// The key of an item, for [`strip`] and [`mentions`]: the text before the first `=` or `;`,
/// OWS trimmed, whether or not the item is well-formed.
fn item_key(item: &[u8]) -> &[u8] {
    let end = item
        .iter()
        .position(|b| *b == b'=' || *b == b';')
        .unwrap_or(item.len());
    trim_ows(item.get(..end).unwrap_or_default())
}

/// The non-empty, OWS-trimmed items of a comma-separated list made of `values` (all of them:
/// no limits), for [`strip`] and [`mentions`] here and in `trace_context`.
pub(super) fn all_items<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> impl Iterator<Item = &'a [u8]> {
    values
        .into_iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .map(trim_ows)
        .filter(|i| !i.is_empty())
}

/// True when any item of the whole list (no limits, malformed ones too) has one of `keys`
/// (ASCII case ignored).
pub fn mentions<'a>(values: impl IntoIterator<Item = &'a [u8]>, keys: &[&str]) -> bool {
    mentions_by(values, keys, item_key)
}

/// The list without the items whose key is one of `keys` (ASCII case ignored), over the whole
/// list (no limits, malformed items included), joined with `,`. `None` when nothing would be
/// removed; `Some(empty)` when nothing is left (remove the header).
pub fn strip<'a>(
    values: impl IntoIterator<Item = &'a [u8]> + Clone,
    keys: &[&str],
) -> Option<Vec<u8>> {
    strip_by(values, keys, item_key)
}

fn named(item: &[u8], keys: &[&str], key_of: fn(&[u8]) -> &[u8]) -> bool {
    let k = key_of(item);
    keys.iter()
        .any(|key| k.eq_ignore_ascii_case(key.as_bytes()))
}

/// [`mentions`] for a list whose items are keyed by `key_of`.
pub(super) fn mentions_by<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    keys: &[&str],
    key_of: fn(&[u8]) -> &[u8],
) -> bool {
    all_items(values).any(|i| named(i, keys, key_of))
}

/// [`strip`] for a list whose items are keyed by `key_of`.
pub(super) fn strip_by<'a>(
    values: impl IntoIterator<Item = &'a [u8]> + Clone,
    keys: &[&str],
    key_of: fn(&[u8]) -> &[u8],
) -> Option<Vec<u8>> {
    if !mentions_by(values.clone(), keys, key_of) {
        return None;
    }
    let mut out = Vec::new();
    for item in all_items(values).filter(|i| !named(i, keys, key_of)) {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    Some(out)
}

/// `%XX` decoding; `None` on a `%` not followed by two hex digits.
pub fn percent_decode(v: &[u8]) -> Option<Vec<u8>> {
    if !v.contains(&b'%') {
        return Some(v.to_vec());
    }
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(*bytes.next()?)?;
            let lo = hex_value(*bytes.next()?)?;
            out.push(hi.wrapping_shl(4) | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// A member `key=value` with the value percent-encoded wherever it must be (bytes outside
/// `baggage-octet`, and `%` itself). `key` must be a token.
pub fn encode_member(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len().saturating_add(value.len()).saturating_add(1));
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    for &b in value {
        if is_baggage_octet(b) && b != b'%' {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
            out.push(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(b.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

/// `baggage-octet`: printable US-ASCII except `"`, `,`, `;` and `\`.
pub const fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// An RFC 7230 token: one or more `tchar`.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| is_tchar(*b))
}

const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Trims optional whitespace (SP and HTAB) at both ends.
pub fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i.saturating_add(1));
    s.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests;
