//! Baggage parser tests: the spec's edge cases, then randomised properties.

#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // tests

use super::*;
use crate::sandbox::test_rng::Rng;
#[cfg(target_arch = "wasm32")]
use crate::test;

fn keys_values(values: &[&[u8]]) -> Vec<(String, String)> {
    members(values.iter().copied())
        .filter_map(Result::ok)
        .map(|m| {
            (
                String::from_utf8(m.key.to_vec()).unwrap(),
                m.decoded().unwrap_or_else(|| "<bad>".into()),
            )
        })
        .collect()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn ows_properties_and_percent_encoding() {
    let got =
        keys_values(&[b" sandbox = dev-1 ;ttl=30; flag , user=J%C3%BCrgen\t,\tq=a%3Db%2Cc=d"]);
    assert_eq!(
        got,
        kv(&[("sandbox", "dev-1"), ("user", "Jürgen"), ("q", "a=b,c=d"),])
    );
}

#[test]
fn several_headers_are_one_list_in_order() {
    let got = keys_values(&[b"a=1", b"sandbox=dev-2,b=2", b"sandbox=dev-3"]);
    assert_eq!(
        got,
        kv(&[
            ("a", "1"),
            ("sandbox", "dev-2"),
            ("b", "2"),
            ("sandbox", "dev-3")
        ])
    );
    assert_eq!(
        value_of([&b"a=1"[..], b"sandbox=dev-2", b"sandbox=dev-3"], "sandbox"),
        Some(Some("dev-2".into())),
        "first well-formed duplicate wins"
    );
}

#[test]
fn malformed_members_are_skipped_not_fatal() {
    for bad in [
        &b"sandbox"[..],          // no '='
        b"=dev-1",                // no key
        b"sand box=dev-1",        // space in key
        b"sandbox=dev 1",         // space in value
        b"sandbox=\"dev-1\"",     // DQUOTE
        b"sandbox=dev\\1",        // backslash
        b"sandbox=dev-1;",        // empty property
        b"sandbox=dev-1;p=\"x\"", // bad property value
        b"sandbox=dev-1;=x",      // property without key
        b"sandbox=\xff\xfe",      // not ASCII
        b"s\xc3\xa4ndbox=dev-1",  // non-token key
    ] {
        let list = [bad, b"ok=1"];
        let got: Vec<_> = members(list.iter().copied()).collect();
        assert_eq!(got.len(), 2, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(got[0], Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        assert!(got[1].is_ok());
    }
    // Bad percent escapes are a well-formed member whose value does not decode.
    for v in [&b"sandbox=dev%2"[..], b"sandbox=%zz", b"sandbox=%ff"] {
        assert_eq!(value_of([v], "sandbox"), Some(None), "{v:?}");
    }
    // Empty members are not members; keys are case-sensitive.
    assert_eq!(
        keys_values(&[b" , ,a=1,, ", b"", b"Sandbox=x"]),
        kv(&[("a", "1"), ("Sandbox", "x")])
    );
    assert_eq!(value_of([&b"Sandbox=x"[..]], "sandbox"), None);
    assert_eq!(keys_values(&[b"empty="]), kv(&[("empty", "")]));
}

#[test]
fn at_most_180_members_are_considered() {
    let mut list: Vec<u8> = Vec::new();
    for i in 0..180 {
        list.extend_from_slice(format!("k{i}=v,").as_bytes());
    }
    list.extend_from_slice(b"sandbox=late");
    assert_eq!(members([list.as_slice()]).count(), 180);
    assert_eq!(value_of([list.as_slice()], "sandbox"), None);
    // Malformed items count as members; empty ones do not.
    let mut list: Vec<u8> = b",,,".to_vec();
    for _ in 0..179 {
        list.extend_from_slice(b"bad,");
    }
    list.extend_from_slice(b"sandbox=ok");
    assert_eq!(
        value_of([list.as_slice()], "sandbox"),
        Some(Some("ok".into()))
    );
}

#[test]
fn at_most_8192_bytes_are_considered() {
    // A member that ends exactly at byte 8192 counts; one that crosses it does not.
    let filler = format!("f={}", "x".repeat(8192 - "f=".len() - ",sandbox=ab".len()));
    let exact = format!("{filler},sandbox=ab");
    assert_eq!(exact.len(), 8192);
    assert_eq!(
        value_of([exact.as_bytes()], "sandbox"),
        Some(Some("ab".into()))
    );
    let over = format!("{filler},sandbox=abc");
    assert_eq!(value_of([over.as_bytes()], "sandbox"), None);
    // The joining comma between two headers counts too.
    let first = "x".repeat(8192 - ",sandbox=ab".len());
    let first = format!("a={}", &first[2..]);
    assert_eq!(
        value_of([first.as_bytes(), b"sandbox=ab"], "sandbox"),
        Some(Some("ab".into()))
    );
    assert_eq!(
        value_of([first.as_bytes(), b"sandbox=abc"], "sandbox"),
        None
    );
    // A huge header costs nothing beyond the limit and never panics.
    let huge = vec![b'a'; 1 << 20];
    assert_eq!(members([huge.as_slice()]).count(), 0);
}

#[test]
fn strip_removes_every_copy_and_keeps_the_rest_verbatim() {
    let list: [&[u8]; 3] = [b"a=1, SANDBOX=x;p", b"sandbox", b"b=2;q=3 ,sandbox =y"];
    assert!(mentions(list, &["sandbox"]));
    assert_eq!(strip(list, &["sandbox"]).unwrap(), b"a=1,b=2;q=3".to_vec());
    assert_eq!(strip([&b"a=1"[..]], &["sandbox"]), None);
    assert_eq!(
        strip([&b"sandbox=1"[..], b" , "], &["sandbox"]),
        Some(Vec::new())
    );
    assert_eq!(
        strip([&b"sandbox=1,other=2"[..]], &["sandbox", "other"]),
        Some(Vec::new())
    );
}

const TOKEN: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
const NASTY: &[u8] = b"a=;, \t%\"\\\xff\x00=b;c%2";

/// Property: arbitrary bytes never panic, and every member returned is well-formed.
#[test]
fn random_input_never_panics() {
    let mut rng = Rng::new(7);
    for _ in 0..3000 {
        let n = rng.below(4);
        let values: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let len = rng.below(64);
                if rng.chance(50) {
                    rng.bytes(len)
                } else {
                    rng.pick(NASTY, len)
                }
            })
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        for m in members(refs.iter().copied()).flatten() {
            assert!(is_token(m.key));
            assert!(m.value.iter().all(|b| is_baggage_octet(*b)));
            let _ = m.decoded();
        }
        let _ = value_of(refs.iter().copied(), "a");
        if let Some(s) = strip(refs.iter().copied(), &["a"]) {
            assert!(!mentions([s.as_slice()], &["a"]));
        }
    }
}

/// Property: encode then parse gives back every member, whatever the value bytes, with OWS,
/// properties and empty members sprinkled in, over one or several headers.
#[test]
fn encoded_members_round_trip() {
    let mut rng = Rng::new(11);
    for _ in 0..1000 {
        let n = 1 + rng.below(12);
        let mut expected = Vec::new();
        let mut headers: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..n {
            let klen = 1 + rng.below(10);
            let key = String::from_utf8(rng.pick(TOKEN, klen)).unwrap();
            let value: String = (0..rng.below(12))
                .map(|_| char::from_u32(u32::try_from(rng.below(0x3000)).unwrap()).unwrap_or('x'))
                .collect();
            let mut member = Vec::new();
            if rng.chance(30) {
                member.extend_from_slice(b" \t");
            }
            member.extend(encode_member(&key, value.as_bytes()));
            if rng.chance(30) {
                member.extend_from_slice(b" ; prop ;k=v%20");
            }
            if rng.chance(20) {
                member.push(b' ');
            }
            let current = headers.last_mut().unwrap();
            if !current.is_empty() {
                current.extend_from_slice(if rng.chance(20) { b",," } else { b"," });
            }
            current.extend(member);
            if rng.chance(25) {
                headers.push(Vec::new());
            }
            expected.push((key, value));
        }
        let refs: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
        assert_eq!(keys_values(&refs), expected, "{headers:?}");
    }
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode(b"a%20b%2c").unwrap(), b"a b,".to_vec());
    assert_eq!(percent_decode(b"%"), None);
    assert_eq!(percent_decode(b"%4"), None);
    assert_eq!(percent_decode(b"%g0"), None);
    assert_eq!(encode_member("k", b"a b%\xff"), b"k=a%20b%25%FF".to_vec());
    assert_eq!(trim_ows(b" \t x \t"), b"x");
    assert_eq!(trim_ows(b" \t "), b"");
}
