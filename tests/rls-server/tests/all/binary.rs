//! The `meshguard-rls` binary: prints `listening on ADDR`, serves, stops on SIGTERM.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_meshguard-rls");

const LIMITS: &str = "- {namespace: d, max_value: 1, seconds: 60, conditions: [], variables: []}\n";

/// Starts the binary and reads the address it prints.
async fn spawn(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("no output");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

async fn sigterm_and_wait(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn serves_in_memory_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.yaml");
    std::fs::write(&limits, LIMITS).unwrap();
    let (child, addr) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--limits",
        limits.to_str().unwrap(),
    ])
    .await;
    let mut c = meshguard_rls::client(addr).await.unwrap();
    assert_eq!(codes(&mut c, "d", &[&[("k", "v")]], 2).await, [OK, OVER]);
    sigterm_and_wait(child).await;
}

#[tokio::test]
async fn two_processes_share_redis() {
    let redis = meshguard_rls::RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.yaml");
    std::fs::write(&limits, LIMITS).unwrap();
    let url = redis.url();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--limits",
        limits.to_str().unwrap(),
        "--redis",
        url.as_str(),
    ];
    let (a, addr_a) = spawn(&args).await;
    let (b, addr_b) = spawn(&args).await;
    let mut ca = meshguard_rls::client(addr_a).await.unwrap();
    let mut cb = meshguard_rls::client(addr_b).await.unwrap();
    assert_eq!(codes(&mut ca, "d", &[&[("k", "v")]], 1).await, [OK]);
    assert_eq!(codes(&mut cb, "d", &[&[("k", "v")]], 1).await, [OVER]);
    sigterm_and_wait(a).await;
    sigterm_and_wait(b).await;
}

#[tokio::test]
async fn rejects_bad_arguments_and_bad_limits() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "- {namespace: d, max_value: 1, seconds: 0, conditions: [], variables: []}\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    for (args, want) in [
        (&["--bogus"][..], "unknown argument"),
        (&["--listen", "127.0.0.1:0"], "--limits is required"),
        (
            &["--limits", bad, "--listen", "127.0.0.1:0"],
            "limit #0: seconds: must be at least 1",
        ),
        (&["--limits", missing], "reading"),
        (&["--limits", bad, "--listen", "nowhere"], "bad address"),
        (&["--limits", bad, "--cache-size", "x"], "bad number"),
    ] {
        let output = Command::new(BIN).args(args).output().await.unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let help = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: meshguard-rls"));
}
