//! `./build.sh up`: stock Envoy with all four meshguard filters in front of a demo upstream.
//!
//! Starts `meshguard-upstream` on a free loopback port, renders `envoy-configs/demo.yaml`, starts
//! Envoy (listener 127.0.0.1:10000, admin 127.0.0.1:9901), prints what to try, and on Ctrl-C
//! (or if either process exits) stops both.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meshguard_tests::{admin, template};

struct Args {
    envoy: PathBuf,
    dist: PathBuf,
    upstream: PathBuf,
    config: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut envoy, mut dist, mut upstream, mut config) = (None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().map(PathBuf::from).context("missing value")?;
        match flag.as_str() {
            "--envoy" => envoy = Some(value),
            "--dist" => dist = Some(value),
            "--upstream" => upstream = Some(value),
            "--config" => config = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(Args {
        envoy: envoy.context("--envoy")?,
        dist: dist.context("--dist")?,
        upstream: upstream.context("--upstream")?,
        config: config.context("--config")?,
    })
}

/// Kills the child when dropped (covers every early return).
struct Guard(Child, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        eprintln!("stopped {}", self.1);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let mut upstream = Command::new(&args.upstream)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the demo upstream")?;
    let stdout = upstream.stdout.take().context("upstream stdout")?;
    let mut upstream = Guard(upstream, "demo upstream");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let upstream_addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .context("upstream did not report its address")?
        .parse()?;

    let template_text = std::fs::read_to_string(&args.config)?;
    let dist = args.dist.display().to_string();
    let port = upstream_addr.port().to_string();
    let rendered = template::render(
        &template_text,
        &[("MESHGUARD_DIST", &dist), ("UPSTREAM_PORT", &port)],
    )?;
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("demo.yaml");
    std::fs::write(&config_path, rendered)?;
    let envoy = Command::new(&args.envoy)
        .arg("-c")
        .arg(&config_path)
        .args([
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ])
        .args(["--component-log-level", "wasm:info"])
        .spawn()
        .context("starting Envoy")?;
    let mut envoy = Guard(envoy, "envoy");

    let admin_addr = "127.0.0.1:9901".parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = envoy.0.try_wait()? {
            bail!("Envoy exited ({status}); is port 10000 or 9901 already in use?");
        }
        if matches!(admin::get(admin_addr, "/ready"), Ok((200, _))) {
            break;
        }
        if Instant::now() > deadline {
            bail!("Envoy not ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "\nmeshguard is up: Envoy 1.40 with rate_limit, load_shed, sandbox_router, circuit_breaker\n\
         in front of a demo upstream ({upstream_addr}).\n\n\
         \x20 curl -i http://127.0.0.1:10000/                  # the upstream echoes what it received\n\
         \x20 curl -i http://127.0.0.1:10000/ -H 'x-upstream-status: 503'\n\
         \x20 curl -s http://127.0.0.1:9901/stats | grep -e meshguard -e wasm   # filter stats\n\
         \x20 curl -s http://127.0.0.1:9901/stats/prometheus           # the same, for Prometheus\n\n\
         Ctrl-C (or SIGTERM) stops everything.\n"
    );
    // Ctrl-C or SIGTERM (e.g. `timeout`, a process manager) stop Envoy and the upstream too.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(s) = envoy.0.try_wait()? { bail!("Envoy exited ({s})"); }
                if let Some(s) = upstream.0.try_wait()? { bail!("demo upstream exited ({s})"); }
            }
        }
    }
    Ok(())
}
