#!/usr/bin/env bash
# HTTP throughput and latency: courier against a minimal actix-web server returning the same
# JSON, both on loopback, measured in one run with wrk (Debian package `wrk`).
#
#   bench/http.sh [DURATION_SECS] [CONNECTIONS]
#
# Each route is run against each server in turn, three times, interleaved, so the machine's noise
# hits both alike; compare the ratios, not the absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-64}
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet
    (cd bench/peers/actix-minimal && CARGO_TARGET_DIR=../../../target/peers cargo build --release --quiet)
fi

out=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$out"; }
pids=()
trap cleanup EXIT

start_courier() { # start_courier PORT LOG_LEVEL
    APP_PORT=$1 APP_WORKERS=2 LOG_LEVEL=$2 APP_DATA_DIR="$out/data-$1" \
        ./target/release/courier 2>"$out/courier-$1.log" &
    pids+=($!)
}
./target/peers/release/actix-minimal 18001 &
pids+=($!)
start_courier 18002 info    # access log on (to a file)
start_courier 18003 warn    # access log off
for port in 18001 18002 18003; do
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done

declare -A name=([18001]="actix-web minimal" [18002]="courier (access log on)" [18003]="courier (access log off)")
run() { # run PORT PATH -> "req/s p50 p99"
    wrk -t2 -c"$conns" -d"${duration}s" --latency "http://127.0.0.1:$1$2" >"$out/wrk.txt"
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$out/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$out/wrk.txt")
    echo "$rps $p50 $p99"
}

printf '%s\n' "wrk -t2 -c$conns -d${duration}s, $(nproc) cores, $(date -u +%FT%TZ)"
for path in "/healthz" "/async?ms=0"; do
    declare -A best=()
    for round in 1 2 3; do
        for port in 18001 18002 18003; do
            read -r rps p50 p99 < <(run "$port" "$path")
            printf '%-14s %-26s round %d: %10s req/s  p50 %-8s p99 %s\n' "$path" "${name[$port]}" "$round" "$rps" "$p50" "$p99"
            if [ -z "${best[$port]:-}" ] || awk -v a="$rps" -v b="${best[$port]}" 'BEGIN{exit !(a>b)}'; then
                best[$port]=$rps
            fi
        done
    done
    for port in 18002 18003; do
        awk -v c="${best[$port]}" -v b="${best[18001]}" -v n="${name[$port]}" -v p="$path" \
            'BEGIN { printf "%-14s %-26s best %.0f req/s = %.1f%% of actix-web minimal (%.0f)\n", p, n, c, 100*c/b, b }'
    done
    unset best
done
