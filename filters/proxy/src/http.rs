//! HTTP stream helpers: headers (all values of a repeated header), gRPC detection, gRPC-aware
//! local replies, and Envoy's `clear_route_cache`.

use meshguard_policy::Rejection;
use meshguard_policy::grpc::is_grpc_content_type;
use meshguard_policy::headers::HeaderRead;

use crate::abi::{self, MapType, Status};
use crate::memo;

/// The first value of a request header (`None` when absent or not readable in this phase).
///
/// Envoy only answers this while the request headers are being processed (or paused in that
/// callback) and in `on_log`; afterwards it answers `BAD_ARGUMENT`, which is `None` here.
///
/// Not remembered by a [`RequestMemo`]: a header miss is the cheapest host call, and two
/// policies rarely read the same header, so remembering cost more guest work than it saved.
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    abi::get_map_value(MapType::RequestHeaders, name)
        .ok()
        .flatten()
}

/// A property (`xds.cluster_name`, `source.address`, ...), `None` when absent or refused.
/// Inside a [`RequestMemo`] scope each path is asked of the host once.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    memo::cached(path, || abi::get_property(path).ok().flatten())
}

/// Appends the request headers of `reads` that are present: list headers with all their
/// values (Envoy's `request.headers.<name>` property joins repeated headers with `,`;
/// `proxy_get_header_map_value` gives only the first), others with their first value.
///
/// Every header is first looked up with `proxy_get_header_map_value`: a miss is the cheapest
/// host call there is (~2 µs in Envoy 1.40, against ~5 µs for the property and ~11 µs for a
/// header-map dump), and most requests carry few of the headers a policy reads.
pub fn read_request_headers(reads: &[HeaderRead], out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    read_request_headers_unless(reads, out, |_, _| false);
}

/// [`read_request_headers`], except that a list header whose first value `first_decides`
/// (by name and first value) is not read again for all its values: one host call fewer when
/// the caller knows the rest cannot change its decision.
pub fn read_request_headers_unless(
    reads: &[HeaderRead],
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
    first_decides: impl Fn(&str, &[u8]) -> bool,
) {
    for r in reads {
        let Some(first) = request_header(&r.name) else {
            continue;
        };
        let value = if r.all_values && !first_decides(&r.name, &first) {
            property(&["request", "headers", &r.name]).unwrap_or(first)
        } else {
            first
        };
        out.push((r.name.as_bytes().to_vec(), value));
    }
}

/// Replaces (or adds) a request header; what a [`RequestMemo`] remembered is forgotten.
///
/// # Errors
/// The host's status.
pub fn replace_request_header(name: &str, value: &[u8]) -> Result<(), Status> {
    memo::forget();
    abi::replace_map_value(MapType::RequestHeaders, name, value)
}

/// Removes a request header; what a [`RequestMemo`] remembered is forgotten.
///
/// # Errors
/// The host's status.
pub fn remove_request_header(name: &str) -> Result<(), Status> {
    memo::forget();
    abi::remove_map_value(MapType::RequestHeaders, name)
}

/// While alive, property reads (and the monotonic clock) through this module are asked of the
/// host once and remembered (the `meshguard` bundle holds one around its policies, so policies
/// that read the same property, e.g. the route's cluster, share one host call; request headers
/// are not remembered, see `memo.rs`). Writes through this module and
/// [`clear_route_cache`] forget what was remembered (a rerouted request has a new cluster).
/// Outside a scope nothing is remembered: a single filter reads each value once anyway.
#[derive(Debug)]
pub struct RequestMemo(());

impl RequestMemo {
    /// Starts remembering (until the value is dropped).
    pub fn start() -> Self {
        memo::set_active(true);
        Self(())
    }
}

impl Drop for RequestMemo {
    fn drop(&mut self) {
        memo::set_active(false);
    }
}

/// Every value of a request header, in order. Envoy's single-value getter returns only the
/// first value of a repeated header; a policy that reads `baggage` or `x-forwarded-for` must
/// see them all.
pub fn request_header_values(name: &str) -> Vec<Vec<u8>> {
    match abi::get_map_pairs(MapType::RequestHeaders) {
        Ok(pairs) => values_of(pairs, name),
        Err(_) => Vec::new(),
    }
}

/// The first value of a response header.
pub fn response_header(name: &str) -> Option<Vec<u8>> {
    abi::get_map_value(MapType::ResponseHeaders, name)
        .ok()
        .flatten()
}

/// The first value of a response trailer.
pub fn response_trailer(name: &str) -> Option<Vec<u8>> {
    abi::get_map_value(MapType::ResponseTrailers, name)
        .ok()
        .flatten()
}

/// Values of `name` (ASCII case-insensitive) in a header list, in order.
pub fn values_of(pairs: abi::HeaderPairs, name: &str) -> Vec<Vec<u8>> {
    pairs
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v)
        .collect()
}

/// True when the request's `content-type` is gRPC (call in `on_http_request_headers`).
pub fn is_grpc_request() -> bool {
    request_header("content-type").is_some_and(|v| is_grpc_content_type(&v))
}

/// Sends a rejection as a local reply.
///
/// gRPC requests get a trailers-only response: HTTP 200, `grpc-status` from the rejection and
/// `grpc-message` = body (Envoy builds it from the gRPC status it is given). Other requests get
/// `http_status`, the body as `text/plain` and `retry-after` when the rejection has one. The
/// response code details name the filter and reason.
///
/// # Errors
/// The host's status if it refused the reply (e.g. response headers were already sent).
pub fn send_rejection(rejection: &Rejection, grpc: bool) -> Result<(), Status> {
    let details = sanitize_details(&rejection.details);
    if grpc {
        return abi::send_local_response(
            u32::from(rejection.http_status),
            &details,
            rejection.body.as_bytes(),
            &[],
            i32::from(rejection.grpc_status.code()),
        );
    }
    let retry_after = rejection.retry_after_header();
    let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"text/plain")];
    if let Some(v) = retry_after.as_deref() {
        headers.push(("retry-after", v.as_bytes()));
    }
    for (k, v) in &rejection.headers {
        headers.push((k.as_str(), v.as_bytes()));
    }
    abi::send_local_response(
        u32::from(rejection.http_status),
        &details,
        rejection.body.as_bytes(),
        &headers,
        -1,
    )
}

/// Envoy replaces whitespace in response code details; we do it first so what the policy
/// chose is what the access log shows.
fn sanitize_details(details: &str) -> String {
    details
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// Asks Envoy to recompute the route after a request header changed (`clear_route_cache`
/// foreign function), so routing follows the new header.
///
/// # Errors
/// `NOT_FOUND` if the host has no such function (not Envoy), or the host's status.
pub fn clear_route_cache() -> Result<(), Status> {
    memo::forget();
    abi::call_foreign_function("clear_route_cache", &[]).map(|_| ())
}

/// The value of `xds.route_metadata.filter_metadata.meshguard.<filter>` for the request's
/// route (`None` when absent), for [`meshguard_policy::per_route`].
pub fn route_metadata(filter: &str) -> Option<Vec<u8>> {
    property(&[
        "xds",
        "route_metadata",
        "filter_metadata",
        "meshguard",
        filter,
    ])
}

/// Records a filter's decision for this request as Envoy filter state `wasm.meshguard.<filter>`
/// (readable in access logs as `%FILTER_STATE(wasm.meshguard.<filter>:PLAIN)%`), e.g.
/// `rejected reason=overloaded class=critical worker_lease=12 threshold=10 worker_inflight=12`.
/// One host call, so filters record only decisions that are not "admitted as usual" (no
/// filter state means the filter let the request through untouched). Failures are ignored:
/// observability never fails a request.
pub fn record_decision(filter: &str, decision: &str) {
    let key = format!("meshguard.{filter}");
    let _ = abi::set_property(&[key.as_str()], decision.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_collects_every_value_in_order() {
        let pairs = vec![
            (b"baggage".to_vec(), b"a=1".to_vec()),
            (b"x".to_vec(), b"y".to_vec()),
            (b"Baggage".to_vec(), b"b=2".to_vec()),
            (b"baggage".to_vec(), vec![0xff]),
        ];
        assert_eq!(
            values_of(pairs, "baggage"),
            vec![b"a=1".to_vec(), b"b=2".to_vec(), vec![0xff]]
        );
    }

    #[test]
    fn details_have_no_spaces() {
        assert_eq!(
            sanitize_details("meshguard load_shed\t1"),
            "meshguard_load_shed_1"
        );
    }
}

#[cfg(test)]
mod memo_tests {
    use super::*;
    use crate::memo::{cached, forget};

    #[test]
    fn a_scope_asks_the_host_once_per_name_and_forgets_on_writes() {
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Some(b"v".to_vec())
        };
        // Outside a scope: every read goes to the host.
        cached(&["a"], read);
        cached(&["a"], read);
        assert_eq!(reads.get(), 2);
        {
            let _scope = RequestMemo::start();
            assert_eq!(cached(&["a"], read), Some(b"v".to_vec()));
            cached(&["a"], read);
            assert_eq!(reads.get(), 3, "remembered within the scope");
            cached(&["b"], read);
            assert_eq!(reads.get(), 4, "another path is another value");
            forget();
            cached(&["a"], read);
            assert_eq!(reads.get(), 5, "a write forgets");
        }
        cached(&["a"], read);
        assert_eq!(reads.get(), 6, "the scope ended");
    }

    #[test]
    fn names_past_the_bound_are_read_from_the_host_every_time() {
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Some(b"v".to_vec())
        };
        let _scope = RequestMemo::start();
        let names: Vec<String> = (0..=crate::memo::MAX_NAMES)
            .map(|i| format!("h{i}"))
            .collect();
        for n in &names {
            cached(&[n], read);
        }
        assert_eq!(reads.get(), names.len());
        // Remembered: the first MAX_NAMES names; the one past the bound is asked again.
        assert_eq!(cached(&["h0"], read), Some(b"v".to_vec()));
        assert_eq!(reads.get(), names.len());
        let last = &names[crate::memo::MAX_NAMES];
        assert_eq!(cached(&[last], read), Some(b"v".to_vec()));
        assert_eq!(reads.get(), names.len() + 1);
    }
}
