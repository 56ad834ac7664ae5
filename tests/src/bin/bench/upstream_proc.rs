//! The test upstream as its own process (so the load generator and the upstream do not share a
//! runtime), for the benchmarks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meshguard_tests::admin;
use serde_json::Value;

/// A running `meshguard-upstream`; killed on drop.
pub struct Upstream {
    child: Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        meshguard_tests::children::forget(self.child.id());
    }
}

pub fn start_upstream(config: &str) -> Result<Upstream> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("meshguard-upstream");
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--config", config])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    meshguard_tests::children::register(child.id());
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .context("upstream address")?
        .parse()?;
    Ok(Upstream { child, addr })
}

/// Waits until the upstream has nothing in flight or queued (the previous config's backlog).
pub fn drain(up: &Upstream) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = admin::get(up.addr, "/_upstream/stats")?;
        let v: Value = serde_json::from_str(&body)?;
        if v["in_flight"].as_u64() == Some(0) && v["queued"].as_u64() == Some(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("upstream did not drain");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replaces the upstream's config (restarts its failure-window clock).
pub fn configure(up: &Upstream, config: &str) -> Result<()> {
    let (status, body) = admin::put(up.addr, "/_upstream/config", config)?;
    if status != 204 {
        bail!("upstream refused its config ({status}): {body}");
    }
    Ok(())
}

/// The upstream's counters.
pub fn stats(up: &Upstream) -> Result<Value> {
    let (_, body) = admin::get(up.addr, "/_upstream/stats")?;
    Ok(serde_json::from_str(&body)?)
}
