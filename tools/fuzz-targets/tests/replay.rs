//! Replays every committed seed (`fuzz/corpus/<target>/`) and every crash reproducer
//! (`fuzz/regressions/<target>/`) through its target, so `cargo test --workspace` keeps the
//! fixed bugs fixed and the seeds meaningful. The ABI targets need `dist/*.wasm`
//! (`./build.sh`); without them they are skipped with a note. Each ABI target is its own test
//! (compiling a module with wasmtime takes a few seconds in a debug build; they run in
//! parallel).

use std::path::{Path, PathBuf};

use meshguard_fuzz_targets::{TARGETS, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| p.file_name().is_some_and(|n| n != ".gitkeep"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Runs every seed and regression of `name`; returns the failures.
fn replay(name: &str, target: Target) -> Vec<String> {
    let mut failed = Vec::new();
    for kind in ["corpus", "regressions"] {
        for f in files(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(format!("{name}: {}", f.display()));
            }
        }
    }
    failed
}

fn target(name: &str) -> Target {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seeds");
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs is missing"
        );
    }
}

#[test]
fn policy_targets_replay() {
    let failed: Vec<String> = TARGETS
        .iter()
        .filter(|(n, _)| !n.starts_with("abi_"))
        .flat_map(|(n, t)| replay(n, *t))
        .collect();
    assert!(failed.is_empty(), "failed inputs:\n{}", failed.join("\n"));
}

fn abi(module: &str) {
    if !meshguard_fuzz_targets::abi::module_available(module) {
        eprintln!("skipping abi_{module}: dist/{module}.wasm missing (run ./build.sh)");
        return;
    }
    meshguard_fuzz_targets::abi::check_known_configs(module);
    let name = format!("abi_{module}");
    let failed = replay(&name, target(&name));
    assert!(failed.is_empty(), "failed inputs:\n{}", failed.join("\n"));
}

#[test]
fn abi_load_shed_replay() {
    abi("load_shed");
}

#[test]
fn abi_circuit_breaker_replay() {
    abi("circuit_breaker");
}

#[test]
fn abi_rate_limit_replay() {
    abi("rate_limit");
}

#[test]
fn abi_sandbox_router_replay() {
    abi("sandbox_router");
}

#[test]
fn abi_meshguard_replay() {
    abi("meshguard");
}
