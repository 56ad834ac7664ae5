//! Per-request knobs in request headers.

use std::time::Duration;

use http::Method;
use meshguard_upstream::{CHUNKS, UpstreamConfig, knob, pattern_body};
use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn status_and_delay() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let reply = get(proto, up.addr(), "/", &[(knob::STATUS, "503")]).await;
        assert_eq!(reply.status, 503);
        // The body is still the echo document.
        assert_eq!(reply.doc().method, "GET");

        let begun = Instant::now();
        let reply = get(proto, up.addr(), "/", &[(knob::DELAY_MS, "150")]).await;
        assert_eq!(reply.status, 200);
        let elapsed = begun.elapsed();
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        assert!(elapsed < WAIT, "{elapsed:?}");
    }
    let stats = drained(&up).await;
    assert_eq!(stats.statuses[&503], 2);
    assert_eq!(stats.statuses[&200], 2);
}

#[tokio::test]
async fn body_size_and_chunking() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let reply = get(proto, up.addr(), "/", &[(knob::BODY_SIZE, "100000")]).await;
        assert_eq!(reply.body, pattern_body(100_000));
        assert_eq!(reply.header("content-length"), Some("100000"));
        assert_eq!(
            reply.header("content-type"),
            Some("application/octet-stream")
        );

        let reply = get(
            proto,
            up.addr(),
            "/",
            &[(knob::BODY_SIZE, "1000"), (knob::CHUNKED, "1")],
        )
        .await;
        assert_eq!(reply.body, pattern_body(1000));
        assert_eq!(reply.header("content-length"), None);
        assert!(reply.data_frames >= CHUNKS, "{} frames", reply.data_frames);
        if proto == Proto::H1 {
            assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        }

        let reply = get(proto, up.addr(), "/", &[(knob::BODY_SIZE, "0")]).await;
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("content-length"), Some("0"));
    }
    // The wire form of a chunked HTTP/1.1 response: 4 chunks of 3, 3, 3, 1 bytes.
    let raw = raw_exchange(
        up.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nx-upstream-body-size: 10\r\nx-upstream-chunked: 1\r\n\r\n",
        |b| b.ends_with(b"0\r\n\r\n"),
    )
    .await;
    let text = String::from_utf8(raw).unwrap();
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n3\r\n012\r\n3\r\n345\r\n3\r\n678\r\n1\r\n9\r\n0\r\n\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn echo_body_is_byte_exact() {
    let up = start(UpstreamConfig::default()).await;
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    for proto in BOTH {
        let request = request(proto, up.addr(), Method::POST, "/")
            .header(knob::ECHO, "body")
            .body(full(body.clone()))
            .unwrap();
        let reply = exchange(proto, up.addr(), request).await;
        assert_eq!(reply.body, body);
    }
}

#[tokio::test]
async fn response_headers_and_trailers() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let request = request(proto, up.addr(), Method::GET, "/")
            .header(knob::HEADER, "x-a: 1")
            .header(knob::HEADER, "x-b: two")
            .header(knob::HEADER, "x-a: 3")
            .header(
                knob::HEADER,
                http::HeaderValue::from_bytes(b"x-raw: \xfe\xff").unwrap(),
            )
            .header(knob::TRAILER, "x-t: 1")
            .header(knob::TRAILER, "x-t: 2")
            .header(knob::TRAILER, "x-u: 3")
            // hyper sends HTTP/1.1 trailers only to clients that accept them.
            .header("te", "trailers")
            .body(empty())
            .unwrap();
        let reply = exchange(proto, up.addr(), request).await;
        let values: Vec<&[u8]> = reply
            .headers
            .get_all("x-a")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(values, [b"1".as_slice(), b"3"]);
        assert_eq!(reply.header("x-b"), Some("two"));
        assert_eq!(reply.headers["x-raw"].as_bytes(), b"\xfe\xff");
        let trailers = reply.trailers.as_ref().expect("trailers");
        let t: Vec<&[u8]> = trailers
            .get_all("x-t")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(t, [b"1".as_slice(), b"2"]);
        assert_eq!(trailers["x-u"], "3");
        // The echo document is intact.
        assert_eq!(
            serde_json::from_slice::<meshguard_upstream::EchoDocument>(&reply.body)
                .unwrap()
                .method,
            "GET"
        );
        if proto == Proto::H1 {
            assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        }
    }
}

#[tokio::test]
async fn head_204_304_have_no_body() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let request = request(proto, up.addr(), Method::HEAD, "/")
            .header(knob::BODY_SIZE, "1234")
            .body(empty())
            .unwrap();
        let reply = exchange(proto, up.addr(), request).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length"), Some("1234"));
        assert!(reply.body.is_empty());

        for status in ["204", "304"] {
            let reply = get(proto, up.addr(), "/", &[(knob::STATUS, status)]).await;
            assert_eq!(reply.status.as_str(), status);
            assert!(reply.body.is_empty());
            assert_eq!(reply.header("content-length"), None);
            assert_eq!(reply.header("content-type"), None);
        }
    }
    // On the wire: a 204 is followed directly by the next response on the connection.
    let raw = raw_exchange(
        up.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nx-upstream-status: 204\r\n\r\nHEAD / HTTP/1.1\r\nhost: x\r\nx-upstream-body-size: 7\r\n\r\n",
        |b| b.windows(9).filter(|w| *w == b"HTTP/1.1 ").count() == 2 && b.ends_with(b"\r\n\r\n"),
    )
    .await;
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
    let second = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(second.contains("content-length: 7\r\n"), "{text}");
    assert!(second.ends_with("\r\n\r\n"), "{text}");
}

#[tokio::test]
async fn malformed_knob_is_a_400() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let reply = get(proto, up.addr(), "/", &[(knob::RESET, "sometime")]).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.header(knob::KNOB_ERROR), Some("1"));
        assert!(String::from_utf8_lossy(&reply.body).contains(knob::RESET));
    }
}
