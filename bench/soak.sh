#!/usr/bin/env bash
# Soak: many WebSocket clients in many rooms for a long time on one embedded node, steady
# publishing, and every minute a tenth of the clients leaving and coming back with `since`
# (bench/loadgen soak). Every SAMPLE_SECS the server's resident memory, open file
# descriptors, courier_ws_connections, broker mailbox depth, the history held
# (courier_history_bytes) and the idempotency keys kept (courier_idempotency_keys) are
# sampled into a CSV, and
# gnuplot draws them into a PNG next to it (bench/results/).
#
#   bench/soak.sh [CLIENTS] [ROOMS] [RATE] [SECONDS]    # default 10000 1000 200 600
#
# SKIP_BUILD=1 with COURIER=<binary> and LOADGEN=<binary> runs prebuilt release builds.
# CHURN_EVERY (seconds, default 60) and CHURN_PERCENT (default 10) set the reconnect rounds;
# the server's own settings (e.g. ROOM_HISTORY_SIZE) pass through the environment.
# Needs gnuplot for the PNG (apt-get install -y gnuplot-nox); the CSV is written without it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
clients=${1:-10000}
rooms=${2:-1000}
rate=${3:-200}
duration=${4:-600}
sample_secs=${SAMPLE_SECS:-10}
port=18500

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet
    (cd bench/loadgen && CARGO_TARGET_DIR="$root/target/bench" cargo build --release --quiet)
fi
courier="${COURIER:-$root/target/release/courier}"
loadgen="${LOADGEN:-$root/target/bench/release/loadgen}"
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
csv="bench/results/soak-$stamp.csv"
png="bench/results/soak-$stamp.png"
out=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

APP_HOST=127.0.0.1 APP_PORT=$port APP_WORKERS=2 LOG_LEVEL=warn APP_DATA_DIR="$out/data" \
    APP_CONFIG_DIR="$out/no-config" "$courier" >"$out/courier.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

metric() { # metric NAME -> value from /metrics
    curl -sf "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
sample() { # one CSV line: seconds, RSS KiB, fds, connections, mailbox, history bytes, keys
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    echo "$1,$rss,$fds,$(metric courier_ws_connections),$(metric courier_broker_mailbox_depth),$(metric courier_history_bytes),$(metric courier_idempotency_keys)"
}

echo "seconds,rss_kib,fds,ws_connections,broker_mailbox,history_bytes,idempotency_keys" >"$csv"
"$loadgen" soak --url "ws://127.0.0.1:$port" --clients "$clients" --rooms "$rooms" \
    --rate "$rate" --duration "$duration" --churn-every "${CHURN_EVERY:-60}" \
    --churn-percent "${CHURN_PERCENT:-10}" >"$out/soak.txt" 2>&1 &
lg=$!
start=$(date +%s)
while kill -0 "$lg" 2>/dev/null; do
    sample $(( $(date +%s) - start )) >>"$csv"
    sleep "$sample_secs"
done
wait "$lg" || true
sample $(( $(date +%s) - start )) >>"$csv"
grep -v '^RESULT' "$out/soak.txt"
echo "samples: $csv"
# RSS after the first minute against the last sample with the clients still connected, and
# what the bounded state (history, idempotency keys) held at those two points.
awk -F, -v clients="$clients" '
    NR > 1 && $1 >= 60 && first == "" { first = $2; h0 = $6; k0 = $7 }
    NR > 1 && $4 >= clients { last = $2; h1 = $6; k1 = $7 }
    END {
        if (first == "" || last == "") exit
        printf "RSS after the first minute %.1f MiB, at the end %.1f MiB (%+.1f%%); ", first / 1024, last / 1024, 100 * (last - first) / first
        printf "history %.1f -> %.1f MiB, idempotency keys %d -> %d\n", h0 / 1048576, h1 / 1048576, k0, k1
    }' "$csv"

if command -v gnuplot >/dev/null; then
    gnuplot <<GP
set terminal pngcairo size 1000,700 noenhanced
set output "$png"
set datafile separator ","
set multiplot layout 2,1 title "courier soak: $clients clients, $rooms rooms, $rate msg/s, ${CHURN_PERCENT:-10}% reconnecting every ${CHURN_EVERY:-60} s ($stamp)"
set xlabel "seconds"
set ylabel "MiB"
set y2label "open fds / connections"
set y2tics
set key bottom right
plot "$csv" using 1:(\$2/1024) skip 1 with lines title "RSS (MiB)", \
     "$csv" using 1:(\$6/1048576) skip 1 with lines title "courier_history_bytes (MiB)", \
     "$csv" using 1:3 skip 1 axes x1y2 with lines title "open fds", \
     "$csv" using 1:4 skip 1 axes x1y2 with lines title "courier_ws_connections"
unset y2label
unset y2tics
set ylabel "messages"
set y2label "keys"
set y2tics
plot "$csv" using 1:5 skip 1 with lines title "broker mailbox depth", \
     "$csv" using 1:7 skip 1 axes x1y2 with lines title "courier_idempotency_keys"
unset multiplot
GP
    echo "plot: $png"
else
    echo "no gnuplot (apt-get install -y gnuplot-nox): no plot"
fi
