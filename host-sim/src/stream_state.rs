//! The per-stream state a VM's host functions can see: header maps, body buffers and which of
//! them Envoy currently exposes to the filter, plus the stream info behind `request.*`,
//! `response.*`, `upstream.*` and filter-state properties.
//!
//! Envoy's wasm context holds *pointers* to the maps and buffers of the current callback and
//! clears them when a callback returns Continue (or `continue_stream` runs). The `*_live` flags
//! model those pointers: a map that is not live reads as absent (`BAD_ARGUMENT` for a single
//! value, an empty map for pairs) and cannot be written, except in the access-log phase where
//! the final request/response headers are readable.

use std::collections::BTreeMap;

use crate::headers::HeaderMap;

/// Stream info (Envoy `StreamInfo`) for properties.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamInfo {
    pub stream_id: u64,
    pub connection_id: u64,
    pub start_wall_ns: u64,
    pub start_ns: u64,
    pub request_complete_ns: Option<u64>,
    pub request_body_bytes: u64,
    pub request_headers_bytes: u64,
    pub response_code: Option<u32>,
    pub response_code_details: Option<String>,
    pub response_flags: u64,
    pub response_body_bytes: u64,
    pub response_headers_bytes: u64,
    pub upstream_sent_ns: Option<u64>,
    pub upstream_first_byte_ns: Option<u64>,
    pub upstream_address: Option<String>,
    pub route_index: Option<usize>,
    pub route_dirty: bool,
    /// `wasm.<path>` from `proxy_set_property`, and Envoy filter state by name.
    pub filter_state: BTreeMap<String, Vec<u8>>,
    pub is_grpc: bool,
}

/// One HTTP stream as seen from inside its VM.
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpStream {
    pub req_headers: HeaderMap,
    pub req_headers_live: bool,
    pub req_trailers: Option<HeaderMap>,
    pub req_trailers_live: bool,
    pub req_body: Vec<u8>,
    pub req_body_live: bool,
    pub resp_headers: HeaderMap,
    pub resp_headers_live: bool,
    pub resp_trailers: Option<HeaderMap>,
    pub resp_trailers_live: bool,
    pub resp_body: Vec<u8>,
    pub resp_body_live: bool,
    /// `end_of_stream` of the current callback (trailers may be created from a body callback
    /// only when it is true).
    pub end_of_stream: bool,
    /// Trailers added by the filter from a body callback (forwarded after the body).
    pub req_trailers_added: bool,
    pub resp_trailers_added: bool,
    pub access_log_phase: bool,
    pub has_response: bool,
    pub info: StreamInfo,
}
