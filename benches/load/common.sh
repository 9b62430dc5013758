# Shared by the load scripts in this directory (compare.sh, https.sh,
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
