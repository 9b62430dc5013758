#!/usr/bin/env bash
# Instructions per request of the config-file gateway (examples/gateway),
# counted by callgrind while wrk drives it: deterministic where wall-clock
# figures are not (a shared machine moves them by a third), so two builds
# or two configs compare to the instruction. User space only: the kernel's
# share (socket reads and writes) is not counted.
#
#   benches/load/instructions.sh --full-stack        # examples/configs/bench-full-stack.toml
#   benches/load/instructions.sh --one-route         # examples/configs/bench-one-route.toml
#   benches/load/instructions.sh --https             # examples/configs/bench-https.toml, over TLS
#   benches/load/instructions.sh --config FILE       # any config
#   DURATION=8 WARMUP=3 CONNS=8 benches/load/instructions.sh --full-stack
#
# The backend is the shared harness's (../shared/bench, as compare.sh uses
# it), on CPU 0 with wrk; the gateway runs one worker under valgrind on
# CPU 1. The config gets LISTEN_ADDR, UPSTREAM_URL, RUN_DIR and
# BENCH_JWT_SECRET, and every request carries a bench token, as with
# compare.sh; with --https, BENCH_CERT and BENCH_KEY name a self-signed
# certificate made here with openssl, and wrk speaks HTTPS (HTTP/1.1) to
# the gateway. After the warm-up the counters are zeroed, so start-up is
# not counted; every response must be a 2xx, or the run fails (errors are
# cheaper than proxied requests and would skew the figure). Needs valgrind
# (callgrind_control) and wrk; every process it starts is stopped by PID.
# The scratch directory with the profile is kept and printed at the end.
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ " $* " == *" -h "* || " $* " == *" --help "* ]]; then usage; fi

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-8}
BASE_PORT=${BASE_PORT:-19400}


CONFIG=
SCHEME=http
while (($#)); do
    case "$1" in
        --https) CONFIG=$ROOT/examples/configs/bench-https.toml; SCHEME=https; shift ;;
        --full-stack) CONFIG=$ROOT/examples/configs/bench-full-stack.toml; shift ;;
        --one-route) CONFIG=$ROOT/examples/configs/bench-one-route.toml; shift ;;
        --config) (($# >= 2)) || die "--config needs a FILE"
                  CONFIG=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ -n "$CONFIG" && -f "$CONFIG" ]] || die "give --full-stack, --one-route, --https or --config FILE"
require valgrind callgrind_control wrk taskset
build_gateway

RUN=$(mktemp -d)
STARTED=()
cleanup() {
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

if [[ "$SCHEME" == https ]]; then
    command -v openssl >/dev/null || die "openssl is not installed"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$RUN/key.pem" -out "$RUN/cert.pem" -days 7 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$RUN/openssl.log" 2>&1 \
        || die "openssl could not make the certificate (see $RUN/openssl.log)"
fi

BACKEND_PORT=$BASE_PORT
GATEWAY_PORT=$((BASE_PORT + 1))
taskset -c 0 "$BACKEND_BIN" --port "$BACKEND_PORT" --threads 1 >"$RUN/backend.log" 2>&1 &
STARTED+=("$!")
BENCH_CERT=$RUN/cert.pem BENCH_KEY=$RUN/key.pem \
    LISTEN_ADDR=127.0.0.1:$GATEWAY_PORT UPSTREAM_URL=http://127.0.0.1:$BACKEND_PORT RUN_DIR=$RUN \
    TOKIO_WORKER_THREADS=1 taskset -c 1 valgrind --tool=callgrind \
    --callgrind-out-file="$RUN/callgrind.out" \
    "$GATEWAY" --config "$CONFIG" --no-watch >"$RUN/gateway.log" 2>&1 &
VALGRIND=$!
STARTED+=("$VALGRIND")

URL=$SCHEME://127.0.0.1:$GATEWAY_PORT/users/12345
load() { # seconds -> wrk's output
    taskset -c 0 timeout $(($1 + 20)) wrk -t1 -c"$CONNS" -d"$1"s \
        -H "Authorization: Bearer $TOKEN" "$URL"
}
# ready: the gateway under valgrind starts slowly
for _ in $(seq 1 120); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL" || true)
    [[ "$code" == 2* ]] && break
    kill -0 "$VALGRIND" 2>/dev/null || die "the gateway exited (see $RUN/gateway.log)"
    sleep 1
done
[[ "${code:-}" == 2* ]] || die "the gateway did not answer 2xx in time (last: ${code:-none})"

load "$WARMUP" >/dev/null
callgrind_control -z "$VALGRIND" >/dev/null 2>&1
out=$(load "$DURATION")
callgrind_control -d "$VALGRIND" >/dev/null 2>&1
requests=$(awk '/requests in/ {print $1}' <<<"$out")
if grep -q "Non-2xx" <<<"$out"; then
    die "non-2xx responses in the measured run: $(grep Non-2xx <<<"$out")"
fi
dump=$(ls -t "$RUN"/callgrind.out.* | head -n 1)
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
[[ -n "$requests" && "$requests" -gt 0 && -n "$total" ]] || die "no figures (see $RUN)"
echo "config: ${CONFIG#"$ROOT"/}; $requests requests in ${DURATION}s under callgrind, wrk -c$CONNS"
echo "KEY instructions per request: $((total / requests))"
if [[ "$SCHEME" == https ]]; then
    # wrk's connections of the measured run are new, so their TLS
    # handshakes (about a million instructions each) are in the total; the
    # fewer requests callgrind lets through, the more they weigh.
    hs=$( (callgrind_annotate --inclusive=yes "$dump" 2>/dev/null || true) \
        | awk '/rustls::server::hs::ExpectClientHello as rustls::common_state::State/ { gsub(",", "", $1); print $1; exit }' || true)
    echo "KEY instructions per request without the $CONNS handshakes: $(((total - ${hs:-0}) / requests))"
fi
echo "profile: $dump (callgrind_annotate --inclusive=yes $dump)"
