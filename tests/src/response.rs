//! A client-side view of one HTTP exchange, comparable across configurations.

use std::fmt;

/// What a client saw: interim responses, status, headers, body, trailers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// `1xx` statuses received before the final response (HTTP/1.1 client only).
    pub interim: Vec<u16>,
    /// Final status.
    pub status: u16,
    /// Header names as received (HTTP/2 names are lower case), values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// Trailers (HTTP/2 trailers, or chunked HTTP/1.1 trailers).
    pub trailers: Vec<(String, Vec<u8>)>,
}

/// Headers that legitimately differ between two runs of the same request.
pub const VOLATILE_HEADERS: &[&str] = &["date", "x-envoy-upstream-service-time"];

impl Response {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// First value of a header as text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// First value of a trailer as text.
    pub fn trailer_str(&self, name: &str) -> Option<String> {
        self.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A copy without the headers that differ run to run ([`VOLATILE_HEADERS`]) and with the
    /// per-request id that Envoy generates masked inside the upstream's echo document.
    pub fn normalized(&self) -> Self {
        let mut out = self.clone();
        out.headers
            .retain(|(k, _)| !VOLATILE_HEADERS.iter().any(|v| k.eq_ignore_ascii_case(v)));
        if let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&out.body)
            && let Some(headers) = doc.get_mut("headers").and_then(|h| h.as_array_mut())
        {
            for pair in headers.iter_mut() {
                if pair.get(0).and_then(|n| n.as_str()) == Some("x-request-id") {
                    pair[1] = serde_json::Value::from("<masked>");
                }
            }
            if let Ok(body) = serde_json::to_vec(&doc) {
                // Keep content-length consistent with the rewritten body: it is the
                // original length, which is already equal between runs of one request.
                out.body = body;
            }
        }
        out
    }
}

fn show(v: &[u8]) -> String {
    let mut s = String::new();
    for &b in v {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "interim {:?} status {}", self.interim, self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "  {k}: {}", show(v))?;
        }
        let body = if self.body.len() > 2048 {
            format!("<{} bytes> {}...", self.body.len(), show(&self.body[..512]))
        } else {
            show(&self.body)
        };
        writeln!(f, "  body: {body}")?;
        for (k, v) in &self.trailers {
            writeln!(f, "  trailer {k}: {}", show(v))?;
        }
        Ok(())
    }
}
