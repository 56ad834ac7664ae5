//! Just enough protobuf for Envoy's wire formats that cross the ABI: foreign-function
//! arguments (`SetEnvoyFilterStateArguments`), gRPC targets (`GrpcService`), and the messages
//! returned by properties (`Metadata`, `Struct`, `Value`, `Node`).

use serde_json::Value as Json;

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Parses a message into (field number, length-delimited bytes or varint); `None` if malformed.
fn parse(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return None;
        }
        let f = match wire {
            0 => Field::Varint(read_varint(buf, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|p| *p <= buf.len())?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(read_varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let bytes = buf.get(pos..end)?;
                pos = end;
                Field::Bytes(bytes)
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= buf.len())?;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((field, f));
    }
    Some(out)
}

enum Field<'a> {
    Varint(#[allow(dead_code)] u64),
    Fixed,
    Bytes(&'a [u8]),
}

/// `SetEnvoyFilterStateArguments { string path = 1; string value = 2; LifeSpan span = 3; }`.
pub(crate) fn parse_filter_state_args(buf: &[u8]) -> (String, Vec<u8>) {
    let mut path = String::new();
    let mut value = Vec::new();
    for (f, v) in parse(buf).unwrap_or_default() {
        match (f, v) {
            (1, Field::Bytes(b)) => path = String::from_utf8_lossy(b).into_owned(),
            (2, Field::Bytes(b)) => value = b.to_vec(),
            _ => {}
        }
    }
    (path, value)
}

/// `GrpcService.envoy_grpc.cluster_name`, when `buf` parses as a `GrpcService` (Envoy tries
/// that first and falls back to treating the bytes as a cluster name).
pub(crate) fn grpc_service_cluster(buf: &[u8]) -> Option<String> {
    if buf.is_empty() {
        return None;
    }
    let fields = parse(buf)?;
    let mut cluster = String::new();
    for (f, v) in fields {
        if let (1, Field::Bytes(inner)) = (f, v) {
            for (g, w) in parse(inner)? {
                if let (1, Field::Bytes(name)) = (g, w) {
                    cluster = String::from_utf8_lossy(name).into_owned();
                }
            }
        }
    }
    Some(cluster)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// `google.protobuf.Value`.
pub(crate) fn encode_value(v: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Json::Null => {
            put_varint(&mut out, 1 << 3);
            put_varint(&mut out, 0);
        }
        Json::Number(n) => {
            put_varint(&mut out, (2 << 3) | 1);
            out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
        }
        Json::String(s) => put_bytes(&mut out, 3, s.as_bytes()),
        Json::Bool(b) => {
            put_varint(&mut out, 4 << 3);
            put_varint(&mut out, u64::from(*b));
        }
        Json::Object(_) => put_bytes(&mut out, 5, &encode_struct(v)),
        Json::Array(items) => {
            let mut list = Vec::new();
            for i in items {
                put_bytes(&mut list, 1, &encode_value(i));
            }
            put_bytes(&mut out, 6, &list);
        }
    }
    out
}

/// `google.protobuf.Struct` from a JSON object (anything else encodes as an empty struct).
pub(crate) fn encode_struct(v: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    if let Json::Object(m) = v {
        for (k, val) in m {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, k.as_bytes());
            put_bytes(&mut entry, 2, &encode_value(val));
            put_bytes(&mut out, 1, &entry);
        }
    }
    out
}

/// `envoy.config.core.v3.Metadata` from `{"namespace": {struct}, ...}`.
pub(crate) fn encode_metadata(v: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    if let Json::Object(m) = v {
        for (ns, s) in m {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, ns.as_bytes());
            put_bytes(&mut entry, 2, &encode_struct(s));
            put_bytes(&mut out, 1, &entry);
        }
    }
    out
}

/// `envoy.config.core.v3.Node { id = 1; cluster = 2; metadata = 3 (Struct) }`.
pub(crate) fn encode_node(id: &str, cluster: &str, metadata: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, id.as_bytes());
    put_bytes(&mut out, 2, cluster.as_bytes());
    if metadata.is_object() {
        put_bytes(&mut out, 3, &encode_struct(metadata));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_target_parsing() {
        assert_eq!(
            grpc_service_cluster(b"rls"),
            None,
            "a plain cluster name is not a GrpcService"
        );
        let mut inner = Vec::new();
        put_bytes(&mut inner, 1, b"ratelimit");
        let mut svc = Vec::new();
        put_bytes(&mut svc, 1, &inner);
        assert_eq!(grpc_service_cluster(&svc).as_deref(), Some("ratelimit"));
    }

    #[test]
    fn filter_state_args() {
        let mut a = Vec::new();
        put_bytes(&mut a, 1, b"envoy.tcp_proxy.cluster");
        put_bytes(&mut a, 2, b"blue");
        assert_eq!(
            parse_filter_state_args(&a),
            ("envoy.tcp_proxy.cluster".into(), b"blue".to_vec())
        );
    }
}
