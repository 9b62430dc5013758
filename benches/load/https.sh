#!/usr/bin/env bash
# HTTPS termination bench (issue #7): tollgate (examples/gateway with a TLS
# config) against nginx (ssl + http2, 1 worker), the same ECDSA P-256
# certificate and key, the same backend, the same CPU placement, in one run.
#
#   benches/load/https.sh                 # REPS=3 DURATION=5: about 2 min
#   benches/load/https.sh --quick         # 1 rep x 3 s smoke test
#   REPS=5 DURATION=10 benches/load/https.sh
#   benches/load/https.sh --config FILE   # tollgate runs FILE instead of
#                                         # examples/configs/bench-https.toml
#
# Metrics, per target (small response: GET /users/12345, 194-byte JSON):
#   h1   wrk -t1 -c$CONNS over https, keep-alive: req/s and p99 (closed loop)
#   h2   h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS -D: req/s
#   hs   handshakes/s: $HS_CLIENTS concurrent `openssl s_time -new` loops; each
#        connection is a full TLS handshake (no resumption), one HTTP/1.0 GET,
#        and the server's close; reported as connections/s
# Order: one warm-up per target and metric, then for rep: for metric: for
# target (interleaved, so a drifting machine hits both alike).
#
# Placement (the shared harness's convention, 2 cores): nginx and tollgate on
# PROXY_CPU (1), each alone under load (the other sits idle); the backend
# (1 tokio thread) and the load generator on LOAD_CPU (0). taskset throughout.
# TLS: both sides at their defaults for session resumption (tollgate has no
# knob to turn it off); the clients never resume, checked against nginx before
# measuring (see nginx-https.conf.tmpl). nginx 1.22 is told to allow TLS 1.3.
#
# Knobs (environment): REPS=3 DURATION=5 (s) WARMUP=1 (s) CONNS=64
#   H2_CLIENTS=16 H2_STREAMS=10 HS_CLIENTS=8 PROXY_CPU=1 LOAD_CPU=0
#   BASE_PORT=19200 READY_TIMEOUT=30 TOLLGATE_CONFIG=FILE (same as --config)
#   OTHER_WARN=5 (warn when, with every service idle before or after the
#   measurements, the machine is busier than this % of one CPU)
#   PROXYBENCH_WORK=/tmp/proxybench (results in $PROXYBENCH_WORK/https/<timestamp>/)
#   TOLLGATE_BENCH_HARNESS (default ../shared/bench beside the repository)
# A config given with --config gets LISTEN_ADDR, UPSTREAM_URL, BENCH_CERT and
# BENCH_KEY (the PEM files) in its environment; it must terminate TLS and
# forward every path unchanged.
# Traffic goes to 127.0.0.1 only. The script stops only the processes it
# started (by process group, on exit). The first run needs root: the harness's
# setup.sh apt-gets nginx-light, wrk and nghttp2-client (h2load).
# Run it on a quiet machine: a build next door halves the numbers.
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$ROOT/benches/load"
WORK=${PROXYBENCH_WORK:-/tmp/proxybench}
REPS=${REPS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-10}
HS_CLIENTS=${HS_CLIENTS:-8}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-19200}
READY_TIMEOUT=${READY_TIMEOUT:-30}
OTHER_WARN=${OTHER_WARN:-5}
CONFIG=${TOLLGATE_CONFIG:-}
SMALL_PATH=/users/12345

log() { echo "https.sh: $*" >&2; }

while (($#)); do
    case "$1" in
        --quick) REPS=1; DURATION=3; shift ;;
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
for v in OTHER_WARN REPS DURATION WARMUP CONNS H2_CLIENTS H2_STREAMS HS_CLIENTS BASE_PORT READY_TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((REPS >= 1 && DURATION >= 1)) || die "REPS and DURATION must be at least 1"
if [[ -n "$CONFIG" ]]; then
    [[ -f "$CONFIG" ]] || die "no config file $CONFIG"
    CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
fi

[[ -x "$HARNESS/setup.sh" && -f "$HARNESS/report.lua" ]] \
    || die "no harness at $HARNESS (set TOLLGATE_BENCH_HARNESS to the bench directory)"
cd "$ROOT"

# ---------------------------------------------------------------- tools
log "setup: $HARNESS/setup.sh"
BACKEND_BIN=$("$HARNESS/setup.sh" | tail -n 1)
[[ -x "$BACKEND_BIN" ]] || die "backend binary missing: $BACKEND_BIN"
missing=()
for tool in nginx wrk h2load openssl curl taskset setsid timeout ss python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (nginx-light, wrk, nghttp2-client, openssl, curl, util-linux, iproute2, python3)"
# nginx-light must have been built with the ssl and http2 modules
ngx_v=$(nginx -V 2>&1)
[[ "$ngx_v" == *--with-http_ssl_module* && "$ngx_v" == *--with-http_v2_module* ]] \
    || die "this nginx lacks http_ssl_module or http_v2_module (nginx -V); install nginx-full or nginx-core"

log "build: cargo build --release -p tollgate-examples --example gateway"
cargo build --release -p tollgate-examples --example gateway
TARGET_DIR=$(target_dir)
GATEWAY_BIN="$TARGET_DIR/release/examples/gateway"
[[ -x "$GATEWAY_BIN" ]] || die "gateway binary missing after the build: $GATEWAY_BIN"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- ports
BACKEND_PORT=$BASE_PORT
declare -A PORT=([nginx]=$((BASE_PORT + 1)) [tollgate]=$((BASE_PORT + 10)))
CHECK_PORT=$((BASE_PORT + 2))
TARGETS=(nginx tollgate)
for p in "$BACKEND_PORT" "${PORT[@]}" "$CHECK_PORT"; do
    [[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]] || die "port $p is already in use (set BASE_PORT=...)"
done

# ---------------------------------------------------------------- run dir
RUN="$WORK/https/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN/raw" "$RUN/cert" "$RUN/nginx/tmp" "$RUN/tollgate"
ln -sfn "$RUN" "$WORK/https/latest"
log "run dir $RUN"

# one self-signed ECDSA P-256 certificate, served by both
CERT="$RUN/cert/cert.pem"
KEY="$RUN/cert/key.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$KEY" -out "$CERT" -days 7 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$RUN/cert/openssl.log" 2>&1 \
    || die "openssl could not make the certificate (see $RUN/cert/openssl.log)"

sed -e "s#@LISTEN_PORT@#${PORT[nginx]}#g" -e "s#@CHECK_PORT@#$CHECK_PORT#g" \
    -e "s#@UPSTREAM_PORT@#$BACKEND_PORT#g" -e "s#@RUN_DIR@#$RUN/nginx#g" \
    -e "s#@CERT@#$CERT#g" -e "s#@KEY@#$KEY#g" \
    "$HERE/nginx-https.conf.tmpl" >"$RUN/nginx/nginx.conf"

[[ -n "$CONFIG" ]] || CONFIG="$ROOT/examples/configs/bench-https.toml"

# ---------------------------------------------------------------- processes
# Each service runs in its own process group (setsid) and is stopped by that
# group id only; nothing else on the machine is touched.
STARTED=()
declare -A PID=()
start_svc() { # name cpu cmd...
    local name=$1 cpu=$2; shift 2
    setsid taskset -c "$cpu" "$@" >"$RUN/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
    STARTED+=("$!")
}
stop_all() {
    local pid pg i alive
    for pid in "${STARTED[@]}"; do
        pg=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') || true
        if [[ "$pg" == "$pid" ]]; then kill -TERM -- "-$pid" 2>/dev/null || true
        else kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for i in $(seq 50); do
        alive=0
        for pid in "${STARTED[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${STARTED[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop within 5 s of SIGTERM; sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    STARTED=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_ready() { # name url pid
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fsSk -o /dev/null --max-time 1 "$2/health" 2>/dev/null; do
        kill -0 "$3" 2>/dev/null || die "$1 exited during startup, see $RUN/$1.log"
        ((SECONDS < deadline)) || die "$1 not ready at $2 after ${READY_TIMEOUT}s, see $RUN/$1.log"
        sleep 0.2
    done
}

start_svc backend "$LOAD_CPU" "$BACKEND_BIN" --port "$BACKEND_PORT" --threads 1
wait_ready backend "http://127.0.0.1:$BACKEND_PORT" "${PID[backend]}"
start_svc nginx "$PROXY_CPU" nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -e "$RUN/nginx/error.log"
wait_ready nginx "https://127.0.0.1:${PORT[nginx]}" "${PID[nginx]}"
start_svc tollgate "$PROXY_CPU" env \
    LISTEN_ADDR="127.0.0.1:${PORT[tollgate]}" UPSTREAM_URL="http://127.0.0.1:$BACKEND_PORT" \
    BENCH_CERT="$CERT" BENCH_KEY="$KEY" TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" \
    "$GATEWAY_BIN" --config "$CONFIG" --no-watch
wait_ready tollgate "https://127.0.0.1:${PORT[tollgate]}" "${PID[tollgate]}"

# ---------------------------------------------------------------- sanity
hs_client() { # port secs -> "connections" (one openssl s_time -new loop)
    timeout -k 5 $(($2 + 20)) taskset -c "$LOAD_CPU" \
        openssl s_time -connect "127.0.0.1:$1" -new -time "$2" -www "$SMALL_PATH" 2>&1 \
        | awk '/connections in .* real seconds/ { print $1; found = 1 } END { if (!found) print 0 }'
}
for t in "${TARGETS[@]}"; do
    url="https://127.0.0.1:${PORT[$t]}"
    for proto in --http1.1 --http2; do
        body=$(curl -fsSk --max-time 2 "$proto" "$url/users/7") || die "$t: GET /users/7 ($proto) failed"
        [[ "$body" == *'"id":"7"'* ]] || die "$t: unexpected /users/7 body ($proto): $body"
    done
    v=$(curl -sSk --max-time 2 --http2 -o /dev/null -w '%{http_version}' "$url/users/7")
    [[ "$v" == 2 ]] || die "$t: ALPN did not select h2 (curl got HTTP/$v)"
    n=$(hs_client "${PORT[$t]}" 1)
    ((n > 0)) || die "$t: openssl s_time made no connection (HTTP/1.0 GET, server close)"
done
# the handshake client must not resume sessions: one second against nginx's
# check server, which logs $ssl_session_reused ("r" = resumed)
hs_client "$CHECK_PORT" 1 >/dev/null
resumed=$(grep -c '^r ' "$RUN/nginx/resume-check.log" || true)
full=$(grep -c '^\. ' "$RUN/nginx/resume-check.log" || true)
((full > 0)) || die "resumption check: no handshake logged in $RUN/nginx/resume-check.log"
((resumed == 0)) || die "resumption check: $resumed of $((resumed + full)) handshakes resumed a session; handshakes/s would not measure full handshakes"

# ---------------------------------------------------------------- metadata
tls_of() { # port -> negotiated version, cipher, key exchange, signature
    timeout 5 openssl s_client -connect "127.0.0.1:$1" -servername localhost -brief </dev/null 2>&1 \
        | awk -F': ' '/^(Protocol version|Ciphersuite|Peer signature type|Server Temp Key|Negotiated TLS1.3 group)/ { printf "%s%s=%s", sep, $1, $2; sep = "; " }'
}
{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm); $(nproc) cpus; $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
    echo "placement: nginx / tollgate on CPU $PROXY_CPU (one under load at a time); backend (1 thread) + load generator on CPU $LOAD_CPU"
    echo "h1: wrk -t1 -c$CONNS -d${DURATION}s --timeout 5s --latency https://...$SMALL_PATH"
    echo "h2: h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS -D $DURATION https://...$SMALL_PATH"
    echo "hs: $HS_CLIENTS x openssl s_time -new -time $DURATION -www $SMALL_PATH (full handshake + 1 request per connection; resumed in check: $resumed of $((resumed + full)))"
    echo "reps $REPS interleaved; warm-up ${WARMUP}s per target and metric"
    echo "certificate: $(openssl x509 -in "$CERT" -noout -text | awk '/Public Key Algorithm|NIST CURVE/ { sub(/^ +/, ""); printf "%s ", $0 }')"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //'); $(nginx -V 2>&1 | sed -n 's/^built with //p')"
    echo "tollgate: $GATEWAY_BIN --config $CONFIG --no-watch (rustls, aws-lc-rs)"
    echo "wrk: $(wrk -v 2>&1 | head -n 1); h2load: $(h2load --version 2>&1 | head -n 1); client: $(openssl version)"
    for t in "${TARGETS[@]}"; do echo "tls $t: $(tls_of "${PORT[$t]}")"; done
} >"$RUN/meta.txt"
cat "$RUN/meta.txt" >&2

# ---------------------------------------------------------------- measuring
cpu_snap() { grep -E "^cpu($LOAD_CPU|$PROXY_CPU) " /proc/stat; }
cpu_busy() { # before after -> "busy% of LOAD_CPU busy% of PROXY_CPU"
    awk -v a="cpu$LOAD_CPU" -v b="cpu$PROXY_CPU" '
        FNR == NR { for (i = 2; i <= 9; i++) s[$1, i] = $i; next }
        { tot = 0; for (i = 2; i <= 9; i++) tot += $i - s[$1, i]
          busy = tot - ($5 - s[$1, 5]) - ($6 - s[$1, 6]); if (tot <= 0) tot = 1
          p[$1] = 100 * busy / tot }
        END { printf "%.0f %.0f\n", p[a], p[b] }' "$1" "$2"
}

# CPU busy on the whole machine over 1 s, in % of one CPU; called while every
# service is idle, so it is what other processes use
idle_busy() {
    local b a
    b=$(grep '^cpu ' /proc/stat); sleep 1; a=$(grep '^cpu ' /proc/stat)
    printf '%s\n%s\n' "$b" "$a" | awk -v ncpu="$(nproc)" '
        NR == 1 { for (i = 2; i <= 9; i++) s[i] = $i; next }
        { t = 0; for (i = 2; i <= 9; i++) t += $i - s[i]
          busy = t - ($5 - s[5]) - ($6 - s[6]); if (t <= 0) t = 1
          printf "%.0f\n", 100 * ncpu * busy / t }'
}

# Each runner: target port secs raw-file -> "value p99_ms errors"
run_h1() {
    timeout -k 5 $(($3 + 20)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"$3"s --timeout 5s --latency -s "$HARNESS/report.lua" \
        "https://127.0.0.1:$2$SMALL_PATH" >"$4" 2>&1 || true
    awk '/^PB / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                  e = v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"]
                  printf "%.1f %.2f %d\n", v["requests"] / (v["duration_us"] / 1e6), v["p99_us"] / 1000, e; ok = 1 }
         END { if (!ok) print "NA NA NA" }' "$4"
}
run_h2() {
    timeout -k 5 $(($3 + 20)) taskset -c "$LOAD_CPU" \
        h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$3" "https://127.0.0.1:$2$SMALL_PATH" >"$4" 2>&1 || true
    awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) rps = $i }
         /^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/) e += $i }
         /^Application protocol:/ { proto = $3 }
         END { if (rps == "" || proto != "h2") print "NA NA NA"; else printf "%.1f NA %d\n", rps, e }' "$4"
}
run_hs() {
    local i out=() pids=() start
    start=$(date +%s%N)
    for ((i = 0; i < HS_CLIENTS; i++)); do
        out+=("$4.$i")
        hs_client "$2" "$3" >"$4.$i" &
        pids+=("$!")
    done
    wait "${pids[@]}"  # only these: the services are background jobs too
    # connections/s over the wall time of the slowest client (s_time stops at
    # the first connection that ends after -time seconds)
    awk -v ns=$(($(date +%s%N) - start)) -v want="$HS_CLIENTS" \
        '{ n += $1; if ($1 > 0) ok++ } END { printf "%.1f NA %d\n", n / (ns / 1e9), want - ok }' "${out[@]}" \
        | tee "$4"
}

CSV="$RUN/results.csv"
echo "target,metric,rep,value,p99_ms,errors,cpu_load,cpu_proxy" >"$CSV"
METRICS=(h1 h2 hs)
measure() { # target metric rep
    local t=$1 m=$2 r=$3 raw="$RUN/raw/$1-$2-$3.txt" b="$RUN/raw/.cpu0" a="$RUN/raw/.cpu1" res cpu
    cpu_snap >"$b"
    res=$("run_$m" "$t" "${PORT[$t]}" "$DURATION" "$raw")
    cpu_snap >"$a"
    cpu=$(cpu_busy "$b" "$a")
    read -r value p99 errs <<<"$res"
    read -r cl cp <<<"$cpu"
    echo "$t,$m,$r,$value,$p99,$errs,$cl,$cp" >>"$CSV"
    printf 'https.sh: rep %d/%d %-2s %-8s %10s/s  p99 %6s ms  err %3s  cpu%s %3s%% cpu%s %3s%%\n' \
        "$r" "$REPS" "$m" "$t" "$value" "$p99" "$errs" "$LOAD_CPU" "$cl" "$PROXY_CPU" "$cp" >&2
}

OTHER_BEFORE=$(idle_busy)
echo "other processes before measuring: ${OTHER_BEFORE}% of a CPU" >>"$RUN/meta.txt"
((OTHER_BEFORE < OTHER_WARN)) \
    || log "WARNING: the machine is busy (${OTHER_BEFORE}% of a CPU used by other processes); numbers will be noisy"
log "measuring ${#TARGETS[@]} targets x ${#METRICS[@]} metrics x $REPS reps x ${DURATION}s (about $(( ${#TARGETS[@]} * ${#METRICS[@]} * (REPS * DURATION + WARMUP) ))s + overhead)"
if ((WARMUP > 0)); then
    for m in "${METRICS[@]}"; do
        for t in "${TARGETS[@]}"; do "run_$m" "$t" "${PORT[$t]}" "$WARMUP" "$RUN/raw/warmup-$t-$m.txt" >/dev/null; done
    done
fi
for r in $(seq "$REPS"); do
    for m in "${METRICS[@]}"; do
        for t in "${TARGETS[@]}"; do measure "$t" "$m" "$r"; done
    done
done
OTHER_AFTER=$(idle_busy)
echo "other processes after measuring: ${OTHER_AFTER}% of a CPU" >>"$RUN/meta.txt"
for t in backend "${TARGETS[@]}"; do
    kill -0 "${PID[$t]}" 2>/dev/null || log "WARNING: $t died during the run (see $RUN/$t.log)"
done
stop_all

# ---------------------------------------------------------------- summary
python3 - "$CSV" "$RUN/summary.json" "$OTHER_BEFORE" "$OTHER_AFTER" "$OTHER_WARN" <<'EOF' | tee "$RUN/summary.txt"
import csv, json, statistics, sys

rows = list(csv.DictReader(open(sys.argv[1])))
targets = ["nginx", "tollgate"]
cols = [("h1", "value", "h1 req/s"), ("h1", "p99_ms", "h1 p99 ms"),
        ("h2", "value", "h2 req/s"), ("hs", "value", "handshakes/s")]

def num(x):
    try:
        return float(x)
    except ValueError:
        return None

def series(t, m, field):
    return {int(r["rep"]): num(r[field]) for r in rows
            if r["target"] == t and r["metric"] == m and num(r[field]) is not None}

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, nd=0):
    return "-" if x is None else f"{x:,.{nd}f}"

summary = {"targets": {}, "ratios": {}}
print()
head = "| target | " + " | ".join(c[2] for c in cols) + " | cpuP% h1/h2/hs |"
print(head)
print("|" + "---|" * (len(cols) + 2))
for t in targets:
    vals = []
    summary["targets"][t] = {}
    for m, f, name in cols:
        v = med(list(series(t, m, f).values()))
        summary["targets"][t][name] = v
        vals.append(fmt(v, 2 if f == "p99_ms" else 0))
    cpu = "/".join(fmt(med(list(series(t, m, "cpu_proxy").values()))) for m in ("h1", "h2", "hs"))
    print(f"| {t} | " + " | ".join(vals) + f" | {cpu} |")
ratio = []
for m, f, name in cols:
    a, b = series("tollgate", m, f), series("nginx", m, f)
    va, vb = med(list(a.values())), med(list(b.values()))
    if va is None or not vb:
        ratio.append("-")
        continue
    paired = [a[r] / b[r] for r in a if r in b and b[r]]
    r = va / vb
    summary["ratios"][name] = {"median_ratio": r, "min": min(paired), "max": max(paired)}
    ratio.append(f"{r:.2f} [{min(paired):.2f}-{max(paired):.2f}]")
print("| tollgate/nginx | " + " | ".join(ratio) + " | |")
errs = [r for r in rows if r["errors"] not in ("0", "NA")]
for r in errs:
    print(f"WARNING: {r['target']} {r['metric']} rep {r['rep']}: {r['errors']} errors")
missing = [r for r in rows if num(r["value"]) is None]
for r in missing:
    print(f"WARNING: {r['target']} {r['metric']} rep {r['rep']}: no result (see raw/)")
other = [float(x) for x in sys.argv[3:5]]
summary["other_cpu_percent"] = {"before": other[0], "after": other[1]}
if max(other) >= float(sys.argv[5]):
    print(f"WARNING: other processes used {other[0]:.0f}% / {other[1]:.0f}% of a CPU before / after"
          " the measurements (services idle): a busy machine, the numbers are noise")
print("ratios: median of tollgate over median of nginx, [min-max] of the per-rep ratios;"
      " p99 is closed-loop (comparable between targets only); cpuP = busy % of the proxy CPU")
key = []
for name in ("h1 req/s", "h2 req/s", "handshakes/s"):
    if name in summary["ratios"]:
        key.append(f"{name.split()[0].removesuffix('/s')} {summary['ratios'][name]['median_ratio']:.2f}")
print("KEY https tollgate/nginx: " + ", ".join(key))
json.dump(summary, open(sys.argv[2], "w"), indent=2)
EOF
echo "results: $RUN"
