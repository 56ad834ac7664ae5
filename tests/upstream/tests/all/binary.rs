//! The `meshguard-upstream` binary: prints `listening on ADDR`, serves, stops on SIGTERM.

use std::process::Stdio;

use meshguard_upstream::UpstreamConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_meshguard-upstream");

#[tokio::test]
async fn serves_until_sigterm() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(r#"{"latency":{"fixed":{"ms":1}},"seed":5}"#)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().parse().unwrap();

    let reply = get(Proto::H1, addr, "/hello", &[]).await;
    assert_eq!(reply.doc().uri, "/hello");
    let reply = get(Proto::H2, addr, "/_upstream/config", &[]).await;
    let config: UpstreamConfig = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(config.seed, 5);

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
async fn rejects_bad_arguments() {
    for args in [
        &["--bogus"][..],
        &["--config", r#"{"seed":-1}"#],
        &["--listen", "nowhere"],
    ] {
        let output = Command::new(BIN).args(args).output().await.unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty());
    }
}
