//! A throwaway `redis-server` on a free loopback port, for tests and benchmarks of the Redis
//! mode (and of anything that needs several RLS servers sharing one Redis).
//!
//! Redis cannot be told to pick its own port, so a free one is found by binding
//! `127.0.0.1:0` and closing it; if another process takes it first, Redis exits and the start
//! is retried on a new port. Persistence is off (`--save ''`, `--appendonly no`). The process
//! is killed when the handle drops. `redis-server` comes from the Debian package of that name,
//! which `./build.sh setup` installs; `MESHGUARD_REDIS_SERVER` overrides the binary.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long Redis may take to answer `PING` after it is started.
pub const REDIS_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports to try before giving up.
const ATTEMPTS: usize = 5;

/// A running `redis-server`; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// `redis-server` is not installed (the message says how to install it), exits, or does
    /// not answer within [`REDIS_STARTUP_TIMEOUT`].
    pub fn start() -> anyhow::Result<Self> {
        let bin = std::env::var("MESHGUARD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        Self::start_binary(&bin)
    }

    /// [`RedisServer::start`] with the given `redis-server` binary (a name on `PATH`, or a
    /// path).
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`].
    pub fn start_binary(bin: &str) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = match Command::new(bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(std::env::temp_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "`{bin}` not found: the Redis tests need the Debian package redis-server \
                     (`./build.sh setup` installs it; or `apt-get install redis-server`)"
                ),
                Err(e) => return Err(e).context(format!("spawning {bin}")),
            };
            let mut server = Self {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context(format!("starting {bin} ({ATTEMPTS} attempts)"))
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + REDIS_STARTUP_TIMEOUT;
        let mut backoff = Duration::from_millis(5);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited during start-up ({status}); port taken?");
            }
            if ping(self.addr).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within {REDIS_STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// The address Redis listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Redis's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One inline `PING`, answered `+PONG`?
fn ping(addr: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    Ok(&reply == b"+PONG\r\n")
}
