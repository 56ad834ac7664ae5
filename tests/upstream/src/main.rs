//! `meshguard-upstream --listen 127.0.0.1:8080 [--config JSON | --config @file.json]`
//!
//! Serves the test upstream until SIGINT or SIGTERM. Prints `listening on ADDR` on stdout once
//! bound (scripts wait for that line; with port 0 it carries the real port). The control
//! endpoints `GET /_upstream/stats` and `PUT /_upstream/config` are on the same port.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use meshguard_upstream::{Upstream, UpstreamConfig};

const USAGE: &str = "usage: meshguard-upstream [--listen ADDR] [--config JSON | --config @FILE]
  --listen ADDR   address to bind (default 127.0.0.1:8080; port 0 = ephemeral)
  --config JSON   UpstreamConfig as JSON, or @path to a file holding it (default: plain echo)
Reserved paths: GET|DELETE /_upstream/stats, GET|PUT /_upstream/config";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some((listen, config)) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let upstream = Upstream::bind(listen, config).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", upstream.addr())?;
    stdout.flush()?;
    drop(stdout);
    shutdown_signal().await?;
    drop(upstream);
    Ok(())
}

/// `None` when help was asked for.
fn parse_args(
    mut args: impl Iterator<Item = String>,
) -> anyhow::Result<Option<(SocketAddr, UpstreamConfig)>> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    let mut config = UpstreamConfig::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().context("--listen needs an address")?;
                listen = value
                    .parse()
                    .with_context(|| format!("--listen: bad address {value:?}"))?;
            }
            "--config" => {
                let value = args.next().context("--config needs JSON or @file")?;
                let text = match value.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path)
                        .with_context(|| format!("--config: reading {path}"))?,
                    None => value,
                };
                config = UpstreamConfig::from_json(&text)?;
            }
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Some((listen, config)))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
