#!/usr/bin/env bash
# Many rooms: 10,000 rooms of 10 members on one node, messages spread over the rooms at each
# RATE, courier (embedded) against the textbook actix chat design (bench/peers/actix-textbook)
# in the same run, alternating: deliveries/s, p99 publish-to-receive, and the server's CPU
# time per delivery (utime + stime from /proc/PID/stat over the run).
#
#   bench/rooms.sh [ROOMS] [MEMBERS] [SECONDS] RATE...    # default 10000 10 10 1000 5000 10000
#
# SKIP_BUILD=1 with COURIER=, TEXTBOOK= and LOADGEN= runs prebuilt release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rooms=${1:-10000}
members=${2:-10}
duration=${3:-10}
shift $(( $# < 3 ? $# : 3 ))
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1000 5000 10000)

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet
    (cd bench/loadgen && CARGO_TARGET_DIR="$root/target/bench" cargo build --release --quiet)
    (cd bench/peers/actix-textbook && CARGO_TARGET_DIR="$root/target/peers" cargo build --release --quiet)
fi
courier="${COURIER:-$root/target/release/courier}"
textbook="${TEXTBOOK:-$root/target/peers/release/actix-textbook}"
loadgen="${LOADGEN:-$root/target/bench/release/loadgen}"
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true
ticks=$(getconf CLK_TCK)

out=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start() { # start courier|textbook PORT
    rm -rf "$out/data"
    if [ "$1" = courier ]; then
        APP_HOST=127.0.0.1 APP_PORT=$2 APP_WORKERS=2 LOG_LEVEL=warn APP_DATA_DIR="$out/data" \
            APP_CONFIG_DIR="$out/no-config" WS_MAX_ROOMS_PER_CONNECTION=32 \
            WS_RATE_PER_SEC=100000 WS_RATE_BURST=100000 WS_FLOOD_LIMIT=100000 \
            BROKER_MAILBOX_CAPACITY=1000000 "$courier" >"$out/server.log" 2>&1 &
    else
        "$textbook" "$2" >"$out/server.log" 2>&1 &
    fi
    pid=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return 0; sleep 0.1; done
    echo "$1 did not start" >&2; exit 1
}

echo "$rooms rooms x $members members, $duration s per run; $(nproc) cores; $(date -u +%FT%TZ)"
printf '%-9s %7s %12s %10s %9s %14s\n' server rate deliveries/s p99_ms lost_pct cpu_us/delivery
for rate in "${rates[@]}"; do
    for server in courier textbook; do
        start "$server" 18700
        before=$(cpu_ticks "$pid")
        "$loadgen" rooms --urls ws://127.0.0.1:18700 --rooms "$rooms" --members "$members" \
            --rate "$rate" --duration "$duration" >"$out/run.txt" 2>&1 || true
        after=$(cpu_ticks "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
        python3 - "$server" "$rate" "$((after - before))" "$ticks" "$out/run.txt" <<'PY'
import json, sys
server, rate, cpu, tck, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
line = next((l for l in open(path) if l.startswith("RESULT ")), None)
if line is None:
    print(f"{server:<9} {rate:>7} no result:", open(path).read()[-300:].replace("\n", " "))
    sys.exit(0)
r = json.loads(line[7:])
lost = 100.0 * max(0, r["expected"] - r["delivered"]) / max(1, r["expected"])
per = cpu / tck * 1e6 / max(1, r["delivered"])
print(f"{server:<9} {rate:>7} {r['delivery_rate']:>12,.0f} {r['latency_ms']['p99']:>10.1f} {lost:>9.3f} {per:>14.2f}")
PY
    done
done
