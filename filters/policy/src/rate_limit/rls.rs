//! Envoy's Rate Limit Service v3 (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`):
//! the messages meshguard sends and reads, and what an answer means.
//!
//! The message types are written out here with prost's derive (field numbers and types as in
//! `envoy/service/ratelimit/v3/rls.proto`), so the filter needs no protoc at build time; only the
//! fields meshguard uses are declared and the rest are skipped on decode, as protobuf allows.

use prost::Message;

/// gRPC service of the RLS.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// gRPC method.
pub const METHOD: &str = "ShouldRateLimit";

/// `RateLimitRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    /// The limits' domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// One descriptor per limit to check.
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// Hits to add (0 means 1).
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    /// Entries.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<DescriptorEntry>,
}

/// `RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, Message)]
pub struct DescriptorEntry {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `RateLimitResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    /// Overall decision (`Code`: UNKNOWN 0, OK 1, OVER_LIMIT 2).
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    /// Per descriptor.
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    /// Headers for the response to the client.
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
    /// Headers for the request to the upstream.
    #[prost(message, repeated, tag = "4")]
    pub request_headers_to_add: Vec<HeaderValue>,
    /// Body to send when over limit.
    #[prost(bytes = "vec", tag = "5")]
    pub raw_body: Vec<u8>,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    /// Code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The limit that applied.
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    /// Hits left in the window.
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    /// Time until the window resets.
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimit {
    /// Requests per unit.
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// Unit (SECOND 1, MINUTE 2, HOUR 3, DAY 4, ...).
    #[prost(int32, tag = "2")]
    pub unit: i32,
    /// Name.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct ProtoDuration {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    /// Name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value (string form).
    #[prost(string, tag = "2")]
    pub value: String,
    /// Value (bytes form, newer servers).
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// Code `OK`.
pub const CODE_OK: i32 = 1;

/// Largest RLS answer read (64 KiB). A real `RateLimitResponse` is a few hundred bytes, a few
/// KiB with headers to add; a bigger one is treated as a failed call (the failure mode
/// applies) without being copied into the VM, whose linear memory would otherwise keep that
/// high-water mark for good (Wasm memory never shrinks).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Code `OVER_LIMIT`.
pub const CODE_OVER_LIMIT: i32 = 2;

/// Encodes a request for one descriptor (values that are not UTF-8 are sent lossily; the RLS
/// protocol carries strings).
pub fn request(domain: &str, entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| DescriptorEntry {
                    key: k.clone(),
                    value: String::from_utf8_lossy(v).into_owned(),
                })
                .collect(),
        }],
        hits_addend: 1,
    }
    .encode_to_vec()
}

/// What an RLS answer means for the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Under the limit.
    Ok {
        /// Add to the request.
        request_headers: Vec<(String, String)>,
        /// Add to the response.
        response_headers: Vec<(String, String)>,
    },
    /// Over the limit.
    OverLimit {
        /// Time until the window resets, if the server said (ns).
        reset_ns: Option<u64>,
        /// Add to the (local) response.
        response_headers: Vec<(String, String)>,
        /// Body to send, if the server gave one.
        body: Option<Vec<u8>>,
    },
    /// Unusable (malformed message, UNKNOWN code): the failure mode decides.
    Invalid,
}

fn headers(list: &[HeaderValue]) -> Vec<(String, String)> {
    list.iter()
        .filter(|h| !h.key.is_empty())
        .take(32)
        .map(|h| {
            let value = if h.value.is_empty() && !h.raw_value.is_empty() {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            } else {
                h.value.clone()
            };
            (h.key.to_ascii_lowercase(), value)
        })
        .collect()
}

/// Interprets a `RateLimitResponse`.
pub fn answer(bytes: &[u8]) -> Answer {
    let Ok(r) = RateLimitResponse::decode(bytes) else {
        return Answer::Invalid;
    };
    match r.overall_code {
        CODE_OK => Answer::Ok {
            request_headers: headers(&r.request_headers_to_add),
            response_headers: headers(&r.response_headers_to_add),
        },
        CODE_OVER_LIMIT => {
            let reset_ns = r
                .statuses
                .iter()
                .filter(|s| s.code == CODE_OVER_LIMIT)
                .filter_map(|s| s.duration_until_reset)
                .filter_map(|d| {
                    let secs = u64::try_from(d.seconds).ok()?;
                    let nanos = u64::try_from(d.nanos).ok()?;
                    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
                })
                .max();
            Answer::OverLimit {
                reset_ns,
                response_headers: headers(&r.response_headers_to_add),
                body: (!r.raw_body.is_empty()).then_some(r.raw_body),
            }
        }
        _ => Answer::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn request_round_trips() {
        let bytes = request("shop", &[("remote_address".into(), b"1.2.3.4".to_vec())]);
        let r = RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(r.domain, "shop");
        assert_eq!(r.hits_addend, 1);
        assert_eq!(r.descriptors[0].entries[0].key, "remote_address");
        assert_eq!(r.descriptors[0].entries[0].value, "1.2.3.4");
    }

    #[test]
    fn answers() {
        let ok = RateLimitResponse {
            overall_code: CODE_OK,
            request_headers_to_add: vec![HeaderValue {
                key: "X-Quota".into(),
                value: "5".into(),
                raw_value: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            answer(&ok.encode_to_vec()),
            Answer::Ok {
                request_headers: vec![("x-quota".into(), "5".into())],
                response_headers: vec![]
            }
        );
        let over = RateLimitResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![
                DescriptorStatus {
                    code: CODE_OK,
                    current_limit: None,
                    limit_remaining: 3,
                    duration_until_reset: None,
                },
                DescriptorStatus {
                    code: CODE_OVER_LIMIT,
                    current_limit: Some(RateLimit {
                        requests_per_unit: 10,
                        unit: 1,
                        name: String::new(),
                    }),
                    limit_remaining: 0,
                    duration_until_reset: Some(ProtoDuration {
                        seconds: 1,
                        nanos: 500_000_000,
                    }),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            answer(&over.encode_to_vec()),
            Answer::OverLimit {
                reset_ns: Some(1_500_000_000),
                response_headers: vec![],
                body: None
            }
        );
        assert_eq!(
            answer(&RateLimitResponse::default().encode_to_vec()),
            Answer::Invalid
        );
        assert_eq!(answer(&[0xff, 0xff, 0xff]), Answer::Invalid);
        let negative = RateLimitResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![DescriptorStatus {
                code: CODE_OVER_LIMIT,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset: Some(ProtoDuration {
                    seconds: -5,
                    nanos: 0,
                }),
            }],
            ..Default::default()
        };
        assert!(matches!(
            answer(&negative.encode_to_vec()),
            Answer::OverLimit { reset_ns: None, .. }
        ));
    }
}
