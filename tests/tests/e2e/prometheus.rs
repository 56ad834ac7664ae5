//! Observability end to end: meshguard's metrics through a real Prometheus, and the rules and
//! dashboard in `observability/` checked against the names Envoy really exposes.
//!
//! - One Envoy with all four filters and the tag extractors of `observability/stats_tags.yaml`
//!   (passed as is with `--config-yaml`), a real `prometheus` (Debian package, installed by
//!   `./build.sh setup`) scraping `/stats/prometheus` every second with `alerts.yml` and
//!   `slo.yml` loaded, an overload that load_shed rejects, a breaker that trips, a rate limit
//!   that limits and a request routed to a sandbox. Prometheus's query API must then show the
//!   series with their labels and values.
//! - `promtool check rules` and `promtool test rules` on the rule files.
//! - Every metric name used by the dashboard, the alerts and the SLO rules is documented in
//!   `docs/observability.md`; the e2e test also checks the documentation against the names on the
//!   real Envoy, both ways.
//!
//! Waits are bounded polls on a condition; Envoy and Prometheus are killed on drop.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meshguard_tests::envoy::{cluster, route_to_cluster};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, admin, h1, paths};
use meshguard_upstream::{
    Capacity, Failure, FailureKind, Latency, Queue, Upstream, UpstreamConfig,
};
use serde_json::Value;

/// How long Prometheus may take to become ready, and a series to show up or settle.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);

fn observability(file: &str) -> PathBuf {
    paths::workspace_root().join("observability").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A tool from the Debian `prometheus` package, found on `PATH`.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` not found on PATH: it comes from the Debian package `prometheus`, which \
             `./build.sh setup` installs (or: apt-get install prometheus)"
        )
    })
}

// === Prometheus ===

/// A real Prometheus on a free loopback port, scraping one Envoy's admin; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `/stats/prometheus` of `envoy_admin` every second, with
    /// `rule_files` evaluated every second, and waits until it is ready.
    fn start(envoy_admin: SocketAddr, rule_files: &[PathBuf]) -> Result<Self> {
        let bin = tool("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("meshguard-prometheus-")
            .tempdir()?;
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: envoy\n    metrics_path: /stats/prometheus\n    \
             static_configs:\n      - targets: ['{envoy_admin}']\n",
            rules.concat()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        // The port is free when picked; if another process takes it before Prometheus binds,
        // Prometheus exits and we try another one.
        let log_path = dir.path().join("prometheus.log");
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = std::fs::File::create(&log_path)?;
            let mut child = Command::new(&bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawning prometheus")?;
            match wait_ready(&mut child, addr) {
                Ok(()) => return Ok(Self { child, addr, dir }),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!(
                        "{e:#}\n--- prometheus log ---\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        bail!("prometheus did not start: {last_error}")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through `/api/v1/query`: the `data.result` vector.
    fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let (status, body) = admin::get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("query {promql}: {status} {body}"))?;
        if v["status"] != "success" {
            bail!("query {promql}: {status} {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `promql` until `pred` holds on its result, for at most [`PROMETHEUS_TIMEOUT`].
    fn wait_for(&self, promql: &str, mut pred: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            let result = self.query(promql).unwrap_or_else(|e| panic!("{e:#}"));
            if pred(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: {promql} did not meet the condition within {PROMETHEUS_TIMEOUT:?}; \
                 last result: {}\n--- prometheus log ---\n{}",
                Value::Array(result),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("prometheus exited during start-up ({status})");
        }
        if let Ok((200, _)) = admin::get(addr, "/-/ready") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("prometheus not ready after {PROMETHEUS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A sample's value (`"value": [time, "number"]`).
fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn label<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["metric"][name].as_str().unwrap_or_default()
}

// === Metric names: PromQL, rules, dashboard, docs ===

/// Metric names in a PromQL expression (recording rule names included; label names, functions,
/// keywords, strings, durations and Grafana `$variables` excluded). `__name__` matchers
/// contribute their `|`-separated alternatives.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 20] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        // Aggregations: `sum by (x) (...)` puts the label list before the parenthesis.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut braces = 0usize;
    let mut last_label = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if let Some(&ch) = chars.get(i) {
                        s.push(ch);
                    }
                    i += 1;
                }
                if braces > 0 && last_label == "__name__" {
                    names.extend(s.split('|').map(str::to_owned));
                }
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                continue;
            }
            c if c.is_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_:".contains(chars[i])) {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let call = chars.get(j) == Some(&'(');
                if braces > 0 {
                    last_label = ident;
                } else if LABEL_LISTS.contains(&ident.as_str()) {
                    // Skip the label list `(a, b)`.
                    if call {
                        while j < chars.len() && chars[j] != ')' {
                            j += 1;
                        }
                        i = j + 1;
                    }
                } else if !call && !KEYWORDS.contains(&ident.to_lowercase().as_str()) {
                    names.insert(ident);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// The values of `key:` entries in a rules file: `key: one line` or a `key: |` block.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        i += 1;
        let Some(rest) = trimmed.strip_prefix(&format!("{key}:")) else {
            continue;
        };
        let rest = rest.trim();
        if rest != "|" && rest != ">" {
            out.push(rest.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while i < lines.len()
            && (lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() > indent)
        {
            block.push_str(lines[i].trim());
            block.push('\n');
            i += 1;
        }
        out.push(block);
    }
    out
}

/// The rule files whose expressions are checked, and the recording rules they define.
const RULE_FILES: [&str; 2] = ["alerts.yml", "slo.yml"];

fn recorded_names() -> BTreeSet<String> {
    RULE_FILES
        .iter()
        .flat_map(|f| yaml_values(&read(&observability(f)), "record"))
        .collect()
}

/// Every `expr` of the rule files and of the dashboard's targets, with where it comes from.
fn all_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in RULE_FILES {
        for e in yaml_values(&read(&observability(f)), "expr") {
            out.push((f.to_owned(), e));
        }
    }
    let dashboard: Value = serde_json::from_str(&read(&observability("grafana-dashboard.json")))
        .expect("grafana-dashboard.json is JSON");
    let mut stack = vec![&dashboard];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(("grafana-dashboard.json".to_owned(), e.clone()));
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

/// The metric names the rules and the dashboard read (not the ones the rules define).
fn used_names() -> BTreeSet<String> {
    let recorded = recorded_names();
    all_exprs()
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .filter(|n| !recorded.contains(n) && n != "ALERTS")
        .collect()
}

/// Prometheus names documented in `docs/observability.md`: the second cell of table rows
/// whose first cell is a `/stats` name (`| `wasmcustom.meshguard...` | `meshguard_...` |`).
fn documented_names() -> BTreeSet<String> {
    let text = read(&paths::workspace_root().join("docs/observability.md"));
    let mut names = BTreeSet::new();
    for line in text.lines() {
        // `\|` is a pipe inside a cell.
        let line = line.replace("\\|", "\u{1}");
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(stats), Some(prom)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let unquote = |s: &str| s.strip_prefix('`')?.strip_suffix('`').map(str::to_owned);
        if let (Some(stats), Some(prom)) = (unquote(stats), unquote(prom))
            && stats.contains('.')
            && !prom.is_empty()
            && prom
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            names.insert(prom);
        }
    }
    names
}

/// Metric names on a `/stats/prometheus` page.
fn exposed_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

// === The end-to-end test ===

/// load_shed: a service that does 2 requests at a time, 200 ms each; a limit of at most 4.
const LOAD_SHED: &str = r#"{"concurrency_limit_params": {"initial_concurrency_limit": 2,
    "min_concurrency_limit": 1, "max_concurrency_limit": 4}}"#;
/// rate_limit: one token an hour for requests with an API key.
const RATE_LIMIT: &str = r#"{"descriptors": [{"name": "api",
    "entries": [{"header": {"name": "x-api-key"}}],
    "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "60s"}}]}"#;
/// sandbox_router: sandbox `dev-1` of the local service (the route ignores the routing header:
/// only the decision and its metrics matter here).
const SANDBOX: &str =
    r#"{"routes": [{"key": "dev-1", "service": "local_service", "cluster": "local_service"}]}"#;
/// circuit_breaker: keyed by authority; stays open for a minute once tripped.
const BREAKER: &str = r#"{"key": {"header": ":authority", "max_keys": 10},
    "open": {"base_duration": "60s", "max_duration": "60s", "jitter_percent": 0}}"#;

async fn get(addr: SocketAddr, headers: &[(&[u8], &[u8])]) -> meshguard_tests::Response {
    h1::exchange(addr, &h1::head("GET", "/", headers))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meshguard_metrics_reach_prometheus_with_labels() {
    let service = Upstream::start(UpstreamConfig {
        latency: Latency::Fixed { ms: 200 },
        capacity: Some(Capacity {
            concurrency: 2,
            queue: Queue::Unbounded,
        }),
        ..UpstreamConfig::default()
    })
    .await
    .unwrap();
    let dependency = Upstream::start(UpstreamConfig {
        failure: Some(Failure {
            rate: 1.0,
            kind: FailureKind::Status(500),
            windows: Vec::new(),
        }),
        ..UpstreamConfig::default()
    })
    .await
    .unwrap();

    let mut inbound = Listener::new("inbound_e2e")
        .filter(Filter::meshguard("rate_limit").unwrap().config(RATE_LIMIT))
        .filter(Filter::meshguard("load_shed").unwrap().config(LOAD_SHED))
        .filter(Filter::meshguard("sandbox_router").unwrap().config(SANDBOX));
    inbound.route_config = route_to_cluster("local_service");
    let mut outbound = Listener::new("outbound_e2e").filter(
        Filter::meshguard("circuit_breaker")
            .unwrap()
            .config(BREAKER),
    );
    outbound.route_config = route_to_cluster("dependency");
    let mut cfg = EnvoyConfig::new(None).listener(inbound).listener(outbound);
    cfg.clusters = vec![
        cluster("local_service", service.addr()),
        cluster("dependency", dependency.addr()),
    ];
    cfg.extra_args = vec![
        "--config-yaml".into(),
        read(&observability("stats_tags.yaml")),
    ];
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    let rules: Vec<PathBuf> = RULE_FILES.iter().map(|f| observability(f)).collect();
    let admin_addr = envoy.admin();
    let prom = tokio::task::spawn_blocking(move || Prometheus::start(admin_addr, &rules))
        .await
        .unwrap()
        .unwrap();

    // Scraped, with the class as a label and no `wasmcustom` left in the name.
    let before = prom.wait_for("meshguard_load_shed_rejected", |r| r.len() == 4);
    let classes: BTreeSet<&str> = before.iter().map(|s| label(s, "meshguard_class")).collect();
    assert_eq!(
        classes,
        BTreeSet::from(["critical", "critical_plus", "sheddable", "sheddable_plus"])
    );
    assert!(
        before.iter().all(|s| label(s, "job") == "envoy"),
        "{before:?}"
    );

    // Overload: 16 at once against 2 slots.
    let addr = envoy.listener("inbound_e2e");
    let burst: Vec<_> = (0..16)
        .map(|_| tokio::spawn(async move { get(addr, &[(b"host", b"svc")]).await }))
        .collect();
    let mut shed = 0u64;
    for t in burst {
        let r = t.await.unwrap();
        assert!(r.status == 200 || r.status == 503, "{r:?}");
        shed += u64::from(r.status == 503);
    }
    assert!(shed >= 8, "only {shed} of 16 shed");
    // Rate limit: the second and third request with the key are limited.
    let limited = [
        get(addr, &[(b"host", b"svc"), (b"x-api-key", b"k1")]).await,
        get(addr, &[(b"host", b"svc"), (b"x-api-key", b"k1")]).await,
        get(addr, &[(b"host", b"svc"), (b"x-api-key", b"k1")]).await,
    ];
    assert_eq!(
        limited.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 429, 429]
    );
    // Sandbox: one routed request, one with a malformed key.
    assert_eq!(
        get(addr, &[(b"host", b"svc"), (b"baggage", b"sandbox=dev-1")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(addr, &[(b"host", b"svc"), (b"baggage", b"sandbox=dev!1")])
            .await
            .status,
        200
    );
    // Breaker: five 500s trip it, the sixth call fails fast.
    let out = envoy.listener("outbound_e2e");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(out, &[(b"host", b"payments")]).await.status);
    }
    assert_eq!(statuses, [500, 500, 500, 500, 500, 503]);

    // Prometheus ends up with Envoy's count of rejections, under the class label.
    let envoy_rejected = |envoy: &Envoy| {
        envoy
            .stat("wasmcustom.meshguard.load_shed.rejected.critical")
            .unwrap()
    };
    let shed_series = prom.wait_for(
        r#"meshguard_load_shed_rejected{meshguard_class="critical"}"#,
        |r| r.len() == 1 && value(&r[0]) > 0.0 && value(&r[0]) == envoy_rejected(&envoy) as f64,
    );
    println!(
        "prometheus: meshguard_load_shed_rejected{{meshguard_class=\"critical\"}} -> {}",
        Value::Array(shed_series)
    );
    let breaker = prom.wait_for("meshguard_circuit_breaker_state", |r| {
        r.iter().any(|s| value(s) == 1.0)
    });
    assert_eq!(breaker.len(), 1, "{breaker:?}");
    assert_eq!(label(&breaker[0], "meshguard_cluster"), "dependency");
    assert_eq!(label(&breaker[0], "meshguard_key"), "payments");
    println!(
        "prometheus: meshguard_circuit_breaker_state -> {}",
        Value::Array(breaker)
    );
    prom.wait_for(
        r#"meshguard_circuit_breaker_opened{meshguard_reason="consecutive_failures"} == 1"#,
        |r| r.len() == 1,
    );
    prom.wait_for(
        r#"meshguard_rate_limit_limited{meshguard_rule="api"} == 2"#,
        |r| r.len() == 1,
    );
    prom.wait_for(
        r#"meshguard_sandbox_router_routed{meshguard_sandbox="dev-1"} == 1"#,
        |r| r.len() == 1,
    );
    prom.wait_for(
        r#"meshguard_sandbox_router_fallback{meshguard_reason="invalid_key"} == 1"#,
        |r| r.len() == 1,
    );

    // The SLO rules and the alerts work on the real names: meshguard's share of inbound
    // requests, and the shedding and breaker alerts pending.
    let ratio = prom.wait_for(r#"meshguard:rejections:ratio_rate5m{job="envoy"}"#, |r| {
        r.len() == 1 && value(&r[0]) > 0.0
    });
    println!(
        "prometheus: meshguard:rejections:ratio_rate5m -> {}",
        Value::Array(ratio)
    );
    prom.wait_for(
        r#"ALERTS{alertname="MeshguardLoadSheddingSustained", job="envoy"}"#,
        |r| r.len() == 1,
    );
    prom.wait_for(
        r#"ALERTS{alertname="MeshguardCircuitBreakerOpen", meshguard_cluster="dependency"}"#,
        |r| r.len() == 1,
    );

    // Names: what docs/observability.md lists is exactly what Envoy exposes for meshguard, and
    // every name the rules and the dashboard read exists on this Envoy.
    let (status, page) = admin::get(envoy.admin(), "/stats/prometheus").unwrap();
    assert_eq!(status, 200);
    let exposed = exposed_names(&page);
    let exposed_meshguard: BTreeSet<String> = exposed
        .iter()
        .filter(|n| n.starts_with("meshguard_"))
        .cloned()
        .collect();
    let documented_meshguard: BTreeSet<String> = documented_names()
        .into_iter()
        .filter(|n| n.starts_with("meshguard_"))
        .collect();
    assert_eq!(
        documented_meshguard, exposed_meshguard,
        "docs/observability.md vs Envoy's /stats/prometheus"
    );
    let missing: Vec<_> = used_names().difference(&exposed).cloned().collect();
    assert!(
        missing.is_empty(),
        "the rules or the dashboard read metrics this Envoy does not expose: {missing:?}"
    );
}

// === Rules and dashboard, without Envoy ===

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let promtool = tool("promtool");
    let dir = paths::workspace_root().join("observability");
    for args in [
        vec!["check", "rules", "alerts.yml", "slo.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn dashboard_and_rules_read_only_documented_metrics() {
    let documented = documented_names();
    assert!(documented.len() >= 30, "{documented:?}");
    let recorded = recorded_names();
    let exprs = all_exprs();
    assert!(
        exprs
            .iter()
            .filter(|(f, _)| f == "grafana-dashboard.json")
            .count()
            >= 12
    );
    for (file, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{file}: no metric in {expr}");
        for n in names {
            assert!(
                documented.contains(&n) || recorded.contains(&n) || n == "ALERTS",
                "{file}: `{n}` (in {expr}) is neither documented in docs/observability.md nor \
                 recorded by the rules"
            );
        }
    }
}

#[test]
fn dashboard_has_a_row_per_filter() {
    let dashboard: Value =
        serde_json::from_str(&read(&observability("grafana-dashboard.json"))).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for filter in [
        "load_shed",
        "circuit_breaker",
        "rate_limit",
        "sandbox_router",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(filter)),
            "no row for {filter}: {rows:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{p}");
        assert!(!p["targets"].as_array().unwrap().is_empty(), "{p}");
    }
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (job, meshguard_class) (rate(meshguard_load_shed_rejected{job=~"$job", meshguard_class!="x"}[$__rate_interval])) / ignoring(x) group_left (y) a:b:c offset 5m"#
        ),
        ["a:b:c", "meshguard_load_shed_rejected"]
    );
    assert_eq!(
        names(r#"rate({__name__=~"a_b|c_d"}[5m]) > 0.5 and on (job) x_total > bool 1e3"#),
        ["a_b", "c_d", "x_total"]
    );
    assert_eq!(
        names("max(meshguard_circuit_breaker_state) by (meshguard_cluster) >= 1"),
        ["meshguard_circuit_breaker_state"]
    );
}
