//! gRPC service `meshguard.test.v1.Echo` (see `proto/echo.proto`), served on the same port as
//! HTTP (requests with `content-type: application/grpc*`), plus a small client for tests.
//!
//! The server is hand-written (`grpc/server.rs`) rather than a tonic server so the shape of a failed
//! call is exact: HTTP 200 + headers, then trailers with `grpc-status` (never trailers-only).

use std::net::SocketAddr;

use anyhow::Context as _;
use tonic::transport::{Channel, Endpoint};
use tonic::{IntoRequest, Response, Status, Streaming};

pub(crate) mod server;

/// Generated protobuf types and the generated tonic client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("meshguard.test.v1");
}

pub use pb::{EchoRequest, EchoResponse, KeyValue};

/// Path of the unary method.
pub const UNARY_PATH: &str = "/meshguard.test.v1.Echo/Unary";
/// Path of the server-streaming method.
pub const SERVER_STREAM_PATH: &str = "/meshguard.test.v1.Echo/ServerStream";

/// Client of the `Echo` service over h2c (HTTP/2 prior knowledge, no TLS): point it at the
/// upstream directly or at an Envoy listener in front of it.
#[derive(Clone, Debug)]
pub struct EchoClient {
    inner: pb::echo_client::EchoClient<Channel>,
}

impl EchoClient {
    /// Connects to `http://addr`.
    ///
    /// # Errors
    ///
    /// The TCP connection or HTTP/2 handshake fails.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            .with_context(|| format!("gRPC connect to {addr}"))?;
        Ok(Self {
            inner: pb::echo_client::EchoClient::new(channel),
        })
    }

    /// Calls `Unary`. Pass a `tonic::Request` to add metadata (e.g. `x-upstream-*` knobs).
    ///
    /// # Errors
    ///
    /// The call's non-OK status.
    pub async fn unary(
        &mut self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.inner.unary(request).await
    }

    /// Calls `ServerStream`; read the messages from the returned stream.
    ///
    /// # Errors
    ///
    /// A non-OK status received before the first message (later ones end the stream).
    pub async fn server_stream(
        &mut self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<Response<Streaming<EchoResponse>>, Status> {
        self.inner.server_stream(request).await
    }

    /// Calls `ServerStream` and reads it to the end: the messages received, then the final
    /// status (`Ok` for grpc-status 0).
    pub async fn server_stream_all(
        &mut self,
        request: impl IntoRequest<EchoRequest>,
    ) -> (Vec<EchoResponse>, Result<(), Status>) {
        let mut stream = match self.server_stream(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), Err(status)),
        };
        let mut messages = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => return (messages, Ok(())),
                Err(status) => return (messages, Err(status)),
            }
        }
    }

    /// The generated client, for anything the wrapper does not cover.
    pub fn inner(&mut self) -> &mut pb::echo_client::EchoClient<Channel> {
        &mut self.inner
    }
}
