#!/usr/bin/env bash
# Load comparison: the tollgate example gateway (examples/proxy.rs) beside
# nginx and HAProxy, all in front of the same backend with the same CPU
# placement (each proxy alone on one core, one worker), printed as one table.
# It drives the shared harness, ../shared/bench beside this repository (see
# its README.md for what is measured and how to read the table).
#
#   benches/load/compare.sh                       # direct, nginx, haproxy, tollgate: ~2 min 15 s
#   benches/load/compare.sh --quick               # 1 rep x 3 s smoke test
#   benches/load/compare.sh --aa                  # + "nginx-aa", a 2nd identical nginx (noise control)
#   REPS=5 DURATION=10 benches/load/compare.sh    # steadier numbers, ~9 min
#
# Arguments are passed to the harness's run.sh; its environment knobs (REPS,
# DURATION, WARMUP, CONNS, SIZES, TARGETS, WRK_HEADERS, PROXYBENCH_WORK, ...)
# pass through too. TOLLGATE_BENCH_HARNESS overrides the harness directory.
# The first run needs root: the harness's setup.sh apt-gets nginx, haproxy, wrk.
# Run it on a quiet machine: a build next door halves the numbers.
set -euo pipefail

if [[ " $* " == *" -h "* || " $* " == *" --help "* ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit 0
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HARNESS=${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}
WORK=${PROXYBENCH_WORK:-/tmp/proxybench}

say() { printf '== %s ==\n' "$*" >&2; }
die() { echo "compare.sh: $*" >&2; exit 1; }

[[ -x "$HARNESS/run.sh" && -x "$HARNESS/setup.sh" ]] \
    || die "no harness at $HARNESS (set TOLLGATE_BENCH_HARNESS to the bench directory)"
# the gateway command runs in the current directory: the repository root
cd "$ROOT"
# tollgate must be the first gateway, the one the KEY line compares to nginx
unset GATEWAY_NAME GATEWAY_CMD

say "setup: $HARNESS/setup.sh"
"$HARNESS/setup.sh" >/dev/null

# build before measuring: a build during the run would steal the measured CPUs
say "build: cargo build --release --example proxy"
cargo build --release --example proxy
# honour CARGO_TARGET_DIR / build.target-dir; relative when it is ./target
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/release/examples/proxy"
[[ -x "$BIN" ]] || die "gateway binary missing after the build: $BIN"
BIN=${BIN#"$ROOT"/}

# single quotes: the harness expands $LISTEN_ADDR and $UPSTREAM_URL
GW_CMD="$(printf '%q' "$BIN")"' --listen $LISTEN_ADDR --upstream $UPSTREAM_URL --workers 1'

LATEST="$WORK/runs/latest"
before=$(readlink -f "$LATEST" 2>/dev/null || true)
say "measure: $HARNESS/run.sh --gateway tollgate '$GW_CMD' $*"
rc=0
"$HARNESS/run.sh" --gateway tollgate "$GW_CMD" "$@" || rc=$?

run=$(readlink -f "$LATEST" 2>/dev/null || true)
echo
if [[ -z "$run" || "$run" == "$before" ]]; then
    die "the harness failed before creating a run directory (exit $rc)"
fi
echo "results: $LATEST -> $run"
if [[ -f "$run/summary.txt" ]]; then
    # the gateway's ratios (and nginx-aa's, with --aa), warnings, the KEY line
    grep -E '^[a-z]+ +(tollgate|nginx-aa)/|^WARNING|^KEY' "$run/summary.txt" || true
else
    echo "no summary (harness exit $rc); see the logs in $run"
fi
exit "$rc"
