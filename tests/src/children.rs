//! Processes the harness started (Envoy, upstreams, the registry), so a benchmark stopped by
//! a signal does not leave them running.
//!
//! Every owner kills its child on drop, but a signal (Ctrl-C, `kill`) ends the process without
//! running destructors. [`kill_on_signal`] (called by `meshguard-bench`) waits for SIGINT or
//! SIGTERM on a thread of its own and kills every child still registered before exiting.
//! `PR_SET_PDEATHSIG` would also cover SIGKILL, but it fires when the *thread* that spawned the
//! child exits, and tests share an Envoy across test threads.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result};

static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Remembers a child the harness started (until [`forget`]).
pub fn register(pid: u32) {
    if let Ok(mut live) = LIVE.lock() {
        live.insert(pid);
    }
}

/// Forgets a child that has been killed and reaped.
pub fn forget(pid: u32) {
    if let Ok(mut live) = LIVE.lock() {
        live.remove(&pid);
    }
}

/// The children registered and not forgotten.
pub fn live() -> Vec<u32> {
    LIVE.lock()
        .map(|l| l.iter().copied().collect())
        .unwrap_or_default()
}

/// Kills every registered child (SIGKILL, through `kill(1)`: the harness has no unsafe code to
/// call `kill(2)` itself).
pub fn kill_all() {
    for pid in live() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        forget(pid);
    }
}

/// On SIGINT or SIGTERM, kills every registered child and exits (status 128 + signal).
///
/// # Errors
/// If the signal handlers or their thread cannot be set up.
pub fn kill_on_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("signal runtime")?;
    // Handlers are installed here, before returning, so no signal slips through.
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("kill-on-signal".into())
        .spawn(move || {
            let code = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => 130,
                    _ = term.recv() => 143,
                }
            });
            let n = live().len();
            kill_all();
            eprintln!("meshguard-bench: stopped by a signal; killed {n} child process(es)");
            std::process::exit(code);
        })
        .context("signal thread")?;
    Ok(())
}
