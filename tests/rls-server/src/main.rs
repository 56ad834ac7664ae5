//! `meshguard-rls --listen 127.0.0.1:8081 --limits limits.yaml [--redis redis://127.0.0.1:6379]`
//!
//! Serves Envoy's Rate Limit Service (RLS v3, h2c) until SIGINT or SIGTERM. Prints
//! `listening on ADDR` on stdout once bound (scripts wait for that line; with port 0 it carries
//! the real port).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use meshguard_rls::{Limits, RlsServer, Storage};

const USAGE: &str =
    "usage: meshguard-rls --limits FILE [--listen ADDR] [--redis URL] [--cache-size N]
  --limits FILE     limits in Limitador's YAML format (namespace = RLS domain)
  --listen ADDR     address to bind (default 127.0.0.1:8081; port 0 = ephemeral)
  --redis URL       count in Redis (e.g. redis://127.0.0.1:6379), shared by every server
                    using it; default: in memory (limitador's in-memory storage)
  --cache-size N    in memory: most per-value counters kept (default 10000)";

struct Args {
    listen: SocketAddr,
    limits: PathBuf,
    storage: Storage,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let limits = Limits::from_file(&args.limits)?;
    let server = RlsServer::bind(args.listen, limits, args.storage).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.addr())?;
    stdout.flush()?;
    drop(stdout);
    shutdown_signal().await?;
    drop(server);
    Ok(())
}

/// `None` when help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8081));
    let mut limits = None;
    let mut redis = None;
    let mut cache_size = Storage::DEFAULT_CACHE_SIZE;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().context("--listen needs an address")?;
                listen = value
                    .parse()
                    .with_context(|| format!("--listen: bad address {value:?}"))?;
            }
            "--limits" => {
                limits = Some(PathBuf::from(args.next().context("--limits needs a file")?))
            }
            "--redis" => redis = Some(args.next().context("--redis needs a URL")?),
            "--cache-size" => {
                let value = args.next().context("--cache-size needs a number")?;
                cache_size = value
                    .parse()
                    .with_context(|| format!("--cache-size: bad number {value:?}"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let limits = limits.with_context(|| format!("--limits is required\n{USAGE}"))?;
    let storage = match redis {
        Some(url) => Storage::redis(url),
        None => Storage::Memory { cache_size },
    };
    Ok(Some(Args {
        listen,
        limits,
        storage,
    }))
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
