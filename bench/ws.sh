#!/usr/bin/env bash
# WebSocket and SSE load on loopback: courier driven by bench/loadgen.
#
#   bench/ws.sh
#
# Runs, in order:
#   1. fan-out, 1000 receivers, 1000 msg/s, 100-byte data, 10 s
#   2. fan-out, 1000 receivers, 1200 msg/s, 100-byte data, 10 s
#   3. fan-out, 10000 receivers, 100 msg/s, 100-byte data, 10 s
#   4. 10000 idle WebSocket connections held 20 s, server RSS per connection (fresh server)
#   5. 10000 SSE subscribers on /sse/heartbeat held 20 s, server RSS per subscriber (fresh server)
# Each loadgen step prints a readable block and a `RESULT {json}` line.
#
# The environment is passed through to courier (e.g. WS_* limits); APP_HOST, APP_PORT,
# LOG_LEVEL and APP_DATA_DIR are set here. Both processes get the open-file limit raised to the
# hard limit, which has to be above 10,000 for steps 3 to 5.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
port=18100
http="http://127.0.0.1:$port"
ws="ws://127.0.0.1:$port"
step_limit=300 # seconds; every loadgen run bounds itself well within this

command -v curl >/dev/null || { echo "install curl: apt-get install -y curl" >&2; exit 1; }

cargo build --release --quiet
(cd bench/loadgen && CARGO_TARGET_DIR="$root/target/bench" cargo build --release --quiet)
(cd bench/peers/actix-textbook && CARGO_TARGET_DIR="$root/target/peers" cargo build --release --quiet)
loadgen="$root/target/bench/release/loadgen"

hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || echo "warning: could not raise the open-file limit to $hard" >&2
echo "open-file limit: $(ulimit -n); $(nproc) cores; $(date -u +%FT%TZ)"
[ "$(ulimit -n)" -ge 10100 ] || echo "warning: open-file limit $(ulimit -n) is too low for 10,000 connections" >&2

out=$(mktemp -d)
pid=""
stop_server() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
cleanup() {
    stop_server
    [ -z "${peer:-}" ] || kill "$peer" 2>/dev/null || true
    if [ -s "$out/courier.log" ]; then
        echo "--- courier log ($(wc -l <"$out/courier.log") lines), last 20:"
        tail -n 20 "$out/courier.log"
    fi
    rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {
    stop_server
    rm -rf "$out/data"
    mkdir -p "$out/data"
    APP_HOST=127.0.0.1 APP_PORT=$port LOG_LEVEL=warn APP_DATA_DIR="$out/data" \
        ./target/release/courier >>"$out/courier.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        if curl -sf "$http/healthz" >/dev/null; then
            echo "courier up (pid $pid)"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "courier did not answer $http/healthz; log:" >&2
    tail -n 50 "$out/courier.log" >&2
    exit 1
}

step() { # step TITLE LOADGEN-ARGS...
    local title=$1
    shift
    echo
    echo "=== $title"
    local rc=0
    timeout -k 5 "$step_limit" "$loadgen" "$@" || rc=$?
    [ "$rc" -eq 0 ] || echo "loadgen exited with status $rc"
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        echo "courier exited during this step; restarting"
        pid=""
        start_server
    fi
}

start_server
step "fan-out: 1000 clients, 1000 msg/s, 100 B" \
    fanout --url "$ws" --clients 1000 --rate 1000 --size 100 --duration 10
sleep 2
step "fan-out: 1000 clients, 1200 msg/s, 100 B" \
    fanout --url "$ws" --clients 1000 --rate 1200 --size 100 --duration 10
sleep 2
step "fan-out: 10000 clients, 100 msg/s, 100 B" \
    fanout --url "$ws" --clients 10000 --rate 100 --size 100 --duration 10

start_server
step "idle WebSocket: 10000 connections" \
    idle --url "$ws" --connections 10000 --hold 20 --server-pid "$pid"

start_server
step "SSE: 10000 subscribers on /sse/heartbeat" \
    sse --url "$http/sse/heartbeat" --subscribers 10000 --hold 20 --server-pid "$pid"
stop_server

# The same load against the textbook actix design (bench/peers/actix-textbook), for ratios.
peer_port=18101
start_peer() {
    [ -z "${peer:-}" ] || { kill "$peer" 2>/dev/null || true; wait "$peer" 2>/dev/null || true; }
    "$root/target/peers/release/actix-textbook" "$peer_port" >/dev/null 2>&1 &
    peer=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$peer_port/healthz" >/dev/null && return 0; sleep 0.1; done
    echo "actix-textbook did not start" >&2; exit 1
}
start_peer
step "textbook actix: fan-out, 1000 clients, 1000 msg/s, 100 B" \
    fanout --url "ws://127.0.0.1:$peer_port" --clients 1000 --rate 1000 --size 100 --duration 10
start_peer
step "textbook actix: fan-out, 1000 clients, 1200 msg/s, 100 B" \
    fanout --url "ws://127.0.0.1:$peer_port" --clients 1000 --rate 1200 --size 100 --duration 10
start_peer
step "textbook actix: idle WebSocket, 10000 connections" \
    idle --url "ws://127.0.0.1:$peer_port" --connections 10000 --hold 20 --server-pid "$peer"
kill "$peer" 2>/dev/null || true
