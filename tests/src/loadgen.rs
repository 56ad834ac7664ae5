//! An open-loop HTTP/1.1 load generator: Poisson arrivals at a fixed rate, each request sent
//! when it is due whether or not earlier ones have finished (a closed-loop tool like wrk would
//! slow down with the server and hide overload), with a client timeout.
//!
//! Connections come from a keep-alive pool (hyper's client); a request that times out is
//! dropped with its connection, as a real client would.

use std::time::{Duration, Instant};

use anyhow::Result;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// One phase of a run: `rps` requests per second for `duration`, each with these headers.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Arrival rate.
    pub rps: f64,
    /// Length of the phase.
    pub duration: Duration,
    /// Request headers (e.g. a criticality class).
    pub headers: Vec<(String, String)>,
    /// Label for reports.
    pub label: String,
    /// Send unary gRPC calls over h2c (`POST /meshguard.test.v1.Echo/Unary`) instead of
    /// HTTP/1.1 GETs; success is `grpc-status: 0`.
    pub grpc: bool,
}

/// The fate of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status, after this latency.
    Status(u16, Duration),
    /// No response within the client timeout.
    Timeout,
    /// Connection error or reset.
    Error,
}

/// Results of one phase.
#[derive(Clone, Debug, Default)]
pub struct PhaseResult {
    /// Label of the phase.
    pub label: String,
    /// Requests sent.
    pub sent: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Non-2xx responses by status.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Client timeouts.
    pub timeouts: u64,
    /// Connection errors.
    pub errors: u64,
    /// Latencies of 2xx responses, sorted (ms).
    pub ok_latency_ms: Vec<f64>,
    /// Latencies of every answered request, any status, sorted (ms).
    pub all_latency_ms: Vec<f64>,
    /// Phase length (s).
    pub seconds: f64,
    /// Every request: (seconds since the phase started when it was sent, outcome status —
    /// HTTP status, or for gRPC `200` when `grpc-status` is 0 and `1000 + grpc-status`
    /// otherwise; 0 for timeouts and errors), in sending order.
    pub timeline: Vec<(f64, u16)>,
}

impl PhaseResult {
    /// 2xx per second.
    pub fn goodput(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// Quantile of 2xx latency (ms), NaN when none.
    pub fn quantile(&self, q: f64) -> f64 {
        let v = &self.ok_latency_ms;
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)]
    }

    /// Responses with this status.
    pub fn status(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }
}

/// A small seeded generator (xorshift) for inter-arrival times and traffic mixes; the seed
/// must not be 0.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// A uniform number in (0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

/// An empty `EchoRequest`, gRPC-framed (5-byte prefix, no payload).
const GRPC_EMPTY: &[u8] = &[0, 0, 0, 0, 0];

/// Runs `phases` in order against `url` (concurrently: several phases = several traffic
/// classes at once when `parallel`, else one after the other). Returns one result per phase.
pub async fn run(
    url: &str,
    phases: &[Phase],
    timeout: Duration,
    parallel: bool,
    seed: u64,
) -> Result<Vec<PhaseResult>> {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let h2: Client<_, Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let uri: hyper::Uri = url.parse()?;
    let mut handles = Vec::new();
    let mut offset = Duration::ZERO;
    for (i, phase) in phases.iter().enumerate() {
        let start_after = if parallel { Duration::ZERO } else { offset };
        offset += phase.duration;
        let client = if phase.grpc {
            h2.clone()
        } else {
            client.clone()
        };
        let (uri, phase) = (uri.clone(), phase.clone());
        let seed = seed.wrapping_add(i as u64 * 7919) | 1;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(start_after).await;
            run_phase(client, uri, phase, timeout, seed).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

async fn run_phase(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    uri: hyper::Uri,
    phase: Phase,
    timeout: Duration,
    seed: u64,
) -> Result<PhaseResult> {
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut next = Duration::ZERO;
    let mut tasks = Vec::new();
    while next < phase.duration {
        tokio::time::sleep_until((start + next).into()).await;
        let mut req = if phase.grpc {
            let uri = format!("{}meshguard.test.v1.Echo/Unary", uri);
            hyper::Request::post(uri)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
        } else {
            hyper::Request::get(uri.clone())
        };
        for (k, v) in &phase.headers {
            req = req.header(k, v);
        }
        let body = if phase.grpc {
            Body::from(GRPC_EMPTY)
        } else {
            Body::default()
        };
        let req = req.body(body)?;
        let client = client.clone();
        let grpc = phase.grpc;
        let offset = next.as_secs_f64();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = tokio::time::timeout(timeout, async {
                let resp = client.request(req).await?;
                let mut status = resp.status().as_u16();
                let header_grpc = grpc_status(resp.headers());
                let collected = resp.into_body().collect().await?;
                if grpc && status == 200 {
                    let code = header_grpc.or_else(|| collected.trailers().and_then(grpc_status));
                    status = match code {
                        Some(0) => 200,
                        Some(c) => 1000 + c,
                        None => 1002,
                    };
                }
                anyhow::Ok(status)
            })
            .await;
            let outcome = match result {
                Ok(Ok(status)) => Outcome::Status(status, sent.elapsed()),
                Ok(Err(_)) => Outcome::Error,
                Err(_) => Outcome::Timeout,
            };
            (offset, outcome)
        }));
        next += Duration::from_secs_f64(-rng.unit().ln() / phase.rps);
    }
    let mut r = PhaseResult {
        label: phase.label.clone(),
        seconds: phase.duration.as_secs_f64(),
        ..PhaseResult::default()
    };
    for t in tasks {
        r.sent += 1;
        let (offset, outcome) = t.await?;
        r.timeline.push((
            offset,
            match outcome {
                Outcome::Status(s, _) => s,
                _ => 0,
            },
        ));
        if let Outcome::Status(_, latency) = outcome {
            r.all_latency_ms.push(latency.as_secs_f64() * 1000.0);
        }
        match outcome {
            Outcome::Status(s, latency) if (200..300).contains(&s) => {
                r.ok += 1;
                r.ok_latency_ms.push(latency.as_secs_f64() * 1000.0);
            }
            Outcome::Status(s, _) => *r.statuses.entry(s).or_default() += 1,
            Outcome::Timeout => r.timeouts += 1,
            Outcome::Error => r.errors += 1,
        }
    }
    r.ok_latency_ms.sort_by(f64::total_cmp);
    r.all_latency_ms.sort_by(f64::total_cmp);
    Ok(r)
}

fn grpc_status(h: &http::HeaderMap) -> Option<u16> {
    h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Closed-loop saturation: `concurrency` workers sending back to back for `duration`; returns
/// completed requests per second (the service's capacity when `concurrency` exceeds it).
pub async fn saturate(url: &str, concurrency: usize, duration: Duration) -> Result<f64> {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build_http();
    let uri: hyper::Uri = url.parse()?;
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, uri) = (client.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if let Ok(resp) = client
                    .request(
                        hyper::Request::get(uri.clone())
                            .body(Body::default())
                            .unwrap_or_default(),
                    )
                    .await
                    && resp.into_body().collect().await.is_ok()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(total as f64 / duration.as_secs_f64())
}
