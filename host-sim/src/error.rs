//! Errors from building, loading and driving a simulated Envoy.
//!
//! One variant per failure kind, each with a stable `Display` so tests can match on it. A
//! misbehaving *guest* never produces an `Error` by itself: Envoy answers it with a status code
//! or fails the VM (a trap), and host-sim does the same. `Error` is for what Envoy would refuse
//! at configuration time (a module that does not load, a config that `on_configure` rejects) and
//! for misuse of the simulator API.

use std::fmt;
use std::path::PathBuf;

use crate::trace::LogLine;

/// Result alias for host-sim operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A `.wasm` artifact was not found in any of the searched places.
    WasmNotFound {
        /// The module name asked for (without `.wasm`).
        name: String,
        /// Every path that was tried.
        searched: Vec<PathBuf>,
    },
    /// Reading a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a valid module for this engine (Envoy: "Failed to load Wasm code").
    Compile(String),
    /// The module imports functions that Envoy (and host-sim) do not provide.
    MissingImports(Vec<String>),
    /// The module does not follow the proxy-wasm ABI (no ABI version export, no allocator,
    /// wrong callback signature).
    Abi(String),
    /// A VM could not be started: `_initialize` trapped or `proxy_on_vm_start` returned false.
    StartFailed {
        /// Which VM (`canary`, `main`, `worker0`, ...).
        vm: String,
        /// Why.
        reason: String,
        /// Log lines the module wrote while starting.
        logs: Vec<LogLine>,
    },
    /// `proxy_on_configure` returned false (or trapped): Envoy rejects the plugin config.
    ConfigRejected {
        /// Which VM rejected it (normally `canary`).
        vm: String,
        /// Log lines the module wrote while configuring: the reason is usually here.
        logs: Vec<LogLine>,
    },
    /// The simulator API was used in a way Envoy cannot reproduce (for example response headers
    /// for a request that was never forwarded).
    Usage(String),
    /// A scenario file is invalid.
    Scenario(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WasmNotFound { name, searched } => {
                write!(
                    f,
                    "{name}.wasm not found (run `./build.sh` to build the wasm modules); searched:"
                )?;
                for p in searched {
                    write!(f, " {}", p.display())?;
                }
                Ok(())
            }
            Error::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Error::Compile(m) => write!(f, "failed to load Wasm code: {m}"),
            Error::MissingImports(names) => {
                write!(
                    f,
                    "module imports functions that Envoy does not provide: {}",
                    names.join(", ")
                )
            }
            Error::Abi(m) => write!(f, "not a proxy-wasm module: {m}"),
            Error::StartFailed { vm, reason, logs } => {
                write!(f, "VM {vm} failed to start: {reason}")?;
                write_logs(f, logs)
            }
            Error::ConfigRejected { vm, logs } => {
                write!(f, "plugin configuration rejected by on_configure ({vm})")?;
                write_logs(f, logs)
            }
            Error::Usage(m) => write!(f, "host-sim usage: {m}"),
            Error::Scenario(m) => write!(f, "scenario: {m}"),
        }
    }
}

fn write_logs(f: &mut fmt::Formatter<'_>, logs: &[LogLine]) -> fmt::Result {
    if logs.is_empty() {
        return Ok(());
    }
    write!(f, "; module log:")?;
    for l in logs {
        write!(f, "\n  [{}] {}", l.level, l.message)?;
    }
    Ok(())
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// The module's log lines attached to a start or configure failure (empty otherwise).
    pub fn logs(&self) -> &[LogLine] {
        match self {
            Error::StartFailed { logs, .. } | Error::ConfigRejected { logs, .. } => logs,
            _ => &[],
        }
    }
}
