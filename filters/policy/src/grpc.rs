//! gRPC vocabulary: status codes and request detection.
//!
//! A sidecar that answers a gRPC client with a plain HTTP 503 breaks it: the client sees a
//! protocol error instead of `UNAVAILABLE` and its retry policy never runs. meshguard therefore
//! detects gRPC requests and rejects them with a trailers-only response carrying `grpc-status`.

/// gRPC status codes (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum GrpcStatus {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcStatus {
    /// All codes, in numeric order.
    pub const ALL: [Self; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The numeric code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The code for a number, if it is a known one.
    pub fn from_code(code: u64) -> Option<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Parses a `grpc-status` header or trailer value (ASCII decimal).
    pub fn from_header(value: &[u8]) -> Option<Self> {
        let text = core::str::from_utf8(value).ok()?.trim();
        if text.is_empty() || text.len() > 3 {
            return None;
        }
        text.parse::<u64>().ok().and_then(Self::from_code)
    }
}

/// True when a `content-type` value marks a gRPC request: `application/grpc`, optionally
/// followed by `+proto`, `+json`, ... or parameters (`;`), case-insensitive, as Envoy's
/// `Grpc::Common::isGrpcRequestHeaders` decides.
///
/// ```
/// use meshguard_policy::grpc::is_grpc_content_type;
/// assert!(is_grpc_content_type(b"application/grpc"));
/// assert!(is_grpc_content_type(b"application/grpc+proto"));
/// assert!(!is_grpc_content_type(b"application/grpc-web"));
/// assert!(!is_grpc_content_type(b"application/json"));
/// ```
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    let Some(head) = value.get(..PREFIX.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(PREFIX) {
        return false;
    }
    matches!(value.get(PREFIX.len()), None | Some(b'+' | b';'))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn codes_round_trip() {
        for (i, s) in GrpcStatus::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.code()), i);
            assert_eq!(GrpcStatus::from_code(i as u64), Some(*s));
        }
        assert_eq!(GrpcStatus::from_code(17), None);
        assert_eq!(GrpcStatus::from_code(u64::MAX), None);
    }

    #[test]
    fn header_values() {
        assert_eq!(
            GrpcStatus::from_header(b"14"),
            Some(GrpcStatus::Unavailable)
        );
        assert_eq!(GrpcStatus::from_header(b" 0 "), Some(GrpcStatus::Ok));
        assert_eq!(GrpcStatus::from_header(b""), None);
        assert_eq!(GrpcStatus::from_header(b"-1"), None);
        assert_eq!(GrpcStatus::from_header(b"99"), None);
        assert_eq!(GrpcStatus::from_header(b"1400"), None);
        assert_eq!(GrpcStatus::from_header(&[0xff, 0x31]), None);
    }

    #[test]
    fn content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"Application/GRPC"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"application/grpc;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpc-web+proto"));
        assert!(!is_grpc_content_type(b"application/grpcx"));
        assert!(!is_grpc_content_type(b"application/grp"));
        assert!(!is_grpc_content_type(b""));
        assert!(!is_grpc_content_type(&[0xff; 40]));
    }
}
