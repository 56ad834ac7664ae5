//! The public stream API: what the client and the upstream send, and the verdict for each.

use super::Envoy;
use super::filter::D;
use super::stream::Verdict;
use crate::StreamId;
use crate::error::{Error, Result};
use crate::headers::HeaderMap;

impl Envoy {
    // === public stream operations ===

    /// Sends request headers from the client. The first call on a stream creates the filter
    /// context (`on_context_create`) and runs `on_request_headers`.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown stream or headers sent twice.
    pub fn send_request_headers(
        &mut self,
        id: StreamId,
        headers: impl Into<HeaderMap>,
        end_stream: bool,
    ) -> Result<Verdict> {
        let s = self.get_stream(id)?;
        if s.req.headers_seen {
            return Err(Error::Usage(format!(
                "request headers already sent on stream {}",
                id.0
            )));
        }
        self.start_request(id.0, headers.into(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Req))
    }

    /// Sends a request body chunk from the client.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown stream, or before headers / after the end of the request.
    pub fn send_request_body(
        &mut self,
        id: StreamId,
        data: impl AsRef<[u8]>,
        end_stream: bool,
    ) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Req)? {
            return Ok(v);
        }
        self.process_data(id.0, D::Req, data.as_ref().to_vec(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Req))
    }

    /// Sends request trailers from the client (ends the request).
    ///
    /// # Errors
    /// As [`Envoy::send_request_body`].
    pub fn send_request_trailers(
        &mut self,
        id: StreamId,
        trailers: impl Into<HeaderMap>,
    ) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Req)? {
            return Ok(v);
        }
        self.process_trailers(id.0, D::Req, trailers.into());
        self.drain();
        Ok(self.verdict(id.0, D::Req))
    }

    /// Sends response headers from the upstream. The request headers must have been forwarded.
    ///
    /// # Errors
    /// [`Error::Usage`] when the request was never forwarded or headers were already sent.
    pub fn send_response_headers(
        &mut self,
        id: StreamId,
        headers: impl Into<HeaderMap>,
        end_stream: bool,
    ) -> Result<Verdict> {
        if self.finished.contains_key(&id.0) {
            return Ok(self.verdict(id.0, D::Resp));
        }
        let s = self.get_stream(id)?;
        if s.ended() || s.local_response {
            return Ok(self.verdict(id.0, D::Resp));
        }
        if s.rec.upstream.headers.is_none() {
            return Err(Error::Usage(format!(
                "stream {}: the request was not forwarded upstream",
                id.0
            )));
        }
        if s.resp.headers_seen {
            return Err(Error::Usage(format!(
                "response headers already sent on stream {}",
                id.0
            )));
        }
        self.upstream_response_headers(id.0, headers.into(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Resp))
    }

    /// Sends a response body chunk from the upstream.
    ///
    /// # Errors
    /// As [`Envoy::send_request_body`].
    pub fn send_response_body(
        &mut self,
        id: StreamId,
        data: impl AsRef<[u8]>,
        end_stream: bool,
    ) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Resp)? {
            return Ok(v);
        }
        self.process_data(id.0, D::Resp, data.as_ref().to_vec(), end_stream);
        self.drain();
        Ok(self.verdict(id.0, D::Resp))
    }

    /// Sends response trailers from the upstream (ends the response).
    ///
    /// # Errors
    /// As [`Envoy::send_request_body`].
    pub fn send_response_trailers(
        &mut self,
        id: StreamId,
        trailers: impl Into<HeaderMap>,
    ) -> Result<Verdict> {
        if let Some(v) = self.precheck(id, D::Resp)? {
            return Ok(v);
        }
        self.process_trailers(id.0, D::Resp, trailers.into());
        self.drain();
        Ok(self.verdict(id.0, D::Resp))
    }

    /// The client resets the stream (on_log, on_done, on_delete follow).
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown stream.
    pub fn reset_stream(&mut self, id: StreamId) -> Result<()> {
        self.get_stream(id)?;
        self.reset(id.0, "downstream_remote_disconnect".into());
        self.drain();
        Ok(())
    }

    /// The current verdict for a stream's request (`D::Req`) or response direction.
    pub fn request_verdict(&self, id: StreamId) -> Option<Verdict> {
        self.stream(id)?;
        Some(self.verdict(id.0, D::Req))
    }

    /// The current verdict for a stream's response direction.
    pub fn response_verdict(&self, id: StreamId) -> Option<Verdict> {
        self.stream(id)?;
        Some(self.verdict(id.0, D::Resp))
    }

    fn precheck(&self, id: StreamId, d: D) -> Result<Option<Verdict>> {
        // A finished stream (local reply, reset) ignores what the peer still sends, as Envoy
        // does; the verdict says what happened.
        if self.finished.contains_key(&id.0) {
            return Ok(Some(self.verdict(id.0, d)));
        }
        let s = self.get_stream(id)?;
        if s.ended() || (d == D::Req && s.local_response) {
            return Ok(Some(self.verdict(id.0, d)));
        }
        let dir = if d == D::Req { &s.req } else { &s.resp };
        if !dir.headers_seen {
            return Err(Error::Usage(format!(
                "stream {}: {} headers not sent yet",
                id.0,
                d.name()
            )));
        }
        if dir.eos_seen {
            return Err(Error::Usage(format!(
                "stream {}: the {} already ended",
                id.0,
                d.name()
            )));
        }
        Ok(None)
    }

    pub(crate) fn verdict(&self, id: u64, d: D) -> Verdict {
        let (rec, dir) = match self.streams.get(&id) {
            Some(s) => (&s.rec, Some(if d == D::Req { &s.req } else { &s.resp })),
            None => match self.finished.get(&id) {
                Some(r) => (r, None),
                None => return Verdict::Reset("unknown stream".into()),
            },
        };
        if let Some(lr) = &rec.local_reply {
            return Verdict::LocalReply(lr.clone());
        }
        if let Some(r) = &rec.reset {
            return Verdict::Reset(r.clone());
        }
        let Some(dir) = dir else {
            return Verdict::Forwarded;
        };
        let paused = dir.headers_paused
            || dir.buffering
            || dir.trailers_paused
            || !dir.held.is_empty()
            || !dir.headers_forwarded;
        if paused {
            Verdict::Paused
        } else {
            Verdict::Forwarded
        }
    }
}
