//! The bundle's root and stream contexts: configure each enabled policy from its section,
//! share one tick, and run the policies in order on every request.

use std::time::Duration;

use meshguard_proxy::http::RequestMemo;
use meshguard_proxy::{abi, clock, config};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use serde::Deserialize;

use crate::rate_limit::RlsOutcome;
use crate::{circuit_breaker, load_shed, rate_limit, sandbox_router};

const FILTER: &str = "bundle";

/// The bundle's configuration: one optional section per policy, each with exactly the fields
/// of that policy's single filter. At least one section must be present.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    rate_limit: Option<serde_json::Value>,
    load_shed: Option<serde_json::Value>,
    sandbox_router: Option<serde_json::Value>,
    circuit_breaker: Option<serde_json::Value>,
}

/// A policy's root context and when its next tick is due.
#[derive(Debug)]
struct Sub<R> {
    root: R,
    every_ns: u64,
    next_ns: u64,
}

impl<R: RootContext> Sub<R> {
    /// Configures `root` from its section; `None` (logged by the policy) fails the bundle.
    fn configure(
        mut root: R,
        section: Option<&serde_json::Value>,
        configure: impl FnOnce(&mut R, Option<&[u8]>) -> Option<Duration>,
    ) -> Option<Option<Self>> {
        let Some(section) = section else {
            return Some(None);
        };
        let bytes = serde_json::to_vec(section).ok()?;
        let period = configure(&mut root, Some(&bytes))?;
        Some(Some(Self {
            root,
            every_ns: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX),
            next_ns: 0,
        }))
    }

    /// Runs the policy's tick when due (`slack_ns` early at most: the shared tick is the
    /// greatest common divisor of the periods, so a due tick never waits a whole period).
    fn tick(&mut self, now_ns: u64, slack_ns: u64) {
        if now_ns.saturating_add(slack_ns) >= self.next_ns {
            self.next_ns = now_ns.saturating_add(self.every_ns);
            self.root.on_tick();
        }
    }
}

/// The bundle's root context: the enabled policies' roots.
#[derive(Debug, Default)]
pub struct Root {
    rate_limit: Option<Sub<rate_limit::Root>>,
    load_shed: Option<Sub<load_shed::Root>>,
    sandbox_router: Option<Sub<sandbox_router::Root>>,
    circuit_breaker: Option<Sub<circuit_breaker::Root>>,
    tick_ns: u64,
}

/// Greatest common divisor of two tick periods in whole milliseconds (at least 1 ms).
fn gcd_ms(a: u64, b: u64) -> u64 {
    let (mut a, mut b) = (a.max(1), b.max(1));
    while b != 0 {
        let r = a.checked_rem(b).unwrap_or(0);
        a = b;
        b = r;
    }
    a
}

impl Root {
    fn configure(&mut self, bytes: Option<&[u8]>) -> Option<Duration> {
        let raw: RawConfig = config::configure(FILTER, bytes)?;
        // Sections are configured in request order; the first invalid one fails the whole
        // config with its policy's own log line.
        let rate_limit = Sub::configure(
            rate_limit::Root::default(),
            raw.rate_limit.as_ref(),
            rate_limit::Root::configure,
        )?;
        let load_shed = Sub::configure(
            load_shed::Root::default(),
            raw.load_shed.as_ref(),
            load_shed::Root::configure,
        )?;
        let sandbox_router = Sub::configure(
            sandbox_router::Root::default(),
            raw.sandbox_router.as_ref(),
            sandbox_router::Root::configure,
        )?;
        let circuit_breaker = Sub::configure(
            circuit_breaker::Root::default(),
            raw.circuit_breaker.as_ref(),
            circuit_breaker::Root::configure,
        )?;
        let periods: Vec<u64> = [
            rate_limit.as_ref().map(|s| s.every_ns),
            load_shed.as_ref().map(|s| s.every_ns),
            sandbox_router.as_ref().map(|s| s.every_ns),
            circuit_breaker.as_ref().map(|s| s.every_ns),
        ]
        .into_iter()
        .flatten()
        .collect();
        let Some(tick_ms) = periods.iter().map(|ns| ns / 1_000_000).reduce(gcd_ms) else {
            log::error!(
                "meshguard {FILTER}: invalid configuration: no policy enabled (give at least one of rate_limit, load_shed, sandbox_router, circuit_breaker)"
            );
            return None;
        };
        let names: Vec<&str> = [
            rate_limit.as_ref().map(|_| "rate_limit"),
            load_shed.as_ref().map(|_| "load_shed"),
            sandbox_router.as_ref().map(|_| "sandbox_router"),
            circuit_breaker.as_ref().map(|_| "circuit_breaker"),
        ]
        .into_iter()
        .flatten()
        .collect();
        log::info!(
            "meshguard {FILTER}: configured ({}; tick every {tick_ms} ms)",
            names.join(" -> ")
        );
        *self = Self {
            rate_limit,
            load_shed,
            sandbox_router,
            circuit_breaker,
            tick_ns: tick_ms.saturating_mul(1_000_000),
        };
        Some(Duration::from_millis(tick_ms))
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        // Only the sandbox router calls out from its root (the registry poll).
        if let Some(s) = &mut self.sandbox_router {
            s.root
                .on_http_call_response(token, num_headers, body_size, num_trailers);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration();
        self.configure(bytes.as_deref())
            .is_some_and(|period| config::start_ticking(FILTER, period))
    }

    fn on_tick(&mut self) {
        let now = clock::monotonic_nanos();
        let slack = self.tick_ns / 2;
        if let Some(s) = &mut self.rate_limit {
            s.tick(now, slack);
        }
        if let Some(s) = &mut self.load_shed {
            s.tick(now, slack);
        }
        if let Some(s) = &mut self.sandbox_router {
            s.tick(now, slack);
        }
        if let Some(s) = &mut self.circuit_breaker {
            s.tick(now, slack);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            rate_limit: self.rate_limit.as_ref().and_then(|s| s.root.stream()),
            load_shed: self.load_shed.as_ref().and_then(|s| s.root.stream()),
            sandbox_router: self.sandbox_router.as_ref().and_then(|s| s.root.stream()),
            circuit_breaker: self.circuit_breaker.as_ref().and_then(|s| {
                let mut stream = s.root.stream()?;
                // With the load shedder in the pass, its timed requests and the shared tick
                // keep the worker's last clock read fresh: the breaker admits on it.
                if self.load_shed.is_some() {
                    stream.admit_on_recent_clock();
                }
                Some(stream)
            }),
        }))
    }
}

/// One request through the enabled policies.
#[derive(Debug)]
struct Stream {
    rate_limit: Option<rate_limit::Stream>,
    load_shed: Option<load_shed::Stream>,
    sandbox_router: Option<sandbox_router::Stream>,
    circuit_breaker: Option<circuit_breaker::Stream>,
}

/// Where the request path starts: all policies, or those after the rate limit (once its RLS
/// call has let the request go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    Start,
    AfterRateLimit,
}

impl Stream {
    /// Runs the request-headers step of each policy from `from` on, stopping at the first
    /// that does not continue (a local reply was sent, or the rate limit waits for its RLS).
    fn request_headers(&mut self, from: From, n: usize, eos: bool) -> Action {
        let _memo = RequestMemo::start();
        if from == From::Start
            && let Some(s) = &mut self.rate_limit
            && s.on_http_request_headers(n, eos) != Action::Continue
        {
            return Action::Pause;
        }
        if let Some(s) = &mut self.load_shed
            && s.on_http_request_headers(n, eos) != Action::Continue
        {
            return Action::Pause;
        }
        if let Some(s) = &mut self.sandbox_router
            && s.on_http_request_headers(n, eos) != Action::Continue
        {
            return Action::Pause;
        }
        if let Some(s) = &mut self.circuit_breaker {
            // The breaker is keyed by where the request really goes (see `goes_to`).
            s.goes_to(self.sandbox_router.as_ref().and_then(|r| r.rerouted_to()));
            if s.on_http_request_headers(n, eos) != Action::Continue {
                return Action::Pause;
            }
        }
        Action::Continue
    }
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        let Some(rl) = &mut self.rate_limit else {
            return;
        };
        if rl.on_rls_response(token, status_code, response_size) != RlsOutcome::Go {
            return;
        }
        // The rest of the request path runs now, while the request is still paused.
        if self.request_headers(From::AfterRateLimit, 0, false) == Action::Continue
            && let Err(e) = abi::resume_request()
        {
            log::warn!("meshguard {FILTER}: cannot resume the request: {e}");
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, n: usize, eos: bool) -> Action {
        meshguard_proxy::fault::on_request_headers();
        self.request_headers(From::Start, n, eos)
    }

    fn on_http_response_headers(&mut self, n: usize, eos: bool) -> Action {
        if let Some(s) = &mut self.rate_limit {
            s.on_http_response_headers(n, eos);
        }
        if let Some(s) = &mut self.sandbox_router {
            s.on_http_response_headers(n, eos);
        }
        if let Some(s) = &mut self.circuit_breaker {
            s.on_http_response_headers(n, eos);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, n: usize) -> Action {
        if let Some(s) = &mut self.circuit_breaker {
            s.on_http_response_trailers(n);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let _memo = RequestMemo::start();
        if let Some(s) = &mut self.load_shed {
            s.on_log();
        }
        if let Some(s) = &mut self.circuit_breaker {
            s.on_log();
        }
    }
}
