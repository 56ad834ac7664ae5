//! Writes the seeds that are binary encodings: RLS `RateLimitResponse`s made with the
//! policy's own prost types (`fuzz/corpus/rls_answer/`), and deterministic byte seeds for the
//! structured (`arbitrary`-decoded) targets. Run once: `cargo run -p meshguard-fuzz-targets
//! --example make_seeds`; the text seeds are written by hand.

use std::path::Path;

use meshguard_policy::rate_limit::rls::{
    CODE_OK, CODE_OVER_LIMIT, DescriptorStatus, HeaderValue, ProtoDuration, RateLimit,
    RateLimitResponse,
};
use prost::Message;

fn header(k: &str, v: &str) -> HeaderValue {
    HeaderValue {
        key: k.into(),
        value: v.into(),
        raw_value: Vec::new(),
    }
}

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let rls = corpus.join("rls_answer");
    std::fs::create_dir_all(&rls)?;
    let ok = RateLimitResponse {
        overall_code: CODE_OK,
        statuses: vec![DescriptorStatus {
            code: CODE_OK,
            current_limit: Some(RateLimit {
                requests_per_unit: 100,
                unit: 1,
                name: "checkout".into(),
            }),
            limit_remaining: 99,
            duration_until_reset: Some(ProtoDuration {
                seconds: 1,
                nanos: 0,
            }),
        }],
        response_headers_to_add: vec![header("X-RateLimit-Remaining", "99")],
        request_headers_to_add: vec![
            header("x-ratelimit-checked", "1"),
            HeaderValue {
                key: "x-raw".into(),
                value: String::new(),
                raw_value: vec![0xff, 0x00, b'a'],
            },
        ],
        raw_body: Vec::new(),
    };
    let over = RateLimitResponse {
        overall_code: CODE_OVER_LIMIT,
        statuses: vec![
            DescriptorStatus {
                code: CODE_OVER_LIMIT,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset: Some(ProtoDuration {
                    seconds: 0,
                    nanos: 250_000_000,
                }),
            },
            DescriptorStatus {
                code: CODE_OVER_LIMIT,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset: Some(ProtoDuration {
                    seconds: i64::MAX,
                    nanos: -1,
                }),
            },
        ],
        response_headers_to_add: vec![header("retry-after", "1")],
        request_headers_to_add: Vec::new(),
        raw_body: b"slow down".to_vec(),
    };
    let unknown = RateLimitResponse {
        overall_code: 0,
        ..ok.clone()
    };
    std::fs::write(rls.join("ok.pb"), ok.encode_to_vec())?;
    std::fs::write(rls.join("over_limit.pb"), over.encode_to_vec())?;
    std::fs::write(rls.join("unknown.pb"), unknown.encode_to_vec())?;
    std::fs::write(rls.join("truncated.pb"), &over.encode_to_vec()[..7])?;
    // Structured targets: deterministic bytes of a few sizes (libFuzzer finds the structure).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for t in [
        "descriptor",
        "load_shed_engine",
        "rate_limit_engine",
        "circuit_breaker_engine",
        "abi_load_shed",
        "abi_circuit_breaker",
        "abi_rate_limit",
        "abi_sandbox_router",
        "abi_meshguard",
    ] {
        let dir = corpus.join(t);
        std::fs::create_dir_all(&dir)?;
        for len in [64usize, 512, 2048] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            std::fs::write(dir.join(format!("random{len}")), bytes)?;
        }
    }
    Ok(())
}
