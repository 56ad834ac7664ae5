//! A response body played from a script of steps (data, pause, trailers, reset), so chunking,
//! streamed gRPC messages and mid-body resets are all the same mechanism. It also carries the
//! request's [`Lease`]: the worker slot is released when the body ends or is dropped.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::stats::Lease;

/// Pause before an injected after-headers / mid-body reset, so what precedes it is flushed to
/// the peer first (and a proxy in between forwards it) rather than lost with the connection.
pub const RESET_PAUSE: Duration = Duration::from_millis(20);

/// One step of a scripted body.
#[derive(Debug)]
pub(crate) enum Step {
    Data(Bytes),
    Pause(Duration),
    Trailers(HeaderMap),
    Reset,
}

/// The error a scripted reset yields; hyper turns it into a closed connection (HTTP/1.1) or
/// `RST_STREAM` (h2).
#[derive(Debug)]
pub struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset injected by meshguard-upstream")
    }
}

impl std::error::Error for InjectedReset {}

/// Response body type of the upstream.
#[derive(Debug, Default)]
pub struct ScriptBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// `Some(n)` when the response carries `content-length: n`.
    exact_len: Option<u64>,
    lease: Option<Lease>,
}

impl ScriptBody {
    pub(crate) fn new(steps: Vec<Step>, exact_len: Option<u64>) -> Self {
        Self {
            steps: steps.into(),
            sleep: None,
            exact_len,
            lease: None,
        }
    }

    /// A body that is sent in one piece with `content-length`.
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        let len = u64::try_from(data.len()).ok();
        let steps = if data.is_empty() {
            Vec::new()
        } else {
            vec![Step::Data(data)]
        };
        Self::new(steps, len)
    }

    pub(crate) fn with_lease(mut self, lease: Option<Lease>) -> Self {
        self.lease = lease;
        self
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = InjectedReset;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InjectedReset>>> {
        let this = &mut *self;
        loop {
            let Some(step) = this.steps.pop_front() else {
                this.lease = None;
                return Poll::Ready(None);
            };
            match step {
                Step::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Step::Trailers(trailers) => {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Step::Reset => {
                    this.steps.clear();
                    this.lease = None;
                    return Poll::Ready(Some(Err(InjectedReset)));
                }
                Step::Pause(duration) => {
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(duration)));
                    if sleep.as_mut().poll(cx).is_pending() {
                        this.steps.push_front(Step::Pause(duration));
                        return Poll::Pending;
                    }
                    this.sleep = None;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}
