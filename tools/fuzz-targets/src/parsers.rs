//! Parsers of what clients, upstreams, the RLS and the registry send: each target checks that
//! the parser does not panic and that what it returns keeps its documented properties
//! (round trips, limits, stripped keys really gone, an independent reference agrees).

use arbitrary::{Arbitrary, Unstructured};
use meshguard_policy::rate_limit::{descriptor, engine, rls};
use meshguard_policy::sandbox::{baggage, cidr, key, registry, table, trace_context};
use prost::Message;

/// Header values of a list header: the input split at `\n` (a repeated header).
fn values(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == b'\n').collect()
}

/// The items of a comma-separated list, OWS-trimmed, empty ones dropped.
fn items<'a>(values: &[&'a [u8]]) -> Vec<&'a [u8]> {
    values
        .iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .map(baggage::trim_ows)
        .filter(|i| !i.is_empty())
        .collect()
}

/// W3C `baggage`: members within the limits, `value_of`, `strip`/`mentions` (edge mode), and
/// the encode → parse → decode round trip of a member value.
pub fn baggage(data: &[u8]) {
    let vals = values(data);
    let keys: &[&str] = &["sandbox", "Sandbox-Key"];
    let mut n = 0usize;
    for m in baggage::members(vals.iter().copied()) {
        n += 1;
        assert!(n <= baggage::MAX_MEMBERS, "more than MAX_MEMBERS items");
        if let Ok(m) = m {
            assert!(
                baggage::is_token(m.key),
                "member key {:?} is not a token",
                m.key
            );
            if let Some(d) = m.decoded() {
                assert_eq!(baggage::percent_decode(m.value), Some(d.into_bytes()));
            }
        }
    }
    for k in keys {
        if baggage::value_of(vals.iter().copied(), k).is_some() {
            assert!(
                baggage::mentions(vals.iter().copied(), &[k]),
                "{k} has a value but is not mentioned"
            );
        }
    }
    let mentioned = baggage::mentions(vals.iter().copied(), keys);
    match baggage::strip(vals.iter().copied(), keys) {
        None => assert!(!mentioned, "mentioned but nothing stripped"),
        Some(out) => {
            assert!(mentioned, "stripped without a mention");
            assert!(
                !baggage::mentions([out.as_slice()], keys),
                "a stripped key is still there: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(baggage::strip([out.as_slice()], keys).is_none());
            for k in keys {
                assert!(baggage::value_of([out.as_slice()], k).is_none());
            }
            let kept = items(&[out.as_slice()]);
            let before = items(&vals);
            assert!(kept.len() < before.len(), "strip removed nothing");
            assert!(
                kept.iter().all(|i| before.contains(i)),
                "strip invented an item"
            );
        }
    }
    // Any bytes survive as a member value.
    let member = baggage::encode_member("sandbox", data);
    if member.len() <= baggage::MAX_BYTES {
        let got = baggage::members([member.as_slice()])
            .next()
            .expect("one item")
            .expect("an encoded member is well-formed");
        assert_eq!(got.key, b"sandbox");
        assert_eq!(baggage::percent_decode(got.value).as_deref(), Some(data));
        let utf8 = core::str::from_utf8(data).ok().map(str::to_owned);
        if utf8.is_some() {
            assert_eq!(
                baggage::value_of([member.as_slice()], "sandbox"),
                Some(utf8)
            );
        }
    }
}

/// W3C `tracestate` (and `traceparent`): `value_of` returns only valid values, `strip`
/// removes every member named like a key.
pub fn tracestate(data: &[u8]) {
    let vals = values(data);
    let _ = trace_context::traceparent_valid(&vals);
    if let Some((first, rest)) = vals.split_first() {
        let _ = trace_context::traceparent_valid(&[first]);
        let _ = trace_context::traceparent_valid(rest);
    }
    let keys: &[&str] = &["sandbox", "meshguard@sandbox"];
    for k in keys {
        if let Some(v) = trace_context::value_of(vals.iter().copied(), k) {
            assert!(trace_context::is_value(v), "invalid value {v:?} for {k}");
            assert!(trace_context::is_key(k.as_bytes()) || !trace_context::is_key(k.as_bytes()));
            assert!(trace_context::mentions(vals.iter().copied(), &[k]));
        }
    }
    let mentioned = trace_context::mentions(vals.iter().copied(), keys);
    match trace_context::strip(vals.iter().copied(), keys) {
        None => assert!(!mentioned),
        Some(out) => {
            assert!(mentioned);
            assert!(
                !trace_context::mentions([out.as_slice()], keys),
                "a stripped key is still there: {:?}",
                String::from_utf8_lossy(&out)
            );
            for k in keys {
                assert!(trace_context::value_of([out.as_slice()], k).is_none());
            }
        }
    }
}

/// Routing keys: the charset and length rules, and signed keys (`<key>.<hmac>`): a key signed
/// with the secret is accepted, anything accepted is exactly a signed key.
pub fn sandbox_key(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (secret, candidate) = crate::split2(rest);
    let max = 1 + usize::from(len) % key::MAX_MAX_LENGTH;
    let plain = key::KeyRules::new(max, None);
    match plain.plain(candidate) {
        Ok(k) => {
            assert!(!k.is_empty() && k.len() <= max);
            assert!(k.bytes().all(key::is_key_byte));
        }
        Err(_) => assert!(
            candidate.is_empty()
                || candidate.len() > max
                || !candidate.iter().all(|b| key::is_key_byte(*b))
        ),
    }
    assert_eq!(
        plain.check(candidate),
        plain.plain(baggage::trim_ows(candidate))
    );
    let secret = if secret.len() >= key::MIN_SECRET_LEN {
        secret.to_vec()
    } else {
        b"0123456789abcdef-fuzz".to_vec()
    };
    let signed = key::KeyRules::new(max, Some(secret.clone()));
    assert!(signed.signed());
    if let Ok(k) = signed.check(candidate) {
        let expect = key::sign(&secret, k);
        assert!(
            baggage::trim_ows(candidate).eq_ignore_ascii_case(expect.as_bytes()),
            "accepted {candidate:?} as {k}, but its signature is {expect}"
        );
    }
    if let Ok(k) = plain.plain(candidate) {
        let s = key::sign(&secret, k);
        assert_eq!(signed.check(s.as_bytes()), Ok(k));
        let upper = format!("{k}.{}", s[k.len() + 1..].to_ascii_uppercase());
        assert_eq!(
            signed.check(upper.as_bytes()),
            Ok(k),
            "hex digits in either case"
        );
        assert!(
            signed.check(k.as_bytes()).is_err(),
            "an unsigned key passed"
        );
    }
}

/// The registry document: validated entries, bounded size, and the shared-data publication
/// of the table round-trips.
pub fn registry(data: &[u8]) {
    let rules = key::KeyRules::default();
    let Ok(doc) = registry::parse(data, &rules, 100) else {
        return;
    };
    assert!(doc.table.len() <= 100);
    if let Some(v) = &doc.version {
        assert!(!v.is_empty() && v.len() <= registry::MAX_VERSION_LEN);
    }
    for e in doc.table.entries() {
        assert!(rules.plain(e.key.as_bytes()).is_ok(), "bad key {:?}", e.key);
        assert!(table::check_name(&e.service).is_ok());
        assert_eq!(doc.table.get(&e.key, &e.service), Some(&e.target));
    }
    let published = table::Published {
        generation: 7,
        etag: Some("\"v1\"".into()),
        version: doc.version.clone(),
        table: doc.table.clone(),
    };
    let back = table::Published::decode(&published.encode(), |k| rules.plain(k.as_bytes()).is_ok());
    assert_eq!(
        back.as_ref(),
        Some(&published),
        "the published table does not round-trip"
    );
}

/// CIDR ranges (edge mode's trusted sources) and `source.address`: `contains` agrees with a
/// reference computed on 128-bit (IPv4-mapped) addresses.
pub fn cidr(data: &[u8]) {
    use core::net::IpAddr;
    let (range, addr) = crate::split2(data);
    if let Ok(a) = core::str::from_utf8(addr) {
        let got = cidr::source_ip(addr);
        if let Ok(ip) = a.parse::<IpAddr>() {
            assert_eq!(got, Some(ip));
        }
    }
    let Ok(text) = core::str::from_utf8(range) else {
        return;
    };
    let Ok(c) = cidr::Cidr::parse(text) else {
        return;
    };
    // Reference: the written network and prefix, in the IPv4-mapped IPv6 space.
    let (net_text, prefix_text) = match text.split_once('/') {
        Some((n, p)) => (n.trim(), Some(p.trim())),
        None => (text.trim(), None),
    };
    let net: IpAddr = net_text.parse().expect("Cidr::parse accepted it");
    let bits: u32 = if net.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = prefix_text.map_or(bits, |p| p.parse().expect("accepted prefix"));
    let to128 = |ip: IpAddr| match ip {
        IpAddr::V4(v) => u128::from(v.to_ipv6_mapped()),
        IpAddr::V6(v) => u128::from(v),
    };
    let prefix128 = if net.is_ipv4() { prefix + 96 } else { prefix };
    let mask = u128::MAX.checked_shl(128 - prefix128).unwrap_or(0);
    // An IPv4-mapped network written with a prefix under 96 spans more than IPv4: no
    // reference for what that should mean.
    if net.is_ipv6() && net.to_canonical().is_ipv4() && prefix128 < 96 {
        return;
    }
    let mut samples: Vec<IpAddr> = vec![net, net.to_canonical()];
    for x in addr.chunks(16) {
        let mut b = [0u8; 16];
        b[..x.len()].copy_from_slice(x);
        let n = u128::from_be_bytes(b);
        samples.push(IpAddr::V6(n.into()));
        samples.push(IpAddr::V4(u32::try_from(n >> 96).unwrap_or(0).into()));
        // Addresses near the network: flip one bit.
        let near = to128(net) ^ (1u128 << (u32::from(b[0]) % 128));
        samples.push(IpAddr::V6(near.into()));
        samples.push(IpAddr::V6(near.into()).to_canonical());
    }
    for ip in samples {
        // Families: a (non-mapped) IPv6 range never contains an IPv4 client, as Envoy's
        // CidrRange; the reference would say otherwise for ::/0.
        if net.to_canonical().is_ipv6() && ip.to_canonical().is_ipv4() {
            continue;
        }
        let want = (to128(ip) & mask) == (to128(net) & mask);
        assert_eq!(
            c.contains(ip),
            want,
            "{text} contains {ip}? reference says {want}"
        );
    }
}

/// Rate-limit descriptors against random requests: `client_address` with `x-forwarded-for`
/// and trusted hops, each rule's entries.
#[derive(Debug, Arbitrary)]
struct DescriptorInput {
    entries: Vec<u8>,
    headers: Vec<(u8, Vec<u8>)>,
    source: Option<Vec<u8>>,
    trusted_hops: u8,
}

const HEADER_NAMES: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    "x-forwarded-for",
    "x-api-key",
    "X-Forwarded-For",
    "x-plan",
    "baggage",
];

pub fn descriptor(data: &[u8]) {
    let Ok(input) = DescriptorInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let headers: Vec<(Vec<u8>, Vec<u8>)> = input
        .headers
        .iter()
        .map(|(n, v)| {
            let name = HEADER_NAMES[usize::from(*n) % HEADER_NAMES.len()];
            (name.as_bytes().to_vec(), v.clone())
        })
        .collect();
    let req = descriptor::Request {
        headers: &headers,
        source_address: input.source.as_deref(),
    };
    // client_address against a reference.
    let hops = u32::from(input.trusted_hops % 8);
    let got = req.client_address(hops);
    if hops > 0 {
        let list: Vec<&[u8]> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(b"x-forwarded-for"))
            .flat_map(|(_, v)| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|h| !h.is_empty())
            .collect();
        let want = list
            .len()
            .checked_sub(hops as usize)
            .map(|i| list[i].to_vec());
        assert_eq!(got, want, "x-forwarded-for hop {hops}");
        if let Some(a) = &got {
            assert!(!a.is_empty() && !a.contains(&b','));
        }
    }
    let Ok(entries) = serde_json::from_slice::<Vec<descriptor::Entry>>(&input.entries) else {
        return;
    };
    let one: Vec<Option<(String, Vec<u8>)>> = entries.iter().map(|e| e.evaluate(&req)).collect();
    match descriptor::evaluate(&entries, &req) {
        Some(list) => {
            assert_eq!(list.len(), entries.len());
            assert!(one.iter().all(Option::is_some));
            assert_eq!(
                engine::hash_values(&list),
                engine::hash_values(&list.clone())
            );
            for ((k, v), e) in list.iter().zip(&entries) {
                assert!(
                    !k.is_empty()
                        || matches!(
                            e,
                            descriptor::Entry::Header { .. } | descriptor::Entry::GenericKey { .. }
                        )
                );
                if let descriptor::Entry::Path(_) = e {
                    assert!(
                        !v.contains(&b'?') && !v.contains(&b'#'),
                        "query kept in {v:?}"
                    );
                }
            }
            // The RLS request carries them.
            let msg = rls::request("fuzz", &list);
            let back = rls::RateLimitRequest::decode(msg.as_slice()).expect("own encoding");
            assert_eq!(back.descriptors.len(), 1);
            assert_eq!(back.descriptors[0].entries.len(), list.len());
        }
        None => assert!(one.iter().any(Option::is_none)),
    }
}

/// RLS answers (`RateLimitResponse` bytes from the network): a decode never panics, headers
/// are bounded and lower-cased, and re-encoding a decoded message means the same.
pub fn rls_answer(data: &[u8]) {
    let a = rls::answer(data);
    let check = |h: &[(String, String)]| {
        assert!(h.len() <= 32, "{} headers", h.len());
        for (k, _) in h {
            assert!(!k.is_empty());
            assert_eq!(k, &k.to_ascii_lowercase());
        }
    };
    match &a {
        rls::Answer::Ok {
            request_headers,
            response_headers,
        } => {
            check(request_headers);
            check(response_headers);
        }
        rls::Answer::OverLimit {
            response_headers,
            body,
            ..
        } => {
            check(response_headers);
            assert!(body.as_ref().is_none_or(|b| !b.is_empty()));
        }
        rls::Answer::Invalid => {}
    }
    if let Ok(msg) = rls::RateLimitResponse::decode(data) {
        assert_eq!(
            rls::answer(&msg.encode_to_vec()),
            a,
            "re-encoded answer differs"
        );
    }
}

/// Config durations: a parsed duration prints (Rust's `Debug`, e.g. `1.5s`) as text that
/// parses back to the same value; JSON strings go through the same parser.
pub fn duration(data: &[u8]) {
    use meshguard_policy::{ConfigDuration, duration::parse};
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
    if let Ok(d) = parsed {
        assert!(!text.trim().starts_with('-'));
        let printed = format!("{d:?}");
        assert_eq!(parse(&printed), Ok(d), "{text:?} -> {printed:?}");
    }
    let json = serde_json::to_string(text).expect("a string");
    let via_serde = serde_json::from_str::<ConfigDuration>(&json).map(ConfigDuration::get);
    assert_eq!(via_serde.ok(), parsed.ok());
}
