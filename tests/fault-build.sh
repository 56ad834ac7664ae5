#!/usr/bin/env bash
# Builds the fault-injection test variants of the four filters into dist/fault/<filter>.wasm.
#
# A fault build (cargo feature `meshguard-proxy/fault-injection`, filters/proxy/src/fault.rs)
# traps the VM when a request carries `x-meshguard-fault: trap`; tests/tests/e2e/faults.rs runs
# them in stock Envoy under each `failure_policy`. They are built in their own target directory
# (target/fault) so the release artifacts in dist/ are never built with the feature.
# Idempotent: cargo rebuilds only what changed, and the copies are replaced in place.
#
#   tests/fault-build.sh            (MESHGUARD_WASM_DIR overrides dist/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DIST="${MESHGUARD_WASM_DIR:-$ROOT/dist}"
WASM_TARGET="wasm32-wasip1"
TARGET_DIR="$ROOT/target/fault"
FILTERS=(load_shed circuit_breaker rate_limit sandbox_router)

pkgs=()
for f in "${FILTERS[@]}"; do pkgs+=(-p "meshguard-${f//_/-}"); done
printf '\033[1m==> %s\033[0m\n' "building fault-injection filters ($WASM_TARGET, release, target/fault)" >&2
cargo build --quiet --release --target "$WASM_TARGET" "${pkgs[@]}" \
    --features meshguard-proxy/fault-injection --target-dir "$TARGET_DIR"

mkdir -p "$DIST/fault"
for f in "${FILTERS[@]}"; do
    cp "$TARGET_DIR/$WASM_TARGET/release/$f.wasm" "$DIST/fault/$f.wasm.part"
    mv "$DIST/fault/$f.wasm.part" "$DIST/fault/$f.wasm"
    printf '%-30s %8d bytes\n' "dist/fault/$f.wasm" "$(stat -c %s "$DIST/fault/$f.wasm")"
done
