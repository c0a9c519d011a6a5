#!/usr/bin/env bash
# Scale-out on one Redis: many rooms of a few members (bench/loadgen rooms), first on one
# courier node, then spread over two (room r on node r % 2, as a load balancer with room
# affinity places it). With per-room subscriptions a node handles only its own rooms, so
# two nodes should deliver more than one.
#
#   bench/scale.sh [ROOMS] [MEMBERS] [RATE] [SECONDS]    # default 10000 10 15000 10
#
# Uses the Redis at REDIS_URL (default redis://127.0.0.1:6379/0) under a fresh APP_NAME.
# SKIP_BUILD=1 with COURIER=<binary> and LOADGEN=<binary> runs prebuilt release builds.
# Both nodes and the load generator share this machine's cores: read the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rooms=${1:-10000}
members=${2:-10}
rate=${3:-15000}
duration=${4:-10}
redis=${REDIS_URL:-redis://127.0.0.1:6379/0}
app="courier-scale-$$"

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet
    (cd bench/loadgen && CARGO_TARGET_DIR="$root/target/bench" cargo build --release --quiet)
fi
courier="${COURIER:-$root/target/release/courier}"
loadgen="${LOADGEN:-$root/target/bench/release/loadgen}"
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true

out=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

start_node() { # start_node PORT
    mkdir -p "$out/data-$1" "$out/no-config"
    APP_HOST=127.0.0.1 APP_PORT=$1 APP_WORKERS=1 LOG_LEVEL=warn APP_DATA_DIR="$out/data-$1" \
        APP_CONFIG_DIR="$out/no-config" REDIS_URL="$redis" APP_NAME="$app" \
        WS_MAX_ROOMS_PER_CONNECTION=32 WS_RATE_PER_SEC=100000 WS_RATE_BURST=100000 \
        WS_FLOOD_LIMIT=100000 BROKER_MAILBOX_CAPACITY=1000000 \
        "$courier" >>"$out/courier-$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.1; done
    echo "node on $1 did not become ready" >&2
    tail -n 20 "$out/courier-$1.log" >&2
    exit 1
}

run() { # run URLS
    "$loadgen" rooms --urls "$1" --rooms "$rooms" --members "$members" --rate "$rate" \
        --duration "$duration" | tee "$out/run.txt" >&2
    sed -n 's/^RESULT //p' "$out/run.txt"
}

echo "$rooms rooms x $members members, $rate msg/s, $duration s; $(nproc) cores; $(date -u +%FT%TZ)"
echo "=== one node"
start_node 18301
one=$(run "ws://127.0.0.1:18301")
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()
app="courier-scale-$$-2"
echo "=== two nodes"
start_node 18301
start_node 18302
two=$(run "ws://127.0.0.1:18301,ws://127.0.0.1:18302")
python3 - "$one" "$two" <<'PY'
import json, sys
one, two = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r1, r2 = one["delivery_rate"], two["delivery_rate"]
print(f"one node:  {r1:,.0f} deliveries/s, p99 {one['latency_ms']['p99']:.1f} ms")
print(f"two nodes: {r2:,.0f} deliveries/s (per node {[round(x) for x in two['delivery_rate_per_node']]}), p99 {two['latency_ms']['p99']:.1f} ms")
print(f"two nodes / one node = {r2 / r1:.2f}")
PY
