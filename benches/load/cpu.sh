#!/usr/bin/env bash
# Where a proxied request's CPU time goes (issue #7): user and kernel time
# per request of nginx's plain proxy (the shared harness's config), the
# one-route gateway (examples/configs/bench-one-route.toml) and the full
# policy stack (examples/configs/bench-full-stack.toml), read from
# /proc/PID/stat around a wrk run of each, with the TCP segments each
# request cost (nstat). The throughput ratios of compare.sh say how far
# apart the proxies are; this says whether the gap is in user space (the
# proxy's own code) or in the kernel (system calls, TCP on loopback).
#
#   benches/load/cpu.sh                  # REPS=2 DURATION=5: about 40 s
#   REPS=3 DURATION=10 benches/load/cpu.sh
#
# Placement as compare.sh: the backend (1 thread) and wrk on LOAD_CPU (0),
# each proxy alone under load on PROXY_CPU (1), one worker each; every
# request carries the bench's bearer token (nginx ignores it). Columns:
# req/s of the run, then user and sys microseconds per request of the
# proxy process, then the same core's softirq time per request (network
# receive work the kernel does on that core, whichever process it serves),
# then TCP segments sent per request on the whole machine (client, proxy
# and backend together).
#
# Knobs (environment): REPS=2 DURATION=5 (s) WARMUP=1 (s) CONNS=8
#   PROXY_CPU=1 LOAD_CPU=0 BASE_PORT=19600
#   TOLLGATE_BENCH_HARNESS (default ../shared/bench beside the repository)
# Needs nginx, wrk, nstat (iproute2) and taskset; the first run of the
# harness's setup.sh needs root to install nginx and wrk. Traffic goes to
# 127.0.0.1 only; the script stops only the processes it started (by
# process group, on exit).
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ " $* " == *" -h "* || " $* " == *" --help "* ]]; then usage; fi
(($# == 0)) || die "no arguments (see --help)"

REPS=${REPS:-2}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-8}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-19600}

require nginx wrk nstat taskset setsid
build_gateway

RUN=$(mktemp -d)
mkdir -p "$RUN/nginx/tmp"
# The process (and group) id of each process started, by name.
declare -A PID=()
cleanup() {
    for pgid in "${PID[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

BACKEND_PORT=$BASE_PORT
declare -A PORT=([nginx]=$((BASE_PORT + 1)) [one]=$((BASE_PORT + 2)) [full]=$((BASE_PORT + 3)))

# start NAME CPU CMD...: a process in its own group, pinned to CPU.
start() {
    local name=$1 cpu=$2
    shift 2
    setsid taskset -c "$cpu" "$@" >"$RUN/$name.log" 2>&1 &
    PID[$name]=$!
}
start backend "$LOAD_CPU" "$BACKEND_BIN" --port "$BACKEND_PORT" --threads 1
sed -e "s#@LISTEN_PORT@#${PORT[nginx]}#g" -e "s#@UPSTREAM_PORT@#$BACKEND_PORT#g" \
    -e "s#@RUN_DIR@#$RUN/nginx#g" "$HARNESS/conf/nginx.conf.tmpl" >"$RUN/nginx/nginx.conf"
start nginx "$PROXY_CPU" nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -e "$RUN/nginx/error.log"
for config in one:bench-one-route full:bench-full-stack; do
    name=${config%%:*}
    start "$name" "$PROXY_CPU" env LISTEN_ADDR="127.0.0.1:${PORT[$name]}" \
        UPSTREAM_URL="http://127.0.0.1:$BACKEND_PORT" RUN_DIR="$RUN" TOKIO_WORKER_THREADS=1 \
        RUST_LOG=warn "$GATEWAY" --config "examples/configs/${config#*:}.toml" --no-watch
done

url() { echo "http://127.0.0.1:$1/users/12345"; }
for port in "${PORT[@]}"; do
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$(url "$port")" || true)
        [[ "$code" == 2* ]] && break
        sleep 0.1
    done
    [[ "${code:-}" == 2* ]] || die "nothing answers 2xx on port $port (see $RUN)"
done
# nginx's master forks the worker that serves.
NGINX_WORKER=$(pgrep -P "${PID[nginx]}" | head -n 1)
[[ -n "$NGINX_WORKER" ]] || die "no nginx worker"

load() { # port seconds -> wrk's output
    taskset -c "$LOAD_CPU" timeout $(($2 + 20)) wrk -t1 -c"$CONNS" -d"$2"s \
        -H "Authorization: Bearer $TOKEN" "$(url "$1")"
}
tick=$(getconf CLK_TCK)
printf '%-8s %9s %10s %10s %13s %9s\n' proxy req/s "user µs" "sys µs" "softirq µs" segments
for _ in $(seq 1 "$REPS"); do
    for target in nginx one full; do
        port=${PORT[$target]}
        pid=${PID[$target]}
        [[ $target == nginx ]] && pid=$NGINX_WORKER
        load "$port" "$WARMUP" >/dev/null
        nstat -n >/dev/null
        before="$(awk '{print $14, $15}' "/proc/$pid/stat") $(grep "^cpu$PROXY_CPU " /proc/stat)"
        out=$(load "$port" "$DURATION")
        after="$(awk '{print $14, $15}' "/proc/$pid/stat") $(grep "^cpu$PROXY_CPU " /proc/stat)"
        segments=$(nstat 2>/dev/null | awk '$1 == "TcpOutSegs" {print $2}')
        grep -q "Non-2xx" <<<"$out" && die "$target: non-2xx responses: $(grep Non-2xx <<<"$out")"
        requests=$(awk '/requests in/ {print $1}' <<<"$out")
        [[ -n "$requests" && "$requests" -gt 0 ]] || die "$target: no requests (see $RUN)"
        # /proc/PID/stat fields 14-15 are user and sys ticks; /proc/stat's
        # cpuN line is cpuN user nice system idle iowait irq softirq ...
        python3 - "$target" "$requests" "$DURATION" "$tick" "$before" "$after" "${segments:-0}" <<'PY'
import sys
target, n, secs, tick = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
b, a = sys.argv[5].split(), sys.argv[6].split()
us = 1e6 / tick / n
user, sys_ = (int(a[0]) - int(b[0])) * us, (int(a[1]) - int(b[1])) * us
softirq = (int(a[9]) - int(b[9])) * us
print(f"{target:<8} {n / secs:9.0f} {user:10.2f} {sys_:10.2f} {softirq:13.2f} {int(sys.argv[7]) / n:9.2f}")
PY
    done
done
