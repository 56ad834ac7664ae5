//! Properties (`proxy_get_property`) with Envoy's names, encodings and availability.
//!
//! Encodings (Envoy `serializeValue`): strings and bytes raw; int, uint, duration and timestamp
//! as 8 little-endian bytes (durations and timestamps in ns); double as 8 bytes; bool as 1
//! byte; maps as a pairs buffer of serialized keys and values; lists as pairs with empty
//! values; messages as serialized protobuf. Paths are `\0`-separated segments, navigated by map
//! key, message field name or list index.
//!
//! Availability: `request.*` header attributes only while the request headers are live (in
//! their callback or paused) or in `on_log`; `response.code` once a response exists;
//! `request.duration` and `response.backend_latency` once complete; `upstream.*` once a
//! request was forwarded; nothing stream-related (and no `set_property`) on a root context.
//! Any other top-level name is filter state `wasm.<name>` (what `set_property` writes).

use crate::headers::HeaderMap;
use crate::host::HostState;
use crate::stream_state::HttpStream;

/// A typed property value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Prop {
    Str(String),
    Bytes(Vec<u8>),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Duration(i64),
    Timestamp(i64),
    Map(Vec<(String, Prop)>),
    /// A protobuf message: its bytes, and its fields for navigation.
    Msg(Vec<u8>, Vec<(String, Prop)>),
}

impl Prop {
    pub fn serialize(&self) -> Vec<u8> {
        match self {
            Prop::Str(s) => s.as_bytes().to_vec(),
            Prop::Bytes(b) | Prop::Msg(b, _) => b.clone(),
            Prop::Int(i) | Prop::Duration(i) | Prop::Timestamp(i) => i.to_le_bytes().to_vec(),
            Prop::Uint(u) => u.to_le_bytes().to_vec(),
            Prop::Bool(b) => vec![u8::from(*b)],
            Prop::Map(entries) => {
                let ser: Vec<(Vec<u8>, Vec<u8>)> = entries
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.serialize()))
                    .collect();
                crate::headers::serialize_pairs(
                    ser.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                )
            }
        }
    }

    fn child(self, seg: &str) -> Option<Prop> {
        match self {
            Prop::Map(entries) | Prop::Msg(_, entries) => {
                entries.into_iter().find(|(k, _)| k == seg).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// JSON (a Struct / Value in Envoy) as a CEL-like value: objects become maps.
fn json_prop(v: &serde_json::Value) -> Prop {
    match v {
        serde_json::Value::Object(m) => {
            Prop::Map(m.iter().map(|(k, v)| (k.clone(), json_prop(v))).collect())
        }
        serde_json::Value::String(s) => Prop::Str(s.clone()),
        serde_json::Value::Bool(b) => Prop::Bool(*b),
        serde_json::Value::Number(n) => {
            Prop::Bytes(n.as_f64().unwrap_or(0.0).to_le_bytes().to_vec())
        }
        serde_json::Value::Null => Prop::Bytes(Vec::new()),
        serde_json::Value::Array(a) => Prop::Map(
            a.iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), json_prop(v)))
                .collect(),
        ),
    }
}

fn metadata_prop(v: &serde_json::Value) -> Prop {
    let ns: Vec<(String, Prop)> = match v {
        serde_json::Value::Object(m) => m.iter().map(|(k, s)| (k.clone(), json_prop(s))).collect(),
        _ => Vec::new(),
    };
    Prop::Msg(
        crate::proto::encode_metadata(v),
        vec![("filter_metadata".into(), Prop::Map(ns))],
    )
}

fn headers_prop(m: &HeaderMap) -> Prop {
    let mut out: Vec<(String, Prop)> = Vec::new();
    for (k, v) in m.iter() {
        let v = String::from_utf8_lossy(v).into_owned();
        match out.iter_mut().find(|(ek, _)| ek == k) {
            Some((_, Prop::Str(s))) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => out.push((k.to_string(), Prop::Str(v))),
        }
    }
    Prop::Map(out)
}

fn port_of(addr: &str) -> Option<i64> {
    addr.rsplit(':').next().and_then(|p| p.parse().ok())
}

/// Envoy `Grpc::Utility::httpToGrpcStatus`.
pub(crate) fn http_to_grpc_status(code: u32) -> u32 {
    match code {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

fn grpc_status_of(s: &HttpStream) -> Option<u32> {
    let from = |m: &HeaderMap| m.get("grpc-status").and_then(|v| v.parse::<u32>().ok());
    s.resp_trailers
        .as_ref()
        .and_then(from)
        .or_else(|| {
            if s.has_response {
                from(&s.resp_headers)
            } else {
                None
            }
        })
        .or_else(|| s.info.response_code.map(http_to_grpc_status))
}

fn request_attr(st: &HostState, s: &HttpStream, attr: &str) -> Option<Prop> {
    let info = &s.info;
    let now = st.world().now();
    match attr {
        "time" => return Some(Prop::Timestamp(info.start_wall_ns as i64)),
        "protocol" => return Some(Prop::Str(st.cfg.protocol.clone())),
        "duration" => {
            return info
                .request_complete_ns
                .map(|t| Prop::Duration(t.saturating_sub(info.start_ns) as i64));
        }
        "size" => return Some(Prop::Int(info.request_body_bytes as i64)),
        "total_size" => {
            return Some(Prop::Int(
                (info.request_body_bytes + info.request_headers_bytes) as i64,
            ));
        }
        _ => {}
    }
    let _ = now;
    if !(s.req_headers_live || s.access_log_phase) {
        return None;
    }
    let h = &s.req_headers;
    let path = h.get(":path").unwrap_or("");
    let s_ = |v: Option<&str>| v.map(|v| Prop::Str(v.to_string()));
    match attr {
        "path" => s_(h.get(":path")),
        "url_path" => Some(Prop::Str(path.split('?').next().unwrap_or("").to_string())),
        "query" => Some(Prop::Str(
            path.split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .to_string(),
        )),
        "host" => s_(h.get(":authority")),
        "scheme" => Some(Prop::Str(h.get(":scheme").unwrap_or("http").to_string())),
        "method" => s_(h.get(":method")),
        "referer" => s_(h.get("referer")),
        "useragent" => s_(h.get("user-agent")),
        "id" => s_(h.get("x-request-id")),
        "headers" => Some(headers_prop(h)),
        _ => None,
    }
}

fn response_attr(s: &HttpStream, attr: &str) -> Option<Prop> {
    let info = &s.info;
    match attr {
        "code" => info.response_code.map(|c| Prop::Int(i64::from(c))),
        "code_details" => info.response_code_details.clone().map(Prop::Str),
        "flags" => Some(Prop::Int(info.response_flags as i64)),
        "grpc_status" => grpc_status_of(s).map(|c| Prop::Int(i64::from(c))),
        "headers" => (s.resp_headers_live || (s.access_log_phase && s.has_response))
            .then(|| headers_prop(&s.resp_headers)),
        "trailers" => (s.resp_trailers_live || s.access_log_phase).then(|| {
            s.resp_trailers
                .as_ref()
                .map(headers_prop)
                .unwrap_or(Prop::Map(Vec::new()))
        }),
        "size" => Some(Prop::Int(info.response_body_bytes as i64)),
        "total_size" => Some(Prop::Int(
            (info.response_body_bytes + info.response_headers_bytes) as i64,
        )),
        "backend_latency" => match (
            info.upstream_sent_ns,
            info.upstream_first_byte_ns,
            info.request_complete_ns,
        ) {
            (Some(a), Some(_), Some(end)) => Some(Prop::Duration(end.saturating_sub(a) as i64)),
            _ => None,
        },
        _ => None,
    }
}

fn route<'a>(st: &'a HostState, s: &HttpStream) -> Option<&'a crate::config::RouteSpec> {
    s.info.route_index.and_then(|i| st.cfg.routes.get(i))
}

fn xds_attr(st: &HostState, s: Option<&HttpStream>, attr: &str) -> Option<Prop> {
    let cfg = &st.cfg;
    match attr {
        "node" => {
            let n = &cfg.node;
            Some(Prop::Msg(
                crate::proto::encode_node(&n.id, &n.cluster, &n.metadata),
                vec![
                    ("id".into(), Prop::Str(n.id.clone())),
                    ("cluster".into(), Prop::Str(n.cluster.clone())),
                    ("metadata".into(), json_prop(&n.metadata)),
                ],
            ))
        }
        "listener_direction" => Some(Prop::Int(cfg.listener_direction)),
        "listener_metadata" => Some(metadata_prop(&serde_json::Value::Null)),
        "filter_chain_name" => Some(Prop::Str(String::new())),
        _ => {
            let s = s?;
            let r = route(st, s);
            match attr {
                "route_name" => r.map(|r| Prop::Str(r.name.clone())),
                "route_metadata" => r.map(|r| metadata_prop(&r.metadata)),
                "virtual_host_name" => r.map(|r| Prop::Str(r.virtual_host.clone())),
                "virtual_host_metadata" => r.map(|_| metadata_prop(&serde_json::Value::Null)),
                "cluster_name" => r.map(|r| Prop::Str(r.cluster.clone())),
                "cluster_metadata" => r
                    .and_then(|r| cfg.clusters.get(&r.cluster))
                    .map(|c| metadata_prop(&c.metadata)),
                "upstream_host_metadata" => s
                    .info
                    .upstream_address
                    .as_ref()
                    .map(|_| metadata_prop(&serde_json::Value::Null)),
                _ => None,
            }
        }
    }
}

fn addr_attr(addr: &str, attr: &str) -> Option<Prop> {
    match attr {
        "address" => Some(Prop::Str(addr.to_string())),
        "port" => port_of(addr).map(Prop::Int),
        _ => None,
    }
}

/// Resolves a `\0`-separated path. `Err(status)` mirrors Envoy (`NOT_FOUND` mostly).
pub(crate) fn get(st: &HostState, path: &[u8]) -> Result<Prop, crate::abi::Status> {
    use crate::abi::Status;
    let text = String::from_utf8_lossy(path);
    let mut segs = text.split('\0').collect::<Vec<_>>();
    if segs.last() == Some(&"") {
        segs.pop();
    }
    let Some((first, rest)) = segs.split_first() else {
        return Err(Status::NotFound);
    };
    let stream = st.streams.get(&st.ctx());
    let mut rest = rest.iter();
    let value = match *first {
        "plugin_name" => Prop::Str(st.cfg.plugin_name.clone()),
        "plugin_root_id" => Prop::Str(st.cfg.root_id.clone()),
        "plugin_vm_id" => Prop::Str(st.cfg.vm_id.clone()),
        "connection_id" => Prop::Uint(stream.ok_or(Status::NotFound)?.info.connection_id),
        "request" | "response" | "connection" | "upstream" | "source" | "destination" | "xds" => {
            let Some(attr) = rest.next() else {
                return Err(Status::SerializationFailure);
            };
            let found = match (*first, stream) {
                ("xds", s) => xds_attr(st, s, attr),
                (_, None) => None,
                ("request", Some(s)) => request_attr(st, s, attr),
                ("response", Some(s)) => response_attr(s, attr),
                ("connection", Some(s)) => match *attr {
                    "id" => Some(Prop::Uint(s.info.connection_id)),
                    "mtls" => Some(Prop::Bool(false)),
                    "requested_server_name" => Some(Prop::Str(String::new())),
                    _ => None,
                },
                ("upstream", Some(s)) => {
                    s.info
                        .upstream_address
                        .as_deref()
                        .and_then(|a| match *attr {
                            "local_address" => Some(Prop::Str("127.0.0.1:50000".into())),
                            "request_attempt_count" => Some(Prop::Int(1)),
                            _ => addr_attr(a, attr),
                        })
                }
                ("source", Some(_)) => addr_attr(&st.cfg.source_address, attr),
                ("destination", Some(_)) => addr_attr(&st.cfg.destination_address, attr),
                _ => None,
            };
            found.ok_or(Status::NotFound)?
        }
        "metadata" => stream
            .map(|_| metadata_prop(&serde_json::Value::Null))
            .ok_or(Status::NotFound)?,
        "filter_state" => {
            let s = stream.ok_or(Status::NotFound)?;
            Prop::Map(
                s.info
                    .filter_state
                    .iter()
                    .map(|(k, v)| (k.clone(), Prop::Bytes(v.clone())))
                    .collect(),
            )
        }
        name => {
            let s = stream.ok_or(Status::NotFound)?;
            let v = s
                .info
                .filter_state
                .get(&format!("wasm.{name}"))
                .ok_or(Status::NotFound)?;
            Prop::Bytes(v.clone())
        }
    };
    let mut value = value;
    for seg in rest {
        value = value.child(seg).ok_or(Status::NotFound)?;
    }
    Ok(value)
}
