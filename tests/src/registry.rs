//! A real OCI registry (Debian's `docker-registry`, CNCF distribution 2.8) on a loopback port,
//! and the `skopeo` client that talks to it.
//!
//! The registry listens on `127.0.0.1:0` (the kernel picks a free port; distribution logs the
//! address it bound), keeps its storage in a temporary directory, and is ready when `GET /v2/`
//! answers 200, within [`STARTUP_TIMEOUT`]. On drop it is killed, and if the test is failing the
//! tail of its log is printed. Neither tool is optional: when one is missing the test fails and
//! says that `./build.sh setup` installs it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::admin;

/// How long the registry may take to bind and answer `GET /v2/`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `docker-registry serve`; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Registry {
    /// Starts a registry with filesystem storage in a fresh temporary directory and waits until
    /// `GET /v2/` answers 200.
    ///
    /// # Errors
    /// When `docker-registry` is not installed, exits, or is not ready within
    /// [`STARTUP_TIMEOUT`]; the error carries the tail of its log.
    pub fn start() -> Result<Self> {
        let bin = tool("docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("meshguard-registry-")
            .tempdir()?;
        let storage = dir.path().join("storage");
        fs::create_dir(&storage)?;
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:0\n  secret: meshguard-tests\n",
                storage.display()
            ),
        )?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning docker-registry")?;
        crate::children::register(child.id());
        let mut registry = Self {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        if let Err(e) = registry.wait_ready() {
            bail!("{e:#}\n--- registry log ---\n{}", registry.log());
        }
        Ok(registry)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("docker-registry exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("docker-registry not ready after {STARTUP_TIMEOUT:?}");
            }
            if self.addr.port() == 0 {
                if let Some(addr) = listening_address(&self.log()) {
                    self.addr = addr;
                }
            } else if let Ok((200, _)) = admin::get(self.addr, "/v2/") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The distribution-API URL of a blob: `http://<host>/v2/<repo>/blobs/<digest>`.
    pub fn blob_url(&self, repo: &str, digest: &str) -> String {
        format!("http://{}/v2/{repo}/blobs/{digest}", self.host())
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where it stores blobs and manifests.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::children::forget(self.child.id());
        if std::thread::panicking() {
            let log = self.log();
            let start = log.len().saturating_sub(8000);
            let start = (start..log.len())
                .find(|i| log.is_char_boundary(*i))
                .unwrap_or(0);
            eprintln!("--- registry log (tail) ---\n{}", &log[start..]);
        }
    }
}

/// Distribution logs `msg="listening on 127.0.0.1:41234"` once it has bound.
fn listening_address(log: &str) -> Option<SocketAddr> {
    let rest = log.split("listening on ").nth(1)?;
    let end = rest
        .find(|c: char| c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Runs `skopeo` with `args` and returns its standard output.
///
/// # Errors
/// When skopeo is not installed or exits with an error (the error carries its stderr).
pub fn skopeo(args: &[&str]) -> Result<String> {
    let bin = tool("skopeo")?;
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The path of a Debian tool the OCI tests need, or an error saying how to install it.
fn tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .with_context(|| {
            format!(
                "{name} not found in PATH: `./build.sh setup` installs it (Debian package {name})"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_address_is_read_from_the_log() {
        let log = "time=\"x\" level=info msg=\"redis not configured\"\n\
                   time=\"x\" level=info msg=\"listening on 127.0.0.1:39759\" go.version=go1.19.8\n";
        assert_eq!(
            listening_address(log),
            Some(SocketAddr::from(([127, 0, 0, 1], 39759)))
        );
        assert_eq!(listening_address("level=info msg=\"starting\""), None);
    }

    #[test]
    fn a_missing_tool_names_the_setup_command() {
        let err = tool("meshguard-no-such-tool").unwrap_err().to_string();
        assert!(err.contains("./build.sh setup"), "{err}");
    }
}
