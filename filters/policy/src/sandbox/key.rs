//! Routing keys: what a valid key looks like, and its optional HMAC-SHA256 signature.
//!
//! A key is 1 to `max_length` (default [`DEFAULT_MAX_LENGTH`]) characters from
//! `A-Z a-z 0-9 - _`. Anything else (longer, other characters, non-UTF-8) is not a key: the
//! request goes to the baseline and `fallback.invalid_key` is counted. The small alphabet keeps
//! keys safe to log and to use in metric names.
//!
//! **Signed keys.** With a secret configured, a key is only accepted as
//! `<key>.<signature>`, where the signature is the 64 hex digits (either case) of
//! `HMAC-SHA256(secret, key)`:
//!
//! ```text
//! baggage: sandbox=dev-1.3f1c5e...   (64 hex digits)
//! ```
//! The key used for the table lookup, the metrics and `x-meshguard-sandbox` is the part before
//! the last `.`. Whoever can mint keys (the tool that starts a sandbox) holds the secret; a
//! client that only knows a sandbox's name cannot reach it. Comparison is constant-time.

use hmac::{KeyInit, Mac};

/// Default longest key.
pub const DEFAULT_MAX_LENGTH: usize = 64;
/// Largest `max_length` accepted in config.
pub const MAX_MAX_LENGTH: usize = 256;
/// Shortest secret accepted (bytes): below 128 bits a secret can be guessed offline.
pub const MIN_SECRET_LEN: usize = 16;
/// Hex digits of a signature (the whole HMAC-SHA256).
pub const SIGNATURE_HEX_LEN: usize = 64;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a candidate is not a usable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Empty (after trimming).
    Empty,
    /// Longer than `max_length`.
    TooLong,
    /// A character outside `A-Z a-z 0-9 - _`, or not UTF-8.
    BadCharacter,
    /// A secret is configured and the key carries no `.<signature>`.
    Unsigned,
    /// The signature does not match.
    BadSignature,
}

impl KeyError {
    /// The name used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::BadCharacter => "bad_character",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// The validated key rules.
#[derive(Clone)]
pub struct KeyRules {
    /// Longest key (without signature).
    pub max_length: usize,
    secret: Option<Vec<u8>>,
}

impl core::fmt::Debug for KeyRules {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyRules")
            .field("max_length", &self.max_length)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl Default for KeyRules {
    fn default() -> Self {
        Self {
            max_length: DEFAULT_MAX_LENGTH,
            secret: None,
        }
    }
}

impl KeyRules {
    /// Rules with `max_length` and an optional HMAC secret.
    pub fn new(max_length: usize, secret: Option<Vec<u8>>) -> Self {
        Self { max_length, secret }
    }

    /// True when keys must be signed.
    pub fn signed(&self) -> bool {
        self.secret.is_some()
    }

    /// Checks a candidate (already decoded) and returns the key to route on.
    ///
    /// # Errors
    /// [`KeyError`] saying why the candidate is not a key.
    pub fn check<'a>(&self, candidate: &'a [u8]) -> Result<&'a str, KeyError> {
        let candidate = super::baggage::trim_ows(candidate);
        let Some(secret) = &self.secret else {
            return self.plain(candidate);
        };
        let dot = candidate
            .iter()
            .rposition(|b| *b == b'.')
            .ok_or(KeyError::Unsigned)?;
        let key = self.plain(candidate.get(..dot).unwrap_or_default())?;
        let hex = candidate.get(dot.saturating_add(1)..).unwrap_or_default();
        let signature = decode_hex(hex).ok_or(KeyError::BadSignature)?;
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| KeyError::BadSignature)?;
        mac.update(key.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| KeyError::BadSignature)?;
        Ok(key)
    }

    /// Checks a plain key (charset and length), e.g. from the table.
    ///
    /// # Errors
    /// [`KeyError`] saying why it is not a key.
    pub fn plain<'a>(&self, key: &'a [u8]) -> Result<&'a str, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > self.max_length {
            return Err(KeyError::TooLong);
        }
        if !key.iter().all(|b| is_key_byte(*b)) {
            return Err(KeyError::BadCharacter);
        }
        core::str::from_utf8(key).map_err(|_| KeyError::BadCharacter)
    }
}

/// `A-Z a-z 0-9 - _`.
pub const fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `<key>.<64 lower-case hex digits of HMAC-SHA256(secret, key)>`: what a tool that mints keys
/// sends.
pub fn sign(secret: &[u8], key: &str) -> String {
    let mut out = String::with_capacity(
        key.len()
            .saturating_add(SIGNATURE_HEX_LEN)
            .saturating_add(1),
    );
    out.push_str(key);
    out.push('.');
    if let Ok(mut mac) = HmacSha256::new_from_slice(secret) {
        mac.update(key.as_bytes());
        for b in mac.finalize().into_bytes() {
            out.push(char::from(
                HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
            ));
            out.push(char::from(
                HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != SIGNATURE_HEX_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |b: u8| {
            char::from(b)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        let hi = digit(*pair.first()?)?;
        let lo = digit(*pair.get(1)?)?;
        *o = hi.wrapping_shl(4) | lo;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::arithmetic_side_effects)] // tests

    use super::*;
    use crate::sandbox::test_rng::Rng;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn plain_keys() {
        let r = KeyRules::default();
        assert_eq!(r.check(b"dev-1_A"), Ok("dev-1_A"));
        assert_eq!(r.check(b" dev-1 "), Ok("dev-1"));
        assert_eq!(r.check(b""), Err(KeyError::Empty));
        assert_eq!(r.check(&[b'a'; 65]), Err(KeyError::TooLong));
        assert_eq!(r.check(&[b'a'; 64]).map(str::len), Ok(64));
        for bad in [
            &b"dev.1"[..],
            b"dev 1",
            b"dev/1",
            b"d\xc3\xa9v",
            b"\xff",
            b"a%20",
        ] {
            assert_eq!(r.check(bad), Err(KeyError::BadCharacter), "{bad:?}");
        }
        assert_eq!(
            KeyRules::new(3, None).check(b"abcd"),
            Err(KeyError::TooLong)
        );
    }

    /// RFC 4231 test case 2 ("Jefe" / "what do ya want for nothing?").
    #[test]
    fn hmac_sha256_matches_the_rfc_vector() {
        let signed = sign(b"Jefe", "what do ya want for nothing?");
        assert!(
            signed.ends_with(".5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            "{signed}"
        );
    }

    #[test]
    fn signed_keys() {
        let secret = b"0123456789abcdef-secret".to_vec();
        let r = KeyRules::new(64, Some(secret.clone()));
        let good = sign(&secret, "dev-1");
        assert_eq!(r.check(good.as_bytes()), Ok("dev-1"));
        assert_eq!(
            r.check(good.to_uppercase().replace("DEV", "dev").as_bytes()),
            Ok("dev-1")
        );
        assert_eq!(r.check(b"dev-1"), Err(KeyError::Unsigned));
        let other = sign(b"another-secret-of-16", "dev-1");
        assert_eq!(r.check(other.as_bytes()), Err(KeyError::BadSignature));
        let moved = good.replace("dev-1", "dev-2");
        assert_eq!(r.check(moved.as_bytes()), Err(KeyError::BadSignature));
        let short = &good[..good.len() - 2];
        assert_eq!(r.check(short.as_bytes()), Err(KeyError::BadSignature));
        assert_eq!(r.check(b"dev 1.00"), Err(KeyError::BadCharacter));
        assert!(format!("{r:?}").contains("signed: true") && !format!("{r:?}").contains("secret"));
    }

    #[test]
    fn random_candidates_never_panic_and_valid_ones_are_clean() {
        let mut rng = Rng::new(5);
        let signed = KeyRules::new(64, Some(b"sixteen-byte-key".to_vec()));
        let plain = KeyRules::default();
        for _ in 0..5000 {
            let len = rng.below(140);
            let v = if rng.chance(50) {
                rng.bytes(len)
            } else {
                rng.pick(b"ab-_.0F9 \xff", len)
            };
            for r in [&plain, &signed] {
                if let Ok(k) = r.check(&v) {
                    assert!(!k.is_empty() && k.len() <= 64 && k.bytes().all(is_key_byte));
                }
            }
        }
    }
}
