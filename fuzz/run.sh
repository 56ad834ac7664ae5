#!/usr/bin/env bash
# meshguard fuzzing entry point (build.sh: `./build.sh fuzz <target> <seconds>`).
#
#   fuzz/run.sh list                 the targets
#   fuzz/run.sh <target> <seconds>   fuzz one target for that long, one process
#   fuzz/run.sh all <seconds>        every target in turn, <seconds> each
#
# Each run works on a fresh copy of fuzz/corpus/<target>/ in fuzz/corpus-run/ (the committed
# seeds never grow); crashes land in fuzz/artifacts/<target>/ — copy a real one to
# fuzz/regressions/<target>/ once fixed, `cargo test -p meshguard-fuzz-targets` replays it.
# The last line of a run is machine-readable:
#   fuzz=<target> seconds=<s> execs=<n> cov=<n> ft=<n> crashes=<n>
#
# Stable Rust only: cargo-fuzz asks rustc for `-Zsanitizer=...` and sancov passes, which are
# nightly flags; RUSTC_BOOTSTRAP=1 lets the stable 1.95 compiler accept them. AddressSanitizer
# links and runs on stable that way, so it is the default (MESHGUARD_FUZZ_SANITIZER=none
# builds without it, faster; meshguard has no unsafe code, so a crash is a panic or a trap
# either way). If an ASan build fails, run.sh retries once with `--sanitizer none`.
# One fuzzing process at a time (no -jobs/-workers: libFuzzer's default is a single process).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cache=${MESHGUARD_CACHE:-$HOME/.cache/meshguard}
tools=$cache/cargo-fuzz
export PATH="$tools/bin:$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# Instrumented builds live apart from the workspace's (different flags would rebuild both).
export CARGO_TARGET_DIR=${MESHGUARD_FUZZ_TARGET_DIR:-$here/target}
# The ABI targets load dist/<module>.wasm.
export MESHGUARD_WASM_DIR=${MESHGUARD_WASM_DIR:-$root/dist}

targets() {
    for f in "$here"/fuzz_targets/*.rs; do basename "$f" .rs; done
}

usage() {
    echo "usage: fuzz/run.sh list | <target> <seconds> | all <seconds>" >&2
    exit 2
}

ensure_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        return
    fi
    echo "fuzz: installing cargo-fuzz into $tools" >&2
    cargo install cargo-fuzz --locked --root "$tools" >&2
}

ensure_modules() {
    local missing=0 m
    for m in load_shed circuit_breaker rate_limit sandbox_router; do
        [[ -f $MESHGUARD_WASM_DIR/$m.wasm ]] || missing=1
    done
    if ((missing)); then
        echo "fuzz: building the wasm modules (./build.sh)" >&2
        (cd "$root" && ./build.sh) >&2
    fi
}

run_one() {
    local target=$1 seconds=$2
    targets | grep -x "$target" >/dev/null || { echo "fuzz: unknown target $target (fuzz/run.sh list)" >&2; exit 2; }
    ensure_cargo_fuzz
    [[ $target == abi_* ]] && ensure_modules
    local sanitizer=${MESHGUARD_FUZZ_SANITIZER:-address}
    cd "$here"
    if ! cargo fuzz build --sanitizer "$sanitizer" "$target" >&2; then
        if [[ $sanitizer != none ]]; then
            echo "fuzz: the $sanitizer build failed; retrying with --sanitizer none" >&2
            sanitizer=none
            cargo fuzz build --sanitizer none "$target" >&2
        else
            exit 1
        fi
    fi
    local work=$here/corpus-run/$target artifacts=$here/artifacts/$target
    rm -rf "$work"
    mkdir -p "$work" "$artifacts"
    cp -r "$here/corpus/$target/." "$work/"
    rm -f "$work/.gitkeep"
    local log
    log=$(mktemp)
    local start end rc=0
    start=$(date +%s)
    cargo fuzz run --sanitizer "$sanitizer" "$target" "$work" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" 2>&1 | tee "$log" >&2 || rc=$?
    end=$(date +%s)
    local execs cov ft crashes
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)
    [[ -n $execs ]] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
    crashes=$(grep -cE 'Test unit written to .*(crash|timeout|oom|leak)-' "$log" || true)
    # libFuzzer's own fuzzing time ("Done N runs in S second(s)"); wall time if it crashed.
    local secs
    secs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | grep -oE '[0-9]+ second' | grep -oE '[0-9]+' || true)
    rm -f "$log"
    echo "fuzz=$target seconds=${secs:-$((end - start))} execs=${execs:-0} cov=${cov:-0} ft=${ft:-0} crashes=${crashes:-0} sanitizer=$sanitizer"
    return "$rc"
}

case ${1:-} in
    list) targets ;;
    all)
        [[ $# -eq 2 ]] || usage
        status=0
        for t in $(targets); do run_one "$t" "$2" || status=1; done
        exit "$status"
        ;;
    ""|-h|--help) usage ;;
    *)
        [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
        run_one "$1" "$2"
        ;;
esac
