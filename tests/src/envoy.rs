//! Stock Envoy in tests: bootstrap builder, process lifecycle, readiness, stats, logs.
//!
//! Each [`Envoy`] runs in its own temporary directory with admin and every listener on port 0
//! (the kernel picks free loopback ports; Envoy reports them on `/listeners`), so tests run in
//! parallel without port races. Start-up waits for `/ready` and for every listener with a bound;
//! on drop the process is killed, and if the test is failing the tail of Envoy's log is printed.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{admin, children, paths};

/// How long Envoy may take to load its config, compile Wasm in V8 and bind listeners.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// One Wasm HTTP filter in a listener's chain.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Plugin name and `root_id`.
    pub name: String,
    /// The `.wasm` module.
    pub wasm: PathBuf,
    /// `vm_id`; filters with the same module and `vm_id` share VMs (and shared data).
    pub vm_id: String,
    /// JSON configuration (sent as a `StringValue`); empty = none.
    pub config: String,
    /// `FAIL_CLOSED` (Envoy's default), `FAIL_OPEN` or `FAIL_RELOAD`.
    pub failure_policy: Option<String>,
}

impl Filter {
    /// A meshguard filter from `dist/<name>.wasm` (`load_shed`, `circuit_breaker`, ...).
    pub fn meshguard(name: &str) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            wasm: paths::wasm(name)?,
            vm_id: format!("meshguard_{name}"),
            config: String::new(),
            failure_policy: None,
        })
    }

    /// A fixture module from `dist/fixtures/` (e.g. `noop_trimmed`), configured as the no-op.
    pub fn fixture(name: &str) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            wasm: paths::wasm(name)?,
            vm_id: name.to_owned(),
            config: String::new(),
            failure_policy: None,
        })
    }

    /// The same module under another filter name and VM id (several copies in one chain).
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self.vm_id = name.to_owned();
        self
    }

    /// The no-op Rust SDK filter fixture (the Wasm-cost anchor).
    pub fn noop() -> Result<Self> {
        Ok(Self {
            name: "noop".into(),
            wasm: paths::wasm("noop")?,
            vm_id: "noop".into(),
            config: String::new(),
            failure_policy: None,
        })
    }

    /// Sets the JSON configuration.
    #[must_use]
    pub fn config(mut self, json: impl Into<String>) -> Self {
        self.config = json.into();
        self
    }

    /// Sets the `vm_id`.
    #[must_use]
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.vm_id = vm_id.into();
        self
    }

    /// Sets the plugin's `failure_policy` (`FAIL_CLOSED`, `FAIL_OPEN` or `FAIL_RELOAD`).
    #[must_use]
    pub fn failure_policy(mut self, policy: &str) -> Self {
        self.failure_policy = Some(policy.to_owned());
        self
    }

    /// The `envoy.filters.http.wasm` entry for this filter.
    pub fn to_json(&self) -> Value {
        let mut config = json!({
            "name": self.name,
            "root_id": self.name,
            "vm_config": {
                "vm_id": self.vm_id,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": self.wasm.display().to_string()}},
            },
        });
        if !self.config.is_empty() {
            config["configuration"] = json!({
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": self.config,
            });
        }
        if let Some(policy) = &self.failure_policy {
            config["failure_policy"] = json!(policy);
        }
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": config,
            },
        })
    }
}

/// A listener with an HTTP connection manager (HTTP/1.1 and h2c, auto-detected).
#[derive(Clone, Debug)]
pub struct Listener {
    /// Listener name, also the HCM `stat_prefix`.
    pub name: String,
    /// Wasm filters, in chain order, before the router.
    pub filters: Vec<Filter>,
    /// Raw `http_filters` inserted before the Wasm filters (native filters for anchors).
    pub native_filters: Vec<Value>,
    /// The `route_config` (defaults to everything → cluster `upstream`).
    pub route_config: Value,
    /// Extra fields of the HTTP connection manager (e.g. `common_http_protocol_options`).
    pub hcm_extra: serde_json::Map<String, Value>,
}

impl Listener {
    /// A listener routing everything to the cluster `upstream`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            filters: Vec::new(),
            native_filters: Vec::new(),
            route_config: route_to_cluster("upstream"),
            hcm_extra: serde_json::Map::new(),
        }
    }

    /// Adds a Wasm filter at the end of the chain.
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Writes an access log line per request to `path` in Envoy's text `format`
    /// (e.g. `"%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"`).
    #[must_use]
    pub fn access_log(self, path: &Path, format: &str) -> Self {
        self.hcm(
            "access_log",
            json!([{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": path.display().to_string(),
                    "log_format": {"text_format_source": {"inline_string": format}},
                },
            }]),
        )
    }

    /// Sets a field of the HTTP connection manager.
    #[must_use]
    pub fn hcm(mut self, key: &str, value: Value) -> Self {
        self.hcm_extra.insert(key.to_owned(), value);
        self
    }

    /// Answers every request with `status` and `body` from the route (no upstream).
    #[must_use]
    pub fn direct_response(mut self, status: u16, body: &str) -> Self {
        self.route_config = json!({
            "name": "direct",
            "virtual_hosts": [{
                "name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"},
                            "direct_response": {"status": status, "body": {"inline_string": body}}}],
            }],
        });
        self
    }

    fn to_json(&self) -> Value {
        let mut http_filters: Vec<Value> = self.native_filters.clone();
        http_filters.extend(self.filters.iter().map(Filter::to_json));
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": self.name,
            "codec_type": "AUTO",
            "route_config": self.route_config,
            "http_filters": http_filters,
        });
        if let Some(obj) = hcm.as_object_mut() {
            obj.extend(self.hcm_extra.clone());
        }
        json!({
            "name": self.name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm,
            }]}],
        })
    }
}

/// A route config sending everything to `cluster` (30 s timeout, enough for streaming tests).
pub fn route_to_cluster(cluster: &str) -> Value {
    json!({
        "name": "local",
        "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "30s"}}],
        }],
    })
}

/// A static cluster to one loopback address that speaks the downstream's protocol upstream
/// (HTTP/1.1 in, HTTP/1.1 out; h2/gRPC in, h2 out).
pub fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}
        }}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {},
            },
        },
    })
}

/// A static cluster to one loopback address that speaks HTTP/2 (gRPC: an RLS, a registry
/// served over h2).
pub fn grpc_cluster(name: &str, addr: SocketAddr) -> Value {
    let mut c = cluster(name, addr);
    c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = json!({
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    });
    c
}

/// Everything needed to start one Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    /// Listeners, each on its own free port.
    pub listeners: Vec<Listener>,
    /// Raw cluster definitions (see [`cluster`]).
    pub clusters: Vec<Value>,
    /// `--concurrency` (worker threads, one Wasm VM each).
    pub concurrency: u32,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    /// A complete bootstrap to run instead of the one built from the fields above (e.g. one
    /// generated by `meshguard-config`); its listeners are waited for by name.
    pub raw_bootstrap: Option<Value>,
}

impl EnvoyConfig {
    /// Two workers, no listeners yet, a cluster `upstream` at `upstream` when given.
    pub fn new(upstream: Option<SocketAddr>) -> Self {
        Self {
            listeners: Vec::new(),
            clusters: upstream
                .map(|a| cluster("upstream", a))
                .into_iter()
                .collect(),
            concurrency: 2,
            extra_args: Vec::new(),
            raw_bootstrap: None,
        }
    }

    /// Adds a listener.
    #[must_use]
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Sets `--concurrency`.
    #[must_use]
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Runs `bootstrap` as is (its admin address is replaced by a free port).
    pub fn raw(bootstrap: Value) -> Self {
        Self {
            raw_bootstrap: Some(bootstrap),
            ..Self::new(None)
        }
    }

    fn listener_names(&self) -> Vec<String> {
        match &self.raw_bootstrap {
            Some(b) => b["static_resources"]["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["name"].as_str().map(str::to_owned))
                .collect(),
            None => self.listeners.iter().map(|l| l.name.clone()).collect(),
        }
    }

    /// The bootstrap as JSON.
    pub fn bootstrap(&self) -> Value {
        if let Some(raw) = &self.raw_bootstrap {
            let mut b = raw.clone();
            b["admin"] =
                json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}});
            return b;
        }
        json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": self.listeners.iter().map(Listener::to_json).collect::<Vec<_>>(),
                "clusters": self.clusters,
            },
        })
    }
}

/// A running Envoy; killed on drop.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    listeners: BTreeMap<String, SocketAddr>,
}

impl Envoy {
    /// Writes the bootstrap, starts Envoy and waits until it is ready and every listener is
    /// bound.
    ///
    /// # Errors
    /// When Envoy cannot start, exits, or is not ready within [`STARTUP_TIMEOUT`]; the error
    /// carries the tail of its log.
    pub fn start(config: &EnvoyConfig) -> Result<Self> {
        let bin = paths::envoy_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("meshguard-envoy-")
            .tempdir()?;
        let bootstrap = dir.path().join("envoy.json");
        fs::write(&bootstrap, serde_json::to_vec_pretty(&config.bootstrap())?)?;
        let admin_path = dir.path().join("admin-address");
        let log = fs::File::create(dir.path().join("envoy.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&bootstrap)
            .arg("--concurrency")
            .arg(config.concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--log-level", "warn", "--component-log-level", "wasm:info"])
            .args(&config.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning envoy")?;
        children::register(child.id());
        let mut envoy = Self {
            child,
            dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: BTreeMap::new(),
        };
        if let Err(e) = envoy.wait_ready(&admin_path, config) {
            bail!("{e:#}\n--- envoy log (tail) ---\n{}", envoy.log_tail(8000));
        }
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path, config: &EnvoyConfig) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut backoff = Duration::from_millis(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after {STARTUP_TIMEOUT:?}");
            }
            if let Ok(text) = fs::read_to_string(admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                self.admin = addr;
                if self.try_ready(config)? {
                    return Ok(());
                }
            }
            std::thread::sleep(backoff);
            // Short polls: start-up time is a benchmark row (cold start), so readiness is seen
            // within ~20 ms of happening.
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }

    fn try_ready(&mut self, config: &EnvoyConfig) -> Result<bool> {
        match admin::get(self.admin, "/ready") {
            Ok((200, _)) => {}
            _ => return Ok(false),
        }
        let (_, body) = admin::get(self.admin, "/listeners?format=json")?;
        let v: Value = serde_json::from_str(&body).context("parsing /listeners")?;
        let mut found = BTreeMap::new();
        for l in v["listener_statuses"].as_array().into_iter().flatten() {
            let name = l["name"].as_str().unwrap_or_default();
            let sa = &l["local_address"]["socket_address"];
            if let (Some(ip), Some(port)) = (sa["address"].as_str(), sa["port_value"].as_u64())
                && port != 0
            {
                found.insert(name.to_owned(), SocketAddr::new(ip.parse()?, port as u16));
            }
        }
        if config
            .listener_names()
            .iter()
            .all(|l| found.contains_key(l))
        {
            self.listeners = found;
            return Ok(true);
        }
        Ok(false)
    }

    /// The address of a listener by name.
    ///
    /// # Panics
    /// If there is no such listener (a test bug).
    pub fn listener(&self, name: &str) -> SocketAddr {
        match self.listeners.get(name) {
            Some(a) => *a,
            None => panic!(
                "no listener named {name:?} (have {:?})",
                self.listeners.keys()
            ),
        }
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Counters and gauges from `/stats` (histograms are skipped), by full name.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let (status, body) = admin::get(self.admin, "/stats")?;
        if status != 200 {
            bail!("/stats answered {status}");
        }
        Ok(parse_stats(&body))
    }

    /// One counter or gauge (0 when absent).
    pub fn stat(&self, name: &str) -> Result<u64> {
        let (_, body) = admin::get(self.admin, &format!("/stats?filter=^{name}$"))?;
        Ok(parse_stats(&body).get(name).copied().unwrap_or(0))
    }

    /// Waits until `pred(stats)` holds, polling `/stats`, for at most `timeout`.
    pub fn wait_for_stats(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&BTreeMap<String, u64>) -> bool,
    ) -> Result<BTreeMap<String, u64>> {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats()?;
            if pred(&stats) {
                return Ok(stats);
            }
            if Instant::now() > deadline {
                bail!("stats condition not met within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Envoy's whole log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The last `max` bytes of the log.
    pub fn log_tail(&self, max: usize) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(max);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(0);
        log[start..].to_owned()
    }

    /// CPU time (user + system) Envoy has used, from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Result<Duration> {
        process_cpu_time(self.pid())
    }

    /// Resident set size in bytes, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .context("VmRSS")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        children::forget(self.child.id());
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log (tail, {}) ---\n{}",
                self.dir.path().display(),
                self.log_tail(16_000)
            );
        }
    }
}

/// Parses `/stats` text (`name: value` lines); histogram lines are skipped.
pub fn parse_stats(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(": ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// utime + stime of a process, from `/proc/<pid>/stat` (clock ticks at 100 Hz).
pub fn process_cpu_time(pid: u32) -> Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    let ticks = utime + stime;
    Ok(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_text_is_parsed() {
        let s = parse_stats(
            "cluster.upstream.upstream_rq_200: 7\nmeshguard.load_shed.rejected: 3\nhttp.x.rq_time: P0(nan,1)\n",
        );
        assert_eq!(s.get("meshguard.load_shed.rejected"), Some(&3));
        assert_eq!(s.get("cluster.upstream.upstream_rq_200"), Some(&7));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn cpu_time_of_self_is_readable() {
        let t = process_cpu_time(std::process::id()).unwrap();
        assert!(t < Duration::from_secs(3600));
    }
}
