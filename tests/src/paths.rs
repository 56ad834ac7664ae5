//! Where the pinned Envoy and the built filters live.
//!
//! `./build.sh` sets `MESHGUARD_ENVOY` and `MESHGUARD_WASM_DIR`; without them (a plain
//! `cargo test` after `./build.sh`), the defaults inside the checkout are used.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The workspace root (parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The Envoy 1.40.0 binary unpacked by `./build.sh setup`.
pub fn envoy_binary() -> Result<PathBuf> {
    let path = std::env::var_os("MESHGUARD_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/envoy-1.40.0/envoy"));
    if !path.is_file() {
        bail!(
            "Envoy not found at {} — run `./build.sh setup` (or set MESHGUARD_ENVOY)",
            path.display()
        );
    }
    Ok(path)
}

/// A built module: `dist/<name>.wasm` for filters, `dist/fixtures/<name>.wasm` for fixtures.
pub fn wasm(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("MESHGUARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist"));
    for candidate in [
        dir.join(format!("{name}.wasm")),
        dir.join("fixtures").join(format!("{name}.wasm")),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name}.wasm not found in {} — run `./build.sh` first (or set MESHGUARD_WASM_DIR)",
        dir.display()
    )
}

/// A fault-injection test build, `dist/fault/<name>.wasm` (built by `tests/fault-build.sh`):
/// the filter traps the VM on a request carrying `x-meshguard-fault: trap`.
pub fn fault_wasm(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("MESHGUARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist"));
    let path = dir.join("fault").join(format!("{name}.wasm"));
    if !path.is_file() {
        bail!(
            "{} not found — run `tests/fault-build.sh` (or `./build.sh`) first",
            path.display()
        );
    }
    Ok(path)
}

/// Reads a file with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
