//! A byte-exact HTTP/1.1 client.
//!
//! HTTP libraries normalise exactly what a transparency test must control: header-name case,
//! non-UTF-8 values, chunk boundaries, `expect: 100-continue`. This client writes the bytes it
//! is given and parses what comes back (via `httparse` for the head; chunked decoding with
//! trailers by hand, since no small crate exposes trailers byte-exactly).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::response::Response;

/// Reads are bounded so a test never hangs on a stuck server.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    async fn fill(&mut self) -> Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .context("read timed out")??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response head (interim or final). Returns (status, headers).
    async fn read_head(&mut self) -> Result<(u16, Vec<(String, Vec<u8>)>)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 256];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf)? {
                httparse::Status::Complete(len) => {
                    let status = resp.code.context("status")?;
                    let headers = resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), h.value.to_vec()))
                        .collect();
                    self.buf.drain(..len);
                    return Ok((status, headers));
                }
                httparse::Status::Partial => {
                    if self.fill().await? == 0 {
                        bail!("connection closed before a complete response head");
                    }
                }
            }
        }
    }

    /// Reads interim `1xx` heads until a final one; returns the interim statuses seen when
    /// the next head is final (it stays buffered). Use after sending headers with
    /// `expect: 100-continue`.
    pub async fn read_interim(&mut self) -> Result<u16> {
        let (status, _) = self.read_head().await?;
        if status >= 200 {
            bail!("expected an interim response, got {status}");
        }
        Ok(status)
    }

    /// Reads a complete response. `head_request`: the request was HEAD (no body follows).
    pub async fn read_response(&mut self, head_request: bool) -> Result<Response> {
        let mut interim = Vec::new();
        let (status, headers) = loop {
            let (status, headers) = self.read_head().await?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            break (status, headers);
        };
        let mut resp = Response {
            interim,
            status,
            headers,
            ..Response::default()
        };
        let no_body = head_request || status == 204 || status == 304 || status < 200;
        if no_body {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        if chunked {
            self.read_chunked(&mut resp).await?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = std::str::from_utf8(len)?.trim().parse()?;
            while self.buf.len() < len {
                if self.fill().await? == 0 {
                    bail!(
                        "connection closed {} bytes into a {len}-byte body",
                        self.buf.len()
                    );
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill().await? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    async fn line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill().await? == 0 {
                bail!("connection closed inside chunked framing");
            }
        }
    }

    async fn read_chunked(&mut self, resp: &mut Response) -> Result<()> {
        loop {
            let line = self.line().await?;
            let size_text = std::str::from_utf8(&line)?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("chunk size {size_text:?}"))?;
            if size == 0 {
                loop {
                    let line = self.line().await?;
                    if line.is_empty() {
                        return Ok(());
                    }
                    let colon = line
                        .iter()
                        .position(|&b| b == b':')
                        .context("trailer line")?;
                    let name = String::from_utf8(line[..colon].to_vec())?;
                    let value = line[colon + 1..].trim_ascii().to_vec();
                    resp.trailers.push((name, value));
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill().await? == 0 {
                    bail!("connection closed inside a chunk");
                }
            }
            resp.body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// True when the server closed the connection (reads EOF) within `timeout`.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(timeout, self.stream.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// Builds a request head: `METHOD path HTTP/1.1`, the given header lines verbatim, then CRLF.
pub fn head(method: &str, path: &str, headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(k);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Encodes `parts` as a chunked body, with optional trailers.
pub fn chunked(parts: &[&[u8]], trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (k, v) in trailers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One request on a fresh connection: sends `request`, reads one response.
pub async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Result<Response> {
    let mut c = Conn::connect(addr).await?;
    c.send(request).await?;
    let head_request = request.starts_with(b"HEAD ");
    c.read_response(head_request).await
}
