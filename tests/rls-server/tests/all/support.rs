//! Helpers shared by the test modules.

use std::time::Duration;

use meshguard_rls::proto::rls::RateLimitResponse;
use meshguard_rls::proto::rls::rate_limit_response::DescriptorStatus;
use meshguard_rls::proto::rls::rate_limit_response::rate_limit::Unit;
use meshguard_rls::proto::rls::rate_limit_service_client::RateLimitServiceClient;
use meshguard_rls::{Code, Limits, RedisServer, RlsServer, Storage};
use tonic::transport::Channel;

/// Generous bound for any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Client = RateLimitServiceClient<Channel>;

/// Which storage a scenario runs on; Redis keeps its server alive for the test.
pub enum Backing {
    Memory,
    Redis(RedisServer),
}

impl Backing {
    pub fn memory() -> Self {
        Self::Memory
    }

    /// A fresh `redis-server`; panics with the install hint when it is missing.
    pub fn redis() -> Self {
        Self::Redis(RedisServer::start().unwrap())
    }

    pub fn storage(&self) -> Storage {
        match self {
            Self::Memory => Storage::memory(),
            Self::Redis(redis) => Storage::redis(redis.url()),
        }
    }
}

pub async fn server(yaml: &str, backing: &Backing) -> RlsServer {
    RlsServer::start(Limits::from_yaml(yaml).unwrap(), backing.storage())
        .await
        .unwrap()
}

pub async fn client(server: &RlsServer) -> Client {
    meshguard_rls::client(server.addr()).await.unwrap()
}

/// One call; panics on a gRPC error.
pub async fn call(
    client: &mut Client,
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    hits_addend: u32,
) -> RateLimitResponse {
    let request = meshguard_rls::request(domain, descriptors, hits_addend);
    tokio::time::timeout(WAIT, client.should_rate_limit(request))
        .await
        .expect("no answer within WAIT")
        .unwrap()
        .into_inner()
}

/// The overall codes of `n` identical calls.
pub async fn codes(
    client: &mut Client,
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    n: usize,
) -> Vec<Code> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(call(client, domain, descriptors, 1).await.overall_code());
    }
    out
}

pub use Code::{Ok as OK, OverLimit as OVER};

/// A status's code, limit (requests, unit, name) and remaining.
pub fn summary(status: &DescriptorStatus) -> (Code, Option<(u32, Unit, String)>, u32) {
    (
        status.code(),
        status
            .current_limit
            .as_ref()
            .map(|l| (l.requests_per_unit, l.unit(), l.name.clone())),
        status.limit_remaining,
    )
}

/// `duration_until_reset` as a `Duration`.
pub fn reset(status: &DescriptorStatus) -> Duration {
    let d = status
        .duration_until_reset
        .expect("no duration_until_reset");
    Duration::new(
        u64::try_from(d.seconds).unwrap(),
        u32::try_from(d.nanos).unwrap(),
    )
}

/// A status with no limit: what a descriptor that no limit reads gets.
pub fn bare_ok() -> (Code, Option<(u32, Unit, String)>, u32) {
    (OK, None, 0)
}
