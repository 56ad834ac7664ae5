//! The echo document reflects exactly what arrived.

use http::Method;
use http::header::HeaderValue;
use http_body_util::BodyExt;
use meshguard_upstream::{UpstreamConfig, decode_lossless, pattern_body, sha256_hex};

use crate::support::*;

#[tokio::test]
async fn document_reflects_method_uri_headers_and_body() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let request = request(proto, up.addr(), Method::POST, "/some/path?q=1&r=%20")
            .header("x-rep", "first")
            .header("x-other", "o")
            .header("x-rep", "second")
            .header(
                "x-bytes",
                HeaderValue::from_bytes(b"caf\xe9 \\ \t!").unwrap(),
            )
            .body(full("hello"))
            .unwrap();
        let reply = exchange(proto, up.addr(), request).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.header("content-length").unwrap(),
            reply.body.len().to_string()
        );
        let doc = reply.doc();
        assert_eq!(doc.method, "POST");
        match proto {
            Proto::H1 => {
                assert_eq!(doc.uri, "/some/path?q=1&r=%20");
                assert_eq!(doc.version, "HTTP/1.1");
                assert_eq!(
                    doc.header_values("host"),
                    [up.addr().to_string().into_bytes()]
                );
            }
            Proto::H2 => {
                assert_eq!(doc.uri, format!("http://{}/some/path?q=1&r=%20", up.addr()));
                assert_eq!(doc.version, "HTTP/2.0");
            }
        }
        // Repeated headers are separate entries, in received order, before later names.
        let names: Vec<&str> = doc.headers.iter().map(|(n, _)| n.as_str()).collect();
        let rep = names.iter().position(|n| *n == "x-rep").unwrap();
        assert_eq!(
            &names[rep..rep + 4],
            ["x-rep", "x-rep", "x-other", "x-bytes"]
        );
        assert_eq!(doc.headers[rep].1, "first");
        assert_eq!(doc.headers[rep + 1].1, "second");
        // A non-UTF-8 value survives byte for byte.
        assert_eq!(doc.headers[rep + 3].1, "caf\\xe9 \\\\ \\x09!");
        assert_eq!(
            decode_lossless(&doc.headers[rep + 3].1).unwrap(),
            b"caf\xe9 \\ \t!"
        );
        assert!(doc.trailers.is_empty());
        assert_eq!(doc.body_len, 5);
        assert_eq!(doc.body_sha256, sha256_hex(b"hello"));
    }
    let stats = drained(&up).await;
    assert_eq!((stats.received, stats.statuses[&200]), (2, 2));
}

#[tokio::test]
async fn large_body_is_read_fully() {
    let up = start(UpstreamConfig::default()).await;
    let body = pattern_body((1 << 20) + 12_345);
    for proto in BOTH {
        let request = request(proto, up.addr(), Method::PUT, "/big")
            .body(full(body.clone()))
            .unwrap();
        let doc = exchange(proto, up.addr(), request).await.doc();
        assert_eq!(doc.body_len, u64::try_from(body.len()).unwrap());
        assert_eq!(doc.body_sha256, sha256_hex(&body));
    }
}

#[tokio::test]
async fn chunked_request_body_with_trailers() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let (mut tx, rx) = http_body_util::channel::Channel::<bytes::Bytes>::new(4);
        let request = request(proto, up.addr(), Method::POST, "/stream")
            // HTTP/1.1 sends only the trailers announced here.
            .header("trailer", "x-checksum")
            .body(rx.boxed())
            .unwrap();
        let sender = tokio::spawn(async move {
            for part in ["one,", "two,", "three"] {
                tx.send_data(part.into()).await.unwrap();
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc"));
            trailers.append("x-checksum", HeaderValue::from_static("def"));
            tx.send_trailers(trailers).await.unwrap();
        });
        let doc = exchange(proto, up.addr(), request).await.doc();
        sender.await.unwrap();
        assert_eq!(doc.body_len, 13);
        assert_eq!(doc.body_sha256, sha256_hex(b"one,two,three"));
        assert_eq!(
            doc.trailers,
            [
                ("x-checksum".to_owned(), "abc".to_owned()),
                ("x-checksum".to_owned(), "def".to_owned())
            ]
        );
        if proto == Proto::H1 {
            assert_eq!(
                doc.header_values("transfer-encoding"),
                [b"chunked".to_vec()]
            );
        }
    }
}

#[tokio::test]
async fn expect_100_continue() {
    let up = start(UpstreamConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let interim = read_until(&mut stream, |b| b.ends_with(b"\r\n\r\n")).await;
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{interim:?}"
    );
    stream.write_all(b"data").await.unwrap();
    let response = read_until(&mut stream, |b| b.ends_with(b"}")).await;
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let json = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let doc: meshguard_upstream::EchoDocument = serde_json::from_str(json).unwrap();
    assert_eq!(doc.body_len, 4);
    assert_eq!(doc.header_values("expect"), [b"100-continue".to_vec()]);
}
