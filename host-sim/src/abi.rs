//! proxy-wasm ABI 0.2.1 constants (`proxy_status_t`, map, buffer, stream and metric types).

/// `proxy_status_t`, as Envoy returns it (including the values outside the spec's list that
/// implementations use: BadExpression, ResultMismatch, BrokenConnection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    BadExpression = 5,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    ResultMismatch = 9,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

impl Status {
    /// The raw value returned to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// `proxy_map_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    /// Decodes the raw value; `None` for values past `HTTP_CALL_RESPONSE_TRAILERS`.
    pub fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }

    /// Name used in traces.
    pub fn name(self) -> &'static str {
        match self {
            MapType::RequestHeaders => "request_headers",
            MapType::RequestTrailers => "request_trailers",
            MapType::ResponseHeaders => "response_headers",
            MapType::ResponseTrailers => "response_trailers",
            MapType::GrpcInitialMetadata => "grpc_initial_metadata",
            MapType::GrpcTrailingMetadata => "grpc_trailing_metadata",
            MapType::HttpCallResponseHeaders => "http_call_response_headers",
            MapType::HttpCallResponseTrailers => "http_call_response_trailers",
        }
    }
}

/// `proxy_buffer_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    /// Decodes the raw value; `None` past `FOREIGN_FUNCTION_ARGUMENTS` (8).
    pub fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// `proxy_stream_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum StreamType {
    Request,
    Response,
    Downstream,
    Upstream,
}

impl StreamType {
    /// Decodes the raw value.
    pub fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => StreamType::Request,
            1 => StreamType::Response,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }
}

/// `proxy_metric_type_t`; the low two bits of every metric id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    /// Decodes the raw value (`BAD_ARGUMENT` in Envoy past HISTOGRAM).
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// Log levels (`proxy_log_level_t`, also Envoy's spdlog levels).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    /// Decodes the raw value; `None` past CRITICAL (Envoy: BAD_ARGUMENT).
    pub fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// The raw value.
    pub fn raw(self) -> u32 {
        self as u32
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        })
    }
}

/// Callout ids encode their kind in the low two bits and step by 4 (cpp-host `wasm.h`).
pub(crate) const CALLOUT_STEP: u32 = 4;
/// Kind bits of an http call id.
pub(crate) const KIND_HTTP: u32 = 0;
/// Kind bits of a gRPC unary call id.
pub(crate) const KIND_GRPC_CALL: u32 = 1;
/// Kind bits of a gRPC stream id.
pub(crate) const KIND_GRPC_STREAM: u32 = 2;

/// Pair buffers above this are read as empty (cpp-host `PROXY_WASM_HOST_PAIRS_MAX_BYTES`).
pub const PAIRS_MAX_BYTES: usize = 1024 * 1024;
/// Pair buffers with more pairs are read as empty (`PROXY_WASM_HOST_PAIRS_MAX_COUNT`).
pub const PAIRS_MAX_COUNT: usize = 1024;
/// Linear memory limit per VM (`PROXY_WASM_HOST_MAX_WASM_MEMORY_SIZE_BYTES`).
pub const MAX_MEMORY_BYTES: usize = 1024 * 1024 * 1024;
/// `random_get` larger than this is EINVAL (`PROXY_WASM_HOST_WASI_RANDOM_GET_MAX_SIZE_BYTES`).
pub const RANDOM_GET_MAX_BYTES: u32 = 64 * 1024;
