//! The generator's output is what we ship, is valid for stock Envoy 1.40, and works end to end.

use std::net::{SocketAddr, TcpListener};

use meshguard_config::generate::{envoy_bootstrap, istio_manifests};
use meshguard_config::spec::Spec;
use meshguard_config::to_yaml;
use meshguard_tests::{Envoy, EnvoyConfig, h1, paths, template};
use meshguard_upstream::{Upstream, UpstreamConfig};

fn root() -> std::path::PathBuf {
    paths::workspace_root()
}

/// `envoy-configs/sidecar.yaml` and `istio/shop.yaml` are exactly what the generator makes from
/// the example spec (regenerate with `cargo run -p meshguard-config -- envoy-configs/examples/shop.yaml
/// --envoy envoy-configs/sidecar.yaml --istio envoy-configs/istio/shop.yaml`).
#[test]
fn shipped_configs_are_the_generator_output() {
    let spec = Spec::parse(
        &std::fs::read_to_string(root().join("envoy-configs/examples/shop.yaml")).unwrap(),
    )
    .unwrap();
    let strip = |s: String| {
        s.lines()
            .filter(|l| !l.starts_with("# Generated"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let envoy = strip(std::fs::read_to_string(root().join("envoy-configs/sidecar.yaml")).unwrap());
    assert_eq!(
        envoy,
        strip(to_yaml(&envoy_bootstrap(&spec)).unwrap()),
        "envoy-configs/sidecar.yaml is stale"
    );
    let istio =
        strip(std::fs::read_to_string(root().join("envoy-configs/istio/shop.yaml")).unwrap());
    let generated = istio_manifests(&spec, env!("CARGO_PKG_VERSION"))
        .iter()
        .map(|m| to_yaml(m).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    assert_eq!(
        istio,
        strip(generated),
        "envoy-configs/istio/shop.yaml is stale"
    );
    assert_eq!(istio_manifests(&spec, "x").len(), 4);
    let remote = Spec::parse(
        &std::fs::read_to_string(root().join("envoy-configs/examples/shop-remote.yaml")).unwrap(),
    )
    .unwrap();
    let shipped =
        strip(std::fs::read_to_string(root().join("envoy-configs/sidecar-remote.yaml")).unwrap());
    assert_eq!(
        shipped,
        strip(to_yaml(&envoy_bootstrap(&remote)).unwrap()),
        "envoy-configs/sidecar-remote.yaml is stale"
    );
}

/// Serves `dir/<name>` at `/meshguard/<name>` (a minimal HTTP/1.1 file server for the test).
async fn serve_modules(dir: std::path::PathBuf) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let name = path.strip_prefix("/meshguard/").unwrap_or("");
                let resp = match std::fs::read(dir.join(name)) {
                    Ok(body) if !name.is_empty() && !name.contains('/') => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&resp).await;
            });
        }
    });
    addr
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_sidecar_fetches_its_modules_over_http_pinned_by_sha256() {
    use sha2::Digest;
    let dist = paths::wasm("load_shed")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let modules = serve_modules(dist.clone()).await;
    let service = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let (inbound, outbound) = (free_port(), free_port());
    let sha = |f: &str| {
        hex(&sha2::Sha256::digest(
            std::fs::read(dist.join(format!("{f}.wasm"))).unwrap(),
        ))
    };
    let yaml = format!(
        "service: shop\nport: {}\nbind: 127.0.0.1\ninbound_port: {inbound}\noutbound_port: {outbound}\n\
         policies:\n  rate_limit: {{rps: 1, burst: 2}}\n  load_shed: {{}}\n\
         modules:\n  remote:\n    base_url: http://{modules}/meshguard\n    sha256: {{rate_limit: {}, load_shed: {}}}\n",
        service.addr().port(),
        sha("rate_limit"),
        sha("load_shed"),
    );
    let spec = Spec::parse(&yaml).unwrap();
    let envoy = tokio::task::spawn_blocking(move || {
        Envoy::start(&EnvoyConfig::raw(envoy_bootstrap(&spec)))
    })
    .await
    .unwrap()
    .unwrap();
    let at = SocketAddr::from(([127, 0, 0, 1], inbound));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = h1::exchange(at, &h1::head("GET", "/", &[(b"host", b"shop")]))
            .await
            .unwrap();
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 429], "{}", envoy.log_tail(4000));
}

#[test]
fn bad_specs_are_refused_with_the_field_named() {
    let cases = [
        ("service: Shop\nport: 1", "service"),
        (
            "service: shop\nport: 1\ndependencies: [{name: a, address: nope}]",
            "dependencies[0].address",
        ),
        (
            "service: shop\nport: 1\ndependencies: [{name: a, address: 'a:1'}, {name: a, address: 'b:1'}]",
            "dependencies: names must be unique",
        ),
        (
            "service: shop\nport: 1\npolicies: {rate_limit: {rps: 0}}",
            "policies.rate_limit.rps",
        ),
        ("service: shop\nport: 1\nextra: 1", "unknown field"),
    ];
    for (yaml, want) in cases {
        let e = Spec::parse(yaml).unwrap_err().to_string();
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_sidecar_serves_inbound_and_outbound_traffic_with_every_policy() {
    let service = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let orders = Upstream::start(UpstreamConfig::default()).await.unwrap();
    let (inbound, outbound) = (free_port(), free_port());
    let dist = paths::wasm("load_shed")
        .unwrap()
        .parent()
        .unwrap()
        .display()
        .to_string();
    let yaml = format!(
        "service: shop\nport: {}\nbind: 127.0.0.1\ninbound_port: {inbound}\noutbound_port: {outbound}\n\
         dependencies: [{{name: orders, address: '127.0.0.1:{}'}}]\n\
         policies:\n  rate_limit: {{rps: 1, burst: 3}}\n  load_shed: {{}}\n  sandbox_router: {{}}\n  circuit_breaker: {{}}\n\
         modules: {{dir: '{dist}'}}\n",
        service.addr().port(),
        orders.addr().port(),
    );
    let spec = Spec::parse(&yaml).unwrap();
    let envoy = tokio::task::spawn_blocking(move || {
        Envoy::start(&EnvoyConfig::raw(envoy_bootstrap(&spec)))
    })
    .await
    .unwrap()
    .unwrap();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    // Outbound: routed by :authority to the dependency.
    let r = h1::exchange(
        at(outbound),
        &h1::head("GET", "/o", &[(b"host", b"orders")]),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(orders.stats().received, 1);
    // Inbound: to the local service, through rate_limit (burst 3) and load_shed.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            h1::exchange(at(inbound), &h1::head("GET", "/", &[(b"host", b"shop")]))
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(service.stats().received, 3);
    // Every module configured.
    let log = envoy.log();
    for f in [
        "rate_limit",
        "load_shed",
        "sandbox_router",
        "circuit_breaker",
    ] {
        assert!(
            log.contains(&format!("meshguard {f}: configured")),
            "{f}: {log}"
        );
    }
}

/// The shipped sidecar validates once its module folder is filled in.
#[test]
fn shipped_sidecar_validates() {
    let dist = paths::wasm("load_shed")
        .unwrap()
        .parent()
        .unwrap()
        .display()
        .to_string();
    let text = std::fs::read_to_string(root().join("envoy-configs/sidecar.yaml")).unwrap();
    let rendered = template::render(&text, &[("MESHGUARD_DIST", &dist)]).unwrap();
    let tmp = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(tmp.path(), rendered).unwrap();
    let out = std::process::Command::new(paths::envoy_binary().unwrap())
        .args(["--mode", "validate", "-c"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The generated sidecar turns meshguard's per-class/cluster/rule/sandbox stats into Prometheus
/// labels with `observability/stats_tags.yaml` (checked against a real Prometheus in the e2e
/// suite).
#[test]
fn the_sidecar_carries_the_meshguard_stats_tags() {
    let spec = Spec::parse(
        &std::fs::read_to_string(root().join("envoy-configs/examples/shop.yaml")).unwrap(),
    )
    .unwrap();
    let bootstrap = envoy_bootstrap(&spec);
    let tags: Vec<&str> = bootstrap["stats_config"]["stats_tags"]
        .as_array()
        .expect("stats_config.stats_tags")
        .iter()
        .filter_map(|t| t["tag_name"].as_str())
        .collect();
    for want in [
        "meshguard_class",
        "meshguard_cluster",
        "meshguard_rule",
        "meshguard_sandbox",
    ] {
        assert!(tags.contains(&want), "{want} missing from {tags:?}");
    }
}
