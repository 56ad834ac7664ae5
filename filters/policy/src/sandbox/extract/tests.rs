//! Key extraction tests: every source, order, validity, edge stripping.

#![allow(clippy::indexing_slicing)] // tests

use super::*;
use crate::sandbox::config::RawConfig;
use crate::sandbox::key::sign;
#[cfg(target_arch = "wasm32")]
use crate::test;

fn config(json: &str) -> Config {
    let raw: RawConfig = serde_json::from_str(json).unwrap();
    Config::try_from(raw).unwrap()
}

fn headers(pairs: &[(&str, &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
        .collect()
}

fn key_of(c: &Config, pairs: &[(&str, &[u8])]) -> Option<Result<String, KeyError>> {
    inspect(c, &headers(pairs)).key
}

const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn default_source_is_the_sandbox_baggage_member() {
    let c = config("{}");
    assert_eq!(
        key_of(
            &c,
            &[
                ("baggage", b"user=a"),
                ("baggage", b" sandbox = dev%2D1 ;p")
            ]
        ),
        Some(Ok("dev-1".into()))
    );
    let h = headers(&[(":authority", b"svc"), ("baggage", b"user=a")]);
    let none = inspect(&c, &h);
    assert_eq!((none.key, none.key_material), (None, false));
    assert_eq!(none.authority, Some(&b"svc"[..]));
    // A malformed member is key material (edge mode strips it) but not a key.
    let h = headers(&[("baggage", b"sandbox=dev 1")]);
    let bad = inspect(&c, &h);
    assert_eq!((bad.key, bad.key_material), (None, true));
}

#[test]
fn every_source_kind() {
    let c = config(
        r#"{"key_sources": [{"header": "x-sandbox"}, {"tracestate": "sb"}, {"ot_baggage": "sandbox"},
                            {"uberctx": "sandbox"}, {"baggage": "sandbox"}]}"#,
    );
    assert_eq!(
        key_of(&c, &[("x-sandbox", b" h-1 ")]),
        Some(Ok("h-1".into()))
    );
    assert_eq!(
        key_of(&c, &[("traceparent", TP), ("tracestate", b"a=1,sb=t-1")]),
        Some(Ok("t-1".into()))
    );
    // tracestate without a valid traceparent is not parsed (but is key material).
    let h = headers(&[("tracestate", b"sb=t-1")]);
    let i = inspect(&c, &h);
    assert_eq!((i.key, i.key_material), (None, true));
    let h = headers(&[("traceparent", b"00-bad"), ("tracestate", b"sb=t-1")]);
    let i = inspect(&c, &h);
    assert_eq!(i.key, None);
    assert_eq!(
        key_of(&c, &[("ot-baggage-sandbox", b"o%2D1")]),
        Some(Ok("o-1".into()))
    );
    assert_eq!(
        key_of(&c, &[("uberctx-sandbox", b"u-1")]),
        Some(Ok("u-1".into()))
    );
    assert_eq!(
        key_of(&c, &[("baggage", b"sandbox=b-1")]),
        Some(Ok("b-1".into()))
    );
    // Order: the first configured source wins.
    assert_eq!(
        key_of(
            &c,
            &[
                ("baggage", b"sandbox=b-1"),
                ("uberctx-sandbox", b"u-1"),
                ("x-sandbox", b"h-1")
            ]
        ),
        Some(Ok("h-1".into()))
    );
}

#[test]
fn first_valid_key_wins_else_the_first_error() {
    let c = config(r#"{"key_sources": [{"header": "x-sandbox"}, {"baggage": "sandbox"}]}"#);
    assert_eq!(
        key_of(
            &c,
            &[("x-sandbox", b"not valid!"), ("baggage", b"sandbox=ok-1")]
        ),
        Some(Ok("ok-1".into()))
    );
    assert_eq!(
        key_of(
            &c,
            &[("x-sandbox", b"not valid!"), ("baggage", &[b'a'; 10][..])]
        ),
        Some(Err(KeyError::BadCharacter))
    );
    let long = format!("sandbox={}", "a".repeat(65));
    assert_eq!(
        key_of(&c, &[("baggage", long.as_bytes())]),
        Some(Err(KeyError::TooLong))
    );
    assert_eq!(
        key_of(&c, &[("baggage", b"sandbox=%C3%A9")]),
        Some(Err(KeyError::BadCharacter))
    );
    assert_eq!(
        key_of(&c, &[("baggage", b"sandbox=%ff")]),
        Some(Err(KeyError::BadCharacter))
    );
    assert_eq!(
        key_of(&c, &[("x-sandbox", b"\xff\xfe")]),
        Some(Err(KeyError::BadCharacter))
    );
}

#[test]
fn signed_keys_are_checked() {
    let secret = "a-secret-of-at-least-16-bytes";
    let c = config(&format!(r#"{{"key": {{"hmac_secret": "{secret}"}}}}"#));
    let good = format!("sandbox={}", sign(secret.as_bytes(), "dev-1"));
    assert_eq!(
        key_of(&c, &[("baggage", good.as_bytes())]),
        Some(Ok("dev-1".into()))
    );
    assert_eq!(
        key_of(&c, &[("baggage", b"sandbox=dev-1")]),
        Some(Err(KeyError::Unsigned))
    );
    let forged = format!("sandbox=dev-1.{}", "0".repeat(64));
    assert_eq!(
        key_of(&c, &[("baggage", forged.as_bytes())]),
        Some(Err(KeyError::BadSignature))
    );
}

#[test]
fn routing_headers_and_trust() {
    let c = config(r#"{"edge": {"trusted_header": {"name": "x-trusted", "value": "yes"}}}"#);
    let h = headers(&[
        ("x-meshguard-sandbox-cluster", b"admin"),
        ("x-envoy-original-dst-host", b"10.0.0.1:22"),
        ("x-trusted", b" yes "),
    ]);
    let i = inspect(&c, &h);
    assert!(i.routing_header && i.original_dst_header && i.trusted_header);
    assert!(!inspect(&c, &headers(&[("x-trusted", b"no")])).trusted_header);
}

#[test]
fn strip_ops_remove_every_key_and_keep_other_baggage() {
    let c = config(
        r#"{"key_sources": [{"baggage": "sandbox"}, {"tracestate": "sandbox"}, {"header": "x-sandbox"},
                            {"uberctx": "sandbox"}]}"#,
    );
    let h = headers(&[
        ("baggage", b"user=a,sandbox=dev-1"),
        ("baggage", b"SANDBOX=x;p=1"),
        ("tracestate", b"sandbox=dev-1"),
        ("x-sandbox", b"dev-1"),
        ("uberctx-sandbox", b"dev-1"),
    ]);
    assert_eq!(
        strip_ops(&c, &h),
        vec![
            HeaderOp::Replace("baggage".into(), b"user=a".to_vec()),
            HeaderOp::Remove("tracestate".into()),
            HeaderOp::Remove("x-sandbox".into()),
            HeaderOp::Remove("uberctx-sandbox".into()),
        ]
    );
    assert!(strip_ops(&c, &headers(&[("baggage", b"user=a")])).is_empty());
}

#[test]
fn authority_hosts() {
    assert_eq!(authority_host(b"Reviews:9080").as_deref(), Some("reviews"));
    assert_eq!(authority_host(b"reviews").as_deref(), Some("reviews"));
    assert_eq!(authority_host(b"[::1]:80").as_deref(), Some("[::1]"));
    assert_eq!(authority_host(b"a:b").as_deref(), Some("a:b"));
    assert_eq!(authority_host(b""), None);
    assert_eq!(authority_host(b"\xff"), None);
}

/// What a filter sees through [`HeaderReads`]: list headers joined with `,` (what Envoy's
/// `request.headers.<name>` property gives), other headers' first value; `with_key` only when
/// a source header is present.
fn through_reads(reads: &HeaderReads, all: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let read = |list: &[HeaderRead], out: &mut Vec<(Vec<u8>, Vec<u8>)>| {
        for r in list {
            let mut values = all
                .iter()
                .filter(|(k, _)| k == r.name.as_bytes())
                .map(|(_, v)| v.clone());
            let value = if r.all_values {
                let joined: Vec<Vec<u8>> = values.collect();
                (!joined.is_empty()).then(|| joined.join(&b","[..]))
            } else {
                values.next()
            };
            if let Some(v) = value {
                out.push((r.name.as_bytes().to_vec(), v));
            }
        }
    };
    let mut out = Vec::new();
    read(&reads.sources, &mut out);
    let keyed = !out.is_empty();
    read(&reads.guards, &mut out);
    if keyed {
        read(&reads.with_key, &mut out);
    }
    out
}

#[test]
fn header_reads_cover_what_inspection_needs() {
    let c = config(
        r#"{"key_sources": [{"header": "x-sandbox"}, {"tracestate": "sb"}, {"ot_baggage": "sandbox"},
                            {"baggage": "sandbox"}],
            "service_from": "authority",
            "edge": {"trusted_header": {"name": "x-edge", "value": "yes"}}}"#,
    );
    let reads = HeaderReads::new(&c);
    let names = |l: &[HeaderRead]| l.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&reads.sources),
        ["x-sandbox", "tracestate", "ot-baggage-sandbox", "baggage"]
    );
    assert_eq!(
        names(&reads.guards),
        [
            "x-meshguard-sandbox-cluster",
            "x-envoy-original-dst-host",
            "x-edge"
        ]
    );
    assert_eq!(names(&reads.with_key), ["traceparent", ":authority"]);
    assert!(
        reads
            .sources
            .iter()
            .all(|r| r.all_values == (r.name == "baggage" || r.name == "tracestate"))
    );

    // Property: for random requests, what the reads fetch inspects and strips exactly like the
    // whole header map.
    let mut rng = crate::sandbox::test_rng::Rng::new(7);
    let names: [&str; 11] = [
        "baggage",
        "tracestate",
        "traceparent",
        "x-sandbox",
        "ot-baggage-sandbox",
        ":authority",
        "x-edge",
        "x-meshguard-sandbox-cluster",
        "x-envoy-original-dst-host",
        "user-agent",
        "x-other",
    ];
    let values: [&[u8]; 10] = [
        b"sandbox=dev-1",
        b"user=a, sandbox = dev-2;p=1",
        b"sb=dev-3,x=1",
        b"dev-4",
        b"yes",
        b"sandbox=bad key",
        TP,
        b"svc:8080",
        b"",
        b"\xff\xfe",
    ];
    for _ in 0..3000 {
        let n = rng.below(7);
        let all: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
            .map(|_| {
                (
                    names[rng.below(names.len())].as_bytes().to_vec(),
                    values[rng.below(values.len())].to_vec(),
                )
            })
            .collect();
        let seen = through_reads(&reads, &all);
        let (full, part) = (inspect(&c, &all), inspect(&c, &seen));
        assert_eq!(full.key, part.key, "{all:?}");
        assert_eq!(full.key_material, part.key_material, "{all:?}");
        assert_eq!(
            (
                full.routing_header,
                full.original_dst_header,
                full.trusted_header
            ),
            (
                part.routing_header,
                part.original_dst_header,
                part.trusted_header
            ),
            "{all:?}"
        );
        if full.key_material {
            assert_eq!(full.authority, part.authority, "{all:?}");
        }
        assert_eq!(strip_ops(&c, &all), strip_ops(&c, &seen), "{all:?}");
    }
}
