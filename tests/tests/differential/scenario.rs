//! A scenario as data: the plugin, the routes and clusters around it, what the client sends,
//! and which observables to compare. The same value drives both runners ([`crate::sim`] and
//! [`crate::real`]), so a scenario is written once and the comparison is structural.

use std::time::Duration;

use serde_json::Value;

/// `failure_policy` of the Wasm filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Envoy's default.
    FailClosed,
    /// Skip the filter once its VM failed.
    FailOpen,
}

/// A route: first match by path prefix and optional exact header.
#[derive(Clone, Debug)]
pub struct Route {
    /// `xds.route_name`.
    pub name: String,
    /// Path prefix.
    pub prefix: String,
    /// Exact header match.
    pub header: Option<(String, String)>,
    /// Target cluster.
    pub cluster: String,
    /// Filter metadata (`{"namespace": {"key": value}}`), or `Null`.
    pub metadata: Value,
}

impl Route {
    /// A catch-all route.
    pub fn new(name: &str, cluster: &str) -> Self {
        Self {
            name: name.into(),
            prefix: "/".into(),
            header: None,
            cluster: cluster.into(),
            metadata: Value::Null,
        }
    }

    /// Matches only this path prefix.
    pub fn prefix(mut self, p: &str) -> Self {
        self.prefix = p.into();
        self
    }

    /// Matches only when header `k` is exactly `v`.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.header = Some((k.into(), v.into()));
        self
    }

    /// Route filter metadata.
    pub fn metadata(mut self, m: Value) -> Self {
        self.metadata = m;
        self
    }
}

/// What a cluster's one endpoint does with every request (routed or callout).
#[derive(Clone, Debug, PartialEq)]
pub enum Server {
    /// Answers with this reply after reading the whole request.
    Reply(Reply),
    /// Nothing listens (connection refused).
    Down,
    /// Resets the stream (h2 `RST_STREAM`) instead of answering.
    ResetBeforeHeaders,
    /// Sends the reply's headers, then resets the stream.
    ResetAfterHeaders(Reply),
}

/// A fixed answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// `:status`.
    pub status: u16,
    /// Headers after `:status`, in order (lower case).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers (empty: none).
    pub trailers: Vec<(String, String)>,
    /// Time between the end of the request and the answer.
    pub delay: Duration,
}

impl Reply {
    /// `status` with a text body and its `content-length`.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("content-length".into(), body.len().to_string()),
            ],
            body: body.as_bytes().to_vec(),
            trailers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// A gRPC answer: one message, then `grpc-status` in trailers.
    pub fn grpc(grpc_status: u32, message: &[u8]) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "application/grpc".into())],
            body: grpc_frame(message),
            trailers: vec![("grpc-status".into(), grpc_status.to_string())],
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, k: &str, v: &str) -> Self {
        self.trailers.push((k.into(), v.into()));
        self
    }

    /// Answers after `d`.
    pub fn after(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// A cluster with one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// Name (also `xds.cluster_name`).
    pub name: String,
    /// What the endpoint does.
    pub server: Server,
}

/// What the client sends (over h2c, prior knowledge).
#[derive(Clone, Debug)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// Headers after the pseudo-headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body chunks (one DATA frame each).
    pub body: Vec<Vec<u8>>,
    /// Trailers.
    pub trailers: Vec<(String, String)>,
}

impl Request {
    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// A unary gRPC call with an empty message.
    pub fn grpc(path: &str) -> Self {
        Self {
            method: "POST".into(),
            path: path.into(),
            headers: vec![
                ("content-type".into(), b"application/grpc".to_vec()),
                ("te".into(), b"trailers".to_vec()),
            ],
            body: vec![grpc_frame(b"")],
            trailers: Vec::new(),
        }
    }

    /// The probe commands (`x-probe`).
    pub fn probe(self, cmds: &str) -> Self {
        self.header("x-probe", cmds)
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.as_bytes().to_vec()));
        self
    }

    /// Adds a body chunk.
    pub fn chunk(mut self, c: &str) -> Self {
        self.body.push(c.as_bytes().to_vec());
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, k: &str, v: &str) -> Self {
        self.trailers.push((k.into(), v.into()));
        self
    }
}

/// One step of a scenario.
#[derive(Clone, Debug)]
pub enum Step {
    /// A request on a new connection; the next step starts when it has completed.
    Request(Request),
    /// Let every ticking VM tick at least `rounds` times (host-sim: virtual time; Envoy: wait).
    Ticks {
        /// Ticks per VM.
        rounds: u32,
    },
}

/// A rewrite applied to log lines of both runners before comparing (values that are
/// legitimately different, e.g. ephemeral ports).
#[derive(Clone, Debug)]
pub enum Mask {
    /// The value after `name=` (up to a space, `|` or the end) becomes `*`.
    Field(&'static str),
    /// In lines containing this text, every run of digits becomes `N` (shape only).
    Digits(&'static str),
    /// In a `name=<status>/<value>` field, the value becomes `*` (the status is kept).
    Value(&'static str),
}

/// Which observables to compare (responses are always compared).
#[derive(Clone, Debug)]
pub struct Compare {
    /// Log lines (module messages) starting with one of these are compared, in order.
    pub logs: Vec<&'static str>,
    /// ... unless they start with one of these.
    pub logs_except: Vec<&'static str>,
    /// Masks for log lines.
    pub masks: Vec<Mask>,
    /// Counters and gauges (names without `wasmcustom.`).
    pub metrics: Vec<&'static str>,
    /// Request headers compared on what each cluster received.
    pub received_headers: Vec<&'static str>,
    /// Compare how many VMs tick.
    pub ticking_vms: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Self {
            logs: vec!["probe:"],
            logs_except: vec!["probe:vm_start:", "probe:configure:", "probe:tick:"],
            // Milliseconds of real time in Envoy, of virtual time in host-sim; a random UUID.
            masks: vec![
                Mask::Field("x-envoy-upstream-service-time"),
                Mask::Field("x-request-id"),
            ],
            metrics: Vec::new(),
            received_headers: Vec::new(),
            ticking_vms: false,
        }
    }
}

/// One differential scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name: also the listener, plugin name, root id and vm id.
    pub name: &'static str,
    /// Worker threads (`--concurrency` / host-sim workers).
    pub workers: u32,
    /// The client speaks HTTP/1.1 (default: h2c).
    pub http1: bool,
    /// Plugin configuration.
    pub plugin_config: String,
    /// Failure policy.
    pub policy: Policy,
    /// Route timeout.
    pub route_timeout: Duration,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Clusters.
    pub clusters: Vec<Cluster>,
    /// Steps.
    pub steps: Vec<Step>,
    /// What to compare.
    pub compare: Compare,
}

impl Scenario {
    /// One worker, no plugin config, FAIL_CLOSED, a catch-all route `default` to cluster
    /// `upstream` answering `200 ok`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            workers: 1,
            http1: false,
            plugin_config: String::new(),
            policy: Policy::FailClosed,
            route_timeout: Duration::from_secs(15),
            routes: vec![Route::new("default", "upstream")],
            clusters: vec![Cluster {
                name: "upstream".into(),
                server: Server::Reply(Reply::text(200, "ok")),
            }],
            steps: Vec::new(),
            compare: Compare::default(),
        }
    }

    /// Worker count.
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }

    /// The client speaks HTTP/1.1.
    pub fn http1(mut self) -> Self {
        self.http1 = true;
        self
    }

    /// Plugin configuration.
    pub fn config(mut self, c: &str) -> Self {
        self.plugin_config = c.into();
        self
    }

    /// Failure policy.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }

    /// Route timeout.
    pub fn route_timeout(mut self, d: Duration) -> Self {
        self.route_timeout = d;
        self
    }

    /// Replaces the routes.
    pub fn routes(mut self, r: Vec<Route>) -> Self {
        self.routes = r;
        self
    }

    /// Adds or replaces a cluster.
    pub fn cluster(mut self, name: &str, server: Server) -> Self {
        self.clusters.retain(|c| c.name != name);
        self.clusters.push(Cluster {
            name: name.into(),
            server,
        });
        self
    }

    /// Adds a request.
    pub fn request(mut self, r: Request) -> Self {
        self.steps.push(Step::Request(r));
        self
    }

    /// Adds a tick step.
    pub fn ticks(mut self, rounds: u32) -> Self {
        self.steps.push(Step::Ticks { rounds });
        self
    }

    /// Compares only log lines starting with these prefixes (start-up lines included).
    pub fn logs(mut self, prefixes: &[&'static str]) -> Self {
        self.compare.logs = prefixes.to_vec();
        self.compare.logs_except.clear();
        self
    }

    /// Adds a log mask.
    pub fn mask(mut self, m: Mask) -> Self {
        self.compare.masks.push(m);
        self
    }

    /// Compares these metrics.
    pub fn metrics(mut self, names: &[&'static str]) -> Self {
        self.compare.metrics = names.to_vec();
        self
    }

    /// Compares these headers of the requests each cluster received.
    pub fn received_headers(mut self, names: &[&'static str]) -> Self {
        self.compare.received_headers = names.to_vec();
        self
    }

    /// Compares the number of ticking VMs.
    pub fn ticking_vms(mut self) -> Self {
        self.compare.ticking_vms = true;
        self
    }
}

/// A gRPC length-prefixed message (uncompressed).
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out
}
