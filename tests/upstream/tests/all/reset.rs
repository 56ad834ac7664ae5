//! `x-upstream-reset`: the client sees an error at the chosen point.

use meshguard_upstream::{UpstreamConfig, knob, pattern_body};

use crate::support::*;

fn reset_request(
    proto: Proto,
    up: &meshguard_upstream::Upstream,
    point: &str,
) -> http::Request<Body> {
    request(proto, up.addr(), http::Method::GET, "/")
        .header(knob::RESET, point)
        .header(knob::BODY_SIZE, "10000")
        .body(empty())
        .unwrap()
}

#[tokio::test]
async fn before_headers_gives_no_response() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        let result = send(
            proto,
            up.addr(),
            reset_request(proto, &up, "before-headers"),
        )
        .await;
        assert!(result.is_err(), "{proto:?}: got a response {result:?}");
    }
    // HTTP/1.1: the connection is closed with nothing written.
    let raw = raw_exchange(
        up.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nx-upstream-reset: before-headers\r\n\r\n",
        |_| false,
    )
    .await;
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    let stats = drained(&up).await;
    assert_eq!(stats.resets_injected, 3);
    assert!(stats.statuses.is_empty(), "{stats:?}");
}

#[tokio::test]
async fn after_headers_and_mid_body_cut_the_body() {
    let up = start(UpstreamConfig::default()).await;
    for proto in BOTH {
        for (point, expected) in [("after-headers", 0), ("mid-body", 5000)] {
            let response = send(proto, up.addr(), reset_request(proto, &up, point))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-length"], "10000");
            let (partial, error) = read(response).await.expect_err("body must fail");
            assert_eq!(partial.len(), expected, "{proto:?} {point}: {error}");
        }
    }
    let stats = drained(&up).await;
    assert_eq!(stats.resets_injected, 4);
    assert_eq!(stats.statuses[&200], 4);
}

#[tokio::test]
async fn h2_reset_is_per_stream_and_h1_closes_the_connection() {
    let up = start(UpstreamConfig::default()).await;
    // h2: RST_STREAM, the connection keeps serving other streams.
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(up.addr()).await.unwrap());
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    for point in ["before-headers", "after-headers", "mid-body"] {
        let outcome = match sender
            .send_request(reset_request(Proto::H2, &up, point))
            .await
        {
            Ok(response) => read(response).await.map(|_| ()).map_err(|(_, e)| e),
            Err(e) => Err(e),
        };
        let error = outcome.expect_err(point);
        let h2 = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<h2::Error>())
            .unwrap_or_else(|| panic!("{point}: not an h2 error: {error:?}"));
        assert!(h2.is_reset(), "{point}: {h2:?}");
        let ok = sender
            .send_request(
                request(Proto::H2, up.addr(), http::Method::GET, "/")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    assert!(!conn.is_finished());

    // HTTP/1.1: a reset after the headers closes the connection mid-response.
    let raw = raw_exchange(
        up.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nx-upstream-body-size: 100\r\nx-upstream-reset: mid-body\r\n\r\n",
        |_| false,
    )
    .await;
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: 100\r\n"), "{text}");
    assert_eq!(
        text.split("\r\n\r\n").nth(1),
        Some(&pattern_body(100)[..50]).map(|b| std::str::from_utf8(b).unwrap())
    );
}
