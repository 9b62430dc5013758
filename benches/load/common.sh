# shellcheck shell=bash
# Shared by the load scripts in this directory (compare.sh, cpu.sh, https.sh,
# instructions.sh); sourced, never run. Sets ROOT (the repository),
# HARNESS (the shared load harness) and SCRIPT (the caller's file), and
# defines the helpers below.

SCRIPT=${BASH_SOURCE[1]}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HARNESS=${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}

# usage [CODE]: the caller's header comment as help, then exit.
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"
    exit "${1:-0}"
}

die() { echo "$(basename "$SCRIPT"): $*" >&2; exit 1; }

# cargo's target directory (honours CARGO_TARGET_DIR and build.target-dir).
target_dir() {
    cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# The HS256 secret the bench configs read, unless one is set: a fixed
# bench secret (not a credential: it signs bench tokens only).
export BENCH_JWT_SECRET=${BENCH_JWT_SECRET:-tollgate-load-bench-hs256-secret-0123456789}

# require TOOL...: stops unless every TOOL is on the PATH.
require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is not installed"
    done
}

# build_gateway: from ROOT, the harness's backend (BACKEND_BIN), the
# release config gateway (GATEWAY) and a bench token signed with
# BENCH_JWT_SECRET (TOKEN).
build_gateway() {
    [[ -x "$HARNESS/setup.sh" ]] || die "no harness at $HARNESS (set TOLLGATE_BENCH_HARNESS)"
    cd "$ROOT" || die "cannot enter $ROOT"
    BACKEND_BIN=$("$HARNESS/setup.sh" | tail -n 1)
    [[ -x "$BACKEND_BIN" ]] || die "backend binary missing: $BACKEND_BIN"
    cargo build --release -p tollgate-examples --example gateway --example bench_token
    local target
    target=$(target_dir)
    # shellcheck disable=SC2034 # both are the callers'
    GATEWAY="$target/release/examples/gateway"
    # shellcheck disable=SC2034
    TOKEN=$("$target/release/examples/bench_token") || die "bench_token failed"
}
