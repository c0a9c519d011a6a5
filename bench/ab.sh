#!/usr/bin/env bash
# Two courier builds under the same loads, interleaved round by round, so the machine's noise
# hits both alike: a change's cost as a ratio measured in one run.
#
#   bench/ab.sh A_BINARY B_BINARY [ROUNDS]
#   ONLY=http bench/ab.sh ...     # only the wrk runs (ONLY=fanout: only the fan-out runs)
#   ONLY=mem bench/ab.sh ...      # only memory per connection: 10,000 idle WebSockets
#                                 # (loadgen idle) and 10,000 SSE streams (loadgen sse)
#   ONLY=tails bench/ab.sh ...    # only the high-rate fan-out: 1,000 clients at 2,500 msg/s
#                                 # (2.5 M deliveries/s) and 10,000 clients at 100 msg/s
#   ACCESS_LOG=1 bench/ab.sh ...  # the wrk runs with the access log on (LOG_LEVEL=info)
#
# A is the reference (e.g. a release build of the commit before a change), B the build under
# test. Each round runs, on loopback, with a fresh server and data directory per run:
#   - fan-out: 1000 WebSocket receivers in one room, 1000 msg/s of 100-byte data, 10 s
#     (bench/loadgen fanout), in an open room, on A then B;
#   - the same on B in a room of a namespace whose every action needs a capability
#     (`vip:bench`, NAMESPACE_VIP_*=capability), every connection holding a token whose
#     `vip:*` rule allows subscribe and publish: the cost of the permission checks;
#   - wrk -t2 -c64 -d10s on GET /healthz and GET /async?ms=0, on A then B (access log off).
# Then it prints the median of each figure and B's ratio to A (and capability to open).
#
# Needs wrk (apt-get install -y wrk) and a release build of bench/loadgen (LOADGEN, default
# target/bench/release/loadgen; `cd bench/loadgen && CARGO_TARGET_DIR=../../target/bench
# cargo build --release`). The open-file limit must allow about 2,100 descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 2; }
a_bin=$(realpath "$1")
b_bin=$(realpath "$2")
rounds=${3:-3}
loadgen=$(realpath "${LOADGEN:-target/bench/release/loadgen}")
port=18200
http="http://127.0.0.1:$port"
fanout_secs=10
wrk_secs=10
step_limit=120 # seconds; a fan-out run bounds itself well within this
held=10000     # connections held by the memory runs
hold_secs=20   # how long the memory runs hold them
log_level=warn
[ -n "${ACCESS_LOG:-}" ] && log_level=info

command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }
[ -x "$loadgen" ] || { echo "no loadgen at $loadgen (see the header of $0)" >&2; exit 1; }
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true

out=$(mktemp -d)
mkdir -p "$out/no-config"
pid=""
stop_server() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap 'stop_server; rm -rf "$out"' EXIT
trap 'exit 130' INT TERM

# The capability namespace, for every run (a build that predates namespaces ignores it).
export NAMESPACE_VIP_SUBSCRIBE=capability NAMESPACE_VIP_PUBLISH=capability \
    NAMESPACE_VIP_PRESENCE=capability NAMESPACE_VIP_HISTORY=capability

start_server() { # start_server BINARY
    stop_server
    rm -rf "$out/data"
    mkdir -p "$out/data"
    # APP_CONFIG_DIR: an empty directory, so each build uses its own built-in TOML files.
    APP_HOST=127.0.0.1 APP_PORT=$port APP_WORKERS=2 LOG_LEVEL=$log_level APP_DATA_DIR="$out/data" \
        APP_CONFIG_DIR="$out/no-config" "$1" >>"$out/courier.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        curl -sf "$http/healthz" >/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$1 did not start; log:" >&2
    tail -n 30 "$out/courier.log" >&2
    exit 1
}

# A token for the capability runs, minted by B with its built-in development secret.
token=$(APP_CONFIG_DIR="$out/no-config" APP_DATA_DIR="$out" "$b_bin" token --user bench --match 'vip:*' --allow subscribe,publish)

results="$out/results.txt" # label figure value
fanout() { # fanout LABEL BINARY ROOM PATH [CLIENTS RATE]
    start_server "$2"
    local log="$out/fanout.txt"
    timeout -k 5 "$step_limit" "$loadgen" fanout --url "ws://127.0.0.1:$port" --path "$4" \
        --room "$3" --clients "${5:-1000}" --rate "${6:-1000}" --size 100 \
        --duration "$fanout_secs" >"$log" 2>&1 || true
    local json
    json=$(sed -n 's/^RESULT //p' "$log")
    if [ -z "$json" ]; then
        echo "$1: no result; loadgen said:" >&2
        tail -n 20 "$log" >&2
        return
    fi
    python3 - "$1" "$json" >>"$results" <<'EOF'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
print(label, "deliveries_per_s", round(r["delivery_rate"]))
print(label, "p99_ms", round(r["latency_ms"]["p99"], 2))
print(label, "loss_pct", round(r["loss_pct"], 3))
EOF
    tail -n 3 "$results" | sed "s/^/  round $round: /"
    stop_server
}

held_kib() { # held_kib LABEL BINARY ws|sse: server RSS per connection held
    start_server "$2"
    local log="$out/held.txt" args
    if [ "$3" = ws ]; then
        args=(idle --url "ws://127.0.0.1:$port" --connections "$held")
    else
        args=(sse --url "$http/sse/heartbeat" --subscribers "$held")
    fi
    timeout -k 5 "$step_limit" "$loadgen" "${args[@]}" --hold "$hold_secs" --server-pid "$pid" \
        >"$log" 2>&1 || true
    local kib
    kib=$(sed -n 's/^RESULT //p' "$log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rss_per_conn_kib"])' 2>/dev/null || true)
    if [ -z "$kib" ] || [ "$kib" = None ]; then
        echo "$1: no result; loadgen said:" >&2
        tail -n 20 "$log" >&2
    else
        echo "$1 kib_per_conn $kib" >>"$results"
        echo "  round $round: $1 $kib KiB per connection"
    fi
    stop_server
}

wrk_run() { # wrk_run LABEL BINARY PATH
    start_server "$2"
    wrk -t2 -c64 -d"${wrk_secs}s" --latency "$http$3" >"$out/wrk.txt"
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$out/wrk.txt")
    echo "$1 req_per_s $rps" >>"$results"
    echo "  round $round: $1 $rps req/s, p99 $p99"
    stop_server
}

echo "A: $a_bin"
echo "B: $b_bin"
echo "$rounds rounds; $(nproc) cores; $(date -u +%FT%TZ)"
only=${ONLY:-}
for round in $(seq 1 "$rounds"); do
    if [ "$only" = mem ]; then
        held_kib "A-idle-ws" "$a_bin" ws
        held_kib "B-idle-ws" "$b_bin" ws
        held_kib "A-idle-sse" "$a_bin" sse
        held_kib "B-idle-sse" "$b_bin" sse
        continue
    fi
    if [ "$only" = tails ]; then
        fanout "A-2.5M" "$a_bin" bench /ws/json 1000 2500
        fanout "B-2.5M" "$b_bin" bench /ws/json 1000 2500
        fanout "A-10k" "$a_bin" bench /ws/json 10000 100
        fanout "B-10k" "$b_bin" bench /ws/json 10000 100
        continue
    fi
    if [ "$only" != http ]; then
        fanout "A-open" "$a_bin" bench /ws/json
        fanout "B-open" "$b_bin" bench /ws/json
        fanout "B-capability" "$b_bin" vip:bench "/ws/json?token=$token"
    fi
    if [ "$only" != fanout ]; then
        wrk_run "A-healthz" "$a_bin" /healthz
        wrk_run "B-healthz" "$b_bin" /healthz
        wrk_run "A-async" "$a_bin" "/async?ms=0"
        wrk_run "B-async" "$b_bin" "/async?ms=0"
    fi
done

echo
echo "medians of $rounds rounds:"
python3 - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict
values = defaultdict(list)
for line in open(sys.argv[1]):
    label, figure, value = line.split()
    values[(label, figure)].append(float(value))
med = {k: statistics.median(v) for k, v in values.items()}
def show(label, figure, ref=None):
    if (label, figure) not in med:
        return
    v = med[(label, figure)]
    text = f"  {label:<14} {figure:<18} {v:>12,.2f}"
    if ref and ref in med and med[ref]:
        text += f"   = {100 * v / med[ref]:.1f}% of {ref[0]}"
    print(text)
for figure in ("deliveries_per_s", "p99_ms", "loss_pct"):
    show("A-open", figure)
    show("B-open", figure, ("A-open", figure))
    show("B-capability", figure, ("B-open", figure))
    for load in ("2.5M", "10k"):
        show(f"A-{load}", figure)
        show(f"B-{load}", figure, (f"A-{load}", figure))
for kind in ("ws", "sse"):
    show(f"A-idle-{kind}", "kib_per_conn")
    show(f"B-idle-{kind}", "kib_per_conn", (f"A-idle-{kind}", "kib_per_conn"))
for route in ("healthz", "async"):
    show(f"A-{route}", "req_per_s")
    show(f"B-{route}", "req_per_s", (f"A-{route}", "req_per_s"))
EOF
