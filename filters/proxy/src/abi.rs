//! Non-panicking wrappers over the raw proxy-wasm 0.2.1 host calls that meshguard uses.
//!
//! Why by hand: the Rust SDK (proxy-wasm 0.2.5) `panic!`s in its host-call wrappers whenever the
//! host answers a status the wrapper did not expect (for example `BAD_ARGUMENT` from
//! `proxy_get_header_map_value` once Envoy has released the request headers), and it has no way
//! to pass response code details with a local reply. A panic traps the VM, and every later
//! request on that worker fails. Here every status becomes a [`Status`] error the caller handles,
//! and every buffer the host returns is parsed with bounds checks.
//!
//! The SDK still provides the module's exports (`proxy_on_*`, the allocator the host uses to
//! hand us memory) and the context traits; both declare the same `env` imports.
//!
//! On non-wasm targets the host functions are stand-ins that answer `UNIMPLEMENTED`, so the
//! crate links in native unit tests; nothing native ever runs them against a host.

#![allow(unsafe_code)] // FFI to the host: this module is the one place it is allowed.

use core::ptr::{null, null_mut};

/// A proxy-wasm status other than OK (`proxy_status_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    /// `NOT_FOUND`.
    pub const NOT_FOUND: Self = Self(1);
    /// `BAD_ARGUMENT`.
    pub const BAD_ARGUMENT: Self = Self(2);
    /// `SERIALIZATION_FAILURE`.
    pub const SERIALIZATION_FAILURE: Self = Self(3);
    /// `PARSE_FAILURE`.
    pub const PARSE_FAILURE: Self = Self(4);
    /// `INVALID_MEMORY_ACCESS`.
    pub const INVALID_MEMORY_ACCESS: Self = Self(6);
    /// `EMPTY`.
    pub const EMPTY: Self = Self(7);
    /// `CAS_MISMATCH`.
    pub const CAS_MISMATCH: Self = Self(8);
    /// `INTERNAL_FAILURE`.
    pub const INTERNAL_FAILURE: Self = Self(10);
    /// `UNIMPLEMENTED`.
    pub const UNIMPLEMENTED: Self = Self(12);
    /// A response that could not be decoded (malformed pairs buffer).
    pub const MALFORMED: Self = Self(u32::MAX);
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self.0 {
            1 => "NOT_FOUND",
            2 => "BAD_ARGUMENT",
            3 => "SERIALIZATION_FAILURE",
            4 => "PARSE_FAILURE",
            6 => "INVALID_MEMORY_ACCESS",
            7 => "EMPTY",
            8 => "CAS_MISMATCH",
            10 => "INTERNAL_FAILURE",
            12 => "UNIMPLEMENTED",
            u32::MAX => "MALFORMED_RESPONSE",
            _ => return write!(f, "status {}", self.0),
        };
        f.write_str(name)
    }
}

fn check(status: u32) -> Result<(), Status> {
    if status == 0 {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// A header map as raw pairs: names and values as bytes, in order, repeats kept.
pub type HeaderPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Header maps (`proxy_map_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum MapType {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

/// Metric kinds (`proxy_metric_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_len: usize,
            ret: *mut *mut u8,
            ret_len: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(map: u32, ret: *mut *mut u8, ret_len: *mut usize) -> u32;
        pub fn proxy_add_header_map_value(
            map: u32,
            key: *const u8,
            key_len: usize,
            val: *const u8,
            val_len: usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_len: usize,
            val: *const u8,
            val_len: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map: u32, key: *const u8, key_len: usize) -> u32;
        pub fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_len: usize,
            body: *const u8,
            body_len: usize,
            headers: *const u8,
            headers_len: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_call_foreign_function(
            name: *const u8,
            name_len: usize,
            args: *const u8,
            args_len: usize,
            ret: *mut *mut u8,
            ret_len: *mut usize,
        ) -> u32;
        pub fn proxy_define_metric(
            kind: u32,
            name: *const u8,
            name_len: usize,
            ret_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(id: u32, delta: i64) -> u32;
        pub fn proxy_record_metric(id: u32, value: u64) -> u32;
        pub fn proxy_get_metric(id: u32, ret: *mut u64) -> u32;
        pub fn proxy_get_property(
            path: *const u8,
            path_len: usize,
            ret: *mut *mut u8,
            ret_len: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path: *const u8,
            path_len: usize,
            val: *const u8,
            val_len: usize,
        ) -> u32;
        pub fn proxy_get_shared_data(
            key: *const u8,
            key_len: usize,
            ret: *mut *mut u8,
            ret_len: *mut usize,
            ret_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key: *const u8,
            key_len: usize,
            val: *const u8,
            val_len: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_continue_stream(stream: u32) -> u32;
        pub fn proxy_get_status(code: *mut u32, msg: *mut *mut u8, msg_len: *mut usize) -> u32;
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc, clippy::too_many_arguments, missing_docs)]
mod host {
    //! Native stand-ins: there is no host outside a proxy.
    const UNIMPLEMENTED: u32 = 12;
    pub unsafe fn proxy_get_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_get_header_map_pairs(_: u32, _: *mut *mut u8, _: *mut usize) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_add_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_replace_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_remove_header_map_value(_: u32, _: *const u8, _: usize) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_send_local_response(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: i32,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_call_foreign_function(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_define_metric(_: u32, _: *const u8, _: usize, _: *mut u32) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_increment_metric(_: u32, _: i64) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_record_metric(_: u32, _: u64) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_get_metric(_: u32, _: *mut u64) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_set_property(_: *const u8, _: usize, _: *const u8, _: usize) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_get_shared_data(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
        _: *mut u32,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_set_shared_data(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: u32,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_set_tick_period_milliseconds(_: u32) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_continue_stream(_: u32) -> u32 {
        UNIMPLEMENTED
    }
    pub unsafe fn proxy_get_status(_: *mut u32, _: *mut *mut u8, _: *mut usize) -> u32 {
        UNIMPLEMENTED
    }
}

/// Takes ownership of a buffer the host allocated in our memory through
/// `proxy_on_memory_allocate` (the SDK's allocator: a `Vec<u8>` of exactly `len` bytes).
fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the host wrote `len` bytes into a block it obtained from our allocator with
    // exactly `len` bytes of capacity (proxy-wasm ABI "Memory management"); we own it now.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// One value of a header map; `NOT_FOUND` becomes `Ok(None)`.
///
/// Envoy returns only the *first* value of a repeated header here; use [`get_map_pairs`] for all.
pub fn get_map_value(map: MapType, key: &str) -> Result<Option<Vec<u8>>, Status> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    // SAFETY: pointers to live locals and to `key`'s bytes, valid for the call.
    let status = unsafe {
        host::proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut ptr, &mut len)
    };
    match status {
        0 => Ok(Some(take(ptr, len))),
        1 => Ok(None),
        s => Err(Status(s)),
    }
}

/// All pairs of a header map, in order, with raw (possibly non-UTF-8) values.
pub fn get_map_pairs(map: MapType) -> Result<HeaderPairs, Status> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    // SAFETY: pointers to live locals, valid for the call.
    let status = unsafe { host::proxy_get_header_map_pairs(map as u32, &mut ptr, &mut len) };
    check(status)?;
    let buf = take(ptr, len);
    decode_pairs(&buf).ok_or(Status::MALFORMED)
}

/// Adds a value (keeps existing values of the same name).
pub fn add_map_value(map: MapType, key: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers into live slices, valid for the call.
    check(unsafe {
        host::proxy_add_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Replaces all values of `key` with one value (adds it when absent).
pub fn replace_map_value(map: MapType, key: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers into live slices, valid for the call.
    check(unsafe {
        host::proxy_replace_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of `key` (OK when absent).
pub fn remove_map_value(map: MapType, key: &str) -> Result<(), Status> {
    // SAFETY: pointer into a live slice, valid for the call.
    check(unsafe { host::proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) })
}

/// `proxy_send_local_response`. `grpc_status < 0` means "none".
pub fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &[u8])],
    grpc_status: i32,
) -> Result<(), Status> {
    let headers = encode_pairs(headers.iter().map(|(k, v)| (k.as_bytes(), *v)));
    // SAFETY: pointers into live buffers, valid for the call.
    check(unsafe {
        host::proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    })
}

/// Calls a host foreign function (e.g. Envoy's `clear_route_cache`).
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    let args_ptr = if args.is_empty() {
        null()
    } else {
        args.as_ptr()
    };
    // SAFETY: pointers into live buffers and locals, valid for the call.
    let status = unsafe {
        host::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args_ptr,
            args.len(),
            &mut ptr,
            &mut len,
        )
    };
    check(status)?;
    Ok(take(ptr, len))
}

/// Defines (or looks up) a metric; returns its id.
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: pointers into a live slice and a local, valid for the call.
    check(unsafe { host::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `delta` to a counter (must be > 0) or gauge.
pub fn increment_metric(id: u32, delta: i64) -> Result<(), Status> {
    // SAFETY: plain values.
    check(unsafe { host::proxy_increment_metric(id, delta) })
}

/// Sets a gauge, records a histogram sample (Envoy: *adds* to a counter).
pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain values.
    check(unsafe { host::proxy_record_metric(id, value) })
}

/// Reads a counter or gauge (Envoy: process-wide value).
pub fn get_metric(id: u32) -> Result<u64, Status> {
    let mut value = 0u64;
    // SAFETY: pointer to a live local.
    check(unsafe { host::proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

/// Reads a property by path (`["xds", "cluster_name"]`); `NOT_FOUND` becomes `Ok(None)`.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = encode_path(path);
    let mut ptr = null_mut();
    let mut len = 0usize;
    // SAFETY: pointers into a live buffer and locals, valid for the call.
    let status = unsafe { host::proxy_get_property(path.as_ptr(), path.len(), &mut ptr, &mut len) };
    match status {
        0 => Ok(Some(take(ptr, len))),
        1 => Ok(None),
        s => Err(Status(s)),
    }
}

/// Writes a property (in Envoy: filter state `wasm.<path>`).
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = encode_path(path);
    // SAFETY: pointers into live buffers, valid for the call.
    check(unsafe {
        host::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
    })
}

/// Reads shared data: `(value, cas)`, or `None` when the key is absent.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    let mut cas = 0u32;
    // SAFETY: pointers into a live slice and locals, valid for the call.
    let status = unsafe {
        host::proxy_get_shared_data(key.as_ptr(), key.len(), &mut ptr, &mut len, &mut cas)
    };
    match status {
        0 => Ok(Some((take(ptr, len), cas))),
        1 => Ok(None),
        s => Err(Status(s)),
    }
}

/// Writes shared data; `cas = 0` writes unconditionally. `Err(CAS_MISMATCH)` when another
/// writer got there first.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: pointers into live slices, valid for the call.
    check(unsafe {
        host::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Asks for `on_tick` every `period` on this VM's root context (0 disables).
pub fn set_tick_period(period: core::time::Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: plain value.
    check(unsafe { host::proxy_set_tick_period_milliseconds(ms) })
}

/// Resumes a paused HTTP request (`proxy_continue_stream(HTTP_REQUEST)`).
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: plain value.
    check(unsafe { host::proxy_continue_stream(0) })
}

/// The status of the callout being delivered (`proxy_get_status`): code and message bytes.
/// (The SDK's wrapper panics on a message that is not UTF-8.)
pub fn get_status() -> Result<(u32, Vec<u8>), Status> {
    let mut code = 0u32;
    let mut ptr = null_mut();
    let mut len = 0usize;
    // SAFETY: pointers to live locals, valid for the call.
    check(unsafe { host::proxy_get_status(&mut code, &mut ptr, &mut len) })?;
    Ok((code, take(ptr, len)))
}

/// Property paths are segments joined by NUL (the convention of Envoy and the SDKs).
fn encode_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.iter().map(|s| s.len().saturating_add(1)).sum());
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(seg.as_bytes());
    }
    out
}

/// Encodes header pairs: u32 count, (u32 key_len, u32 value_len)*, then `key\0value\0`*.
pub fn encode_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let mut count = 0u32;
    let mut size = 4usize;
    for (k, v) in pairs.clone() {
        count = count.saturating_add(1);
        size = size
            .saturating_add(10)
            .saturating_add(k.len())
            .saturating_add(v.len());
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&count.to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Decodes a header-pairs buffer; `None` when it is malformed. An empty buffer (or a single
/// NUL byte, which some hosts send for an empty map) is an empty map.
pub fn decode_pairs(buf: &[u8]) -> Option<HeaderPairs> {
    if buf.len() <= 1 {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(buf, 0)?).ok()?;
    let mut sizes_at = 4usize;
    let mut data_at = count.checked_mul(8)?.checked_add(4)?;
    if data_at > buf.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let klen = usize::try_from(read_u32(buf, sizes_at)?).ok()?;
        let vlen = usize::try_from(read_u32(buf, sizes_at.checked_add(4)?)?).ok()?;
        sizes_at = sizes_at.checked_add(8)?;
        let kend = data_at.checked_add(klen)?;
        let key = buf.get(data_at..kend)?.to_vec();
        let vstart = kend.checked_add(1)?;
        let vend = vstart.checked_add(vlen)?;
        let value = buf.get(vstart..vend)?.to_vec();
        data_at = vend.checked_add(1)?;
        out.push((key, value));
    }
    Some(out)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_with_binary_values() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":status", b"200"),
            (b"x-bin", &[0xff, 0x00, 0x80]),
            (b"empty", b""),
            (b"x-bin", b"second"),
        ];
        let buf = encode_pairs(pairs.iter().copied());
        let back = decode_pairs(&buf).unwrap();
        let back: Vec<(&[u8], &[u8])> = back
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(back, pairs);
    }

    #[test]
    fn empty_maps() {
        assert_eq!(decode_pairs(&[]), Some(vec![]));
        assert_eq!(decode_pairs(&[0]), Some(vec![]));
        assert_eq!(decode_pairs(&0u32.to_le_bytes()), Some(vec![]));
        assert_eq!(
            encode_pairs(core::iter::empty()),
            0u32.to_le_bytes().to_vec()
        );
    }

    #[test]
    fn malformed_buffers_are_rejected_not_panicked_on() {
        let good = encode_pairs([(&b"a"[..], &b"b"[..])].into_iter());
        for cut in 2..good.len() - 1 {
            assert_eq!(decode_pairs(&good[..cut]), None, "cut at {cut}");
        }
        // A count that claims more pairs than the buffer holds.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert_eq!(decode_pairs(&huge), None);
        // Lengths that overflow.
        let mut bad = 1u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_pairs(&bad), None);
    }

    #[test]
    fn property_paths_are_nul_joined() {
        assert_eq!(
            encode_path(&["xds", "cluster_name"]),
            b"xds\0cluster_name".to_vec()
        );
        assert_eq!(encode_path(&["plugin_name"]), b"plugin_name".to_vec());
    }

    #[test]
    fn native_host_is_unimplemented() {
        assert_eq!(
            get_map_pairs(MapType::RequestHeaders),
            Err(Status::UNIMPLEMENTED)
        );
        assert_eq!(Status::CAS_MISMATCH.to_string(), "CAS_MISMATCH");
        assert_eq!(Status(99).to_string(), "status 99");
    }
}
