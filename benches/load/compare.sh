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
# Full policy stack (issue #7): instead of examples/proxy, the config-file
# gateway (examples/gateway) runs a config, as target "tollgate-full":
#   benches/load/compare.sh --full-stack          # examples/configs/bench-full-stack.toml
#   benches/load/compare.sh --config FILE         # any config (target "tollgate-cfg")
#   CONFIG=FILE benches/load/compare.sh           # the same
# The config gets LISTEN_ADDR, UPSTREAM_URL, RUN_DIR (scratch, e.g. for the
# access log) from the harness and BENCH_JWT_SECRET (a fixed bench secret
# unless already set, >= 32 bytes) from this script; every request carries
# `Authorization: Bearer <token>` (WRK_HEADERS; also on the harness's
# readiness and sanity checks), an HS256 token with `sub` and `exp` (year
# 2100) minted by examples/bench_token.rs with that secret.
#
# Other arguments are passed to the harness's run.sh; its environment knobs (REPS,
# DURATION, WARMUP, CONNS, SIZES, TARGETS, WRK_HEADERS, PROXYBENCH_WORK, ...)
# pass through too. TOLLGATE_BENCH_HARNESS overrides the harness directory.
# The first run needs root: the harness's setup.sh apt-gets nginx, haproxy, wrk.
# Run it on a quiet machine: a build next door halves the numbers.
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ " $* " == *" -h "* || " $* " == *" --help "* ]]; then usage; fi

WORK=${PROXYBENCH_WORK:-/tmp/proxybench}

say() { printf '== %s ==\n' "$*" >&2; }

# --full-stack / --config FILE are this script's; the rest goes to run.sh
CONFIG=${CONFIG:-}
GW_NAME=tollgate
if [[ -n "$CONFIG" ]]; then GW_NAME=tollgate-cfg; fi
ARGS=()
while (($#)); do
    case "$1" in
        --full-stack) CONFIG=$ROOT/examples/configs/bench-full-stack.toml; GW_NAME=tollgate-full; shift ;;
        --config) (($# >= 2)) || die "--config needs a FILE"
                  CONFIG=$2; GW_NAME=tollgate-cfg; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
set -- ${ARGS[@]+"${ARGS[@]}"}
if [[ -n "$CONFIG" ]]; then
    [[ -f "$CONFIG" ]] || die "no config file $CONFIG"
    # absolute (FILE is relative to the caller's directory), then relative to
    # the repository root when inside it: the gateway runs from the root
    CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
    CONFIG=${CONFIG#"$ROOT"/}
fi

[[ -x "$HARNESS/run.sh" && -x "$HARNESS/setup.sh" ]] \
    || die "no harness at $HARNESS (set TOLLGATE_BENCH_HARNESS to the bench directory)"
# the gateway command runs in the current directory: the repository root
cd "$ROOT"
# tollgate must be the first gateway, the one the KEY line compares to nginx
unset GATEWAY_NAME GATEWAY_CMD

say "setup: $HARNESS/setup.sh"
"$HARNESS/setup.sh" >/dev/null

# honour CARGO_TARGET_DIR / build.target-dir; relative when it is ./target
TARGET_DIR=$(target_dir)
# build before measuring: a build during the run would steal the measured CPUs
if [[ -z "$CONFIG" ]]; then
    say "build: cargo build --release --example proxy"
    cargo build --release --example proxy
    BIN="$TARGET_DIR/release/examples/proxy"
    [[ -x "$BIN" ]] || die "gateway binary missing after the build: $BIN"
    BIN=${BIN#"$ROOT"/}
    # single quotes: the harness expands $LISTEN_ADDR and $UPSTREAM_URL
    # shellcheck disable=SC2016
    GW_CMD="$(printf '%q' "$BIN")"' --listen $LISTEN_ADDR --upstream $UPSTREAM_URL --workers 1'
else
    say "build: cargo build --release -p tollgate-examples --example gateway --example bench_token"
    cargo build --release -p tollgate-examples --example gateway --example bench_token
    BIN="$TARGET_DIR/release/examples/gateway"
    TOKEN_BIN="$TARGET_DIR/release/examples/bench_token"
    [[ -x "$BIN" && -x "$TOKEN_BIN" ]] || die "gateway or bench_token binary missing after the build"
    BIN=${BIN#"$ROOT"/}
    TOKEN=$("$TOKEN_BIN") || die "bench_token failed"
    # the harness sends every WRK_HEADERS line to every target (nginx ignores it)
    export WRK_HEADERS="Authorization: Bearer $TOKEN${WRK_HEADERS:+
$WRK_HEADERS}"
    say "check: $BIN --config $CONFIG --check"
    check_dir=$(mktemp -d)
    LISTEN_ADDR=127.0.0.1:0 UPSTREAM_URL=http://127.0.0.1:1 RUN_DIR=$check_dir \
        "$BIN" --config "$CONFIG" --check || { rm -rf "$check_dir"; die "$CONFIG does not build"; }
    rm -rf "$check_dir"
    GW_CMD="$(printf '%q --config %q' "$BIN" "$CONFIG")"' --no-watch'
fi

LATEST="$WORK/runs/latest"
before=$(readlink -f "$LATEST" 2>/dev/null || true)
say "measure: $HARNESS/run.sh --gateway $GW_NAME '$GW_CMD' $*"
rc=0
"$HARNESS/run.sh" --gateway "$GW_NAME" "$GW_CMD" "$@" || rc=$?

run=$(readlink -f "$LATEST" 2>/dev/null || true)
echo
if [[ -z "$run" || "$run" == "$before" ]]; then
    die "the harness failed before creating a run directory (exit $rc)"
fi
echo "results: $LATEST -> $run"
if [[ -f "$run/summary.txt" ]]; then
    # the gateway's ratios (and nginx-aa's, with --aa), warnings, the KEY line
    grep -E "^[a-z]+ +($GW_NAME|nginx-aa)/|^WARNING|^KEY" "$run/summary.txt" || true
else
    echo "no summary (harness exit $rc); see the logs in $run"
fi
exit "$rc"
