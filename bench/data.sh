#!/usr/bin/env bash
# The data layer: GET /users/{id} (query builder, rows mapped to a struct and serialised)
# against GET /users-fast/{id} (one prepared statement whose column is the JSON), on
# the embedded SQLite file, Postgres and MySQL/MariaDB; then GET /export/users of 1,000,000
# rows: rows per second and the server's peak resident memory.
#
#   bench/data.sh [DURATION_SECS] [CONNECTIONS]
#
# Needs wrk, psql and mariadb (Debian packages `wrk`, `postgresql-client`,
# `mariadb-client`), a Postgres at BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) and a MySQL/MariaDB at BENCH_MYSQL_HOST:PORT
# as BENCH_MYSQL_USER (default root@127.0.0.1:3306, no password); a database
# `courier_bench_<pid>` is created on each and dropped afterwards. Everything runs on
# loopback and shares the machine's cores with the database: compare the ratios.
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-32}
admin=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
users=10000
export_rows=1000000
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }
command -v psql >/dev/null || { echo "install psql: apt-get install -y postgresql-client" >&2; exit 1; }
command -v mariadb >/dev/null || { echo "install mariadb: apt-get install -y mariadb-client" >&2; exit 1; }
my_host=${BENCH_MYSQL_HOST:-127.0.0.1}
my_port=${BENCH_MYSQL_PORT:-3306}
my_user=${BENCH_MYSQL_USER:-root}
mariadb_cli() { mariadb -h "$my_host" -P "$my_port" -u "$my_user" "$@"; }

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet

out=$(mktemp -d)
dbname="courier_bench_$$"
pg_url="${admin%/*}/$dbname"
my_url="mysql://$my_user@$my_host:$my_port/$dbname"
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    psql -q "$admin" -c "DROP DATABASE IF EXISTS $dbname" >/dev/null 2>&1 || true
    mariadb_cli -e "DROP DATABASE IF EXISTS $dbname" >/dev/null 2>&1 || true
    rm -rf "$out"
}
trap cleanup EXIT
psql -q "$admin" -c "CREATE DATABASE $dbname" >/dev/null
mariadb_cli -e "CREATE DATABASE $dbname"

# random ids in 1..users, so the whole table is read
cat >"$out/random.lua" <<LUA
local path = os.getenv("BENCH_PATH")
request = function() return wrk.format("GET", path .. math.random(1, $users)) end
LUA

start() { # start PORT [DATABASE_URL]
    APP_PORT=$1 APP_WORKERS=2 LOG_LEVEL=warn APP_DATA_DIR="$out/data" DB_POOL_MAX_SIZE=16 \
        DATABASE_URL=${2:-} ./target/release/courier 2>"$out/courier-$1.log" &
    pids+=($!)
    pid_of[$1]=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return; sleep 0.1; done
    echo "courier on $1 did not become ready" >&2; cat "$out/courier-$1.log" >&2; exit 1
}
sql() { # sql PORT STATEMENT: runs on the backend behind PORT
    if [ "${backend[$1]}" = Postgres ]; then psql -q "$pg_url" -c "$2" >/dev/null
    elif [ "${backend[$1]}" = MySQL ]; then mariadb_cli "$dbname" -e "$2"
    else python3 - "$out/data/courier.sqlite3" "$2" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()
PY
    fi
}
fill() { # fill PORT ROWS: replaces the users with ROWS generated ones
    if [ "${backend[$1]}" = Postgres ]; then
        sql "$1" "TRUNCATE users CASCADE; INSERT INTO users (name, email, created_at)
                  SELECT 'User ' || g, 'user' || g || '@example.com', now() FROM generate_series(1, $2) g"
    elif [ "${backend[$1]}" = MySQL ]; then
        local d="(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
                  UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
        sql "$1" "SET FOREIGN_KEY_CHECKS = 0; TRUNCATE users; SET FOREIGN_KEY_CHECKS = 1;
                  INSERT INTO users (name, email, created_at)
                  SELECT CONCAT('User ', n), CONCAT('user', n, '@example.com'), NOW(3) FROM
                  (SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d + 100000*g.d + 1 AS n
                   FROM $d a, $d b, $d c, $d e, $d f, $d g) t WHERE n <= $2 ORDER BY n"
    else
        sql "$1" "DELETE FROM users; DELETE FROM sqlite_sequence WHERE name = 'users';
                  WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < $2)
                  INSERT INTO users (name, email, created_at)
                  SELECT 'User ' || x, 'user' || x || '@example.com', '2026-01-01 00:00:00' FROM g"
    fi
}

declare -A backend=([18101]=SQLite [18102]=Postgres [18105]=MySQL [18103]=SQLite [18104]=Postgres [18106]=MySQL)
declare -A name=([18101]="SQLite" [18102]="Postgres" [18105]="MySQL" [18103]="SQLite" [18104]="Postgres" [18106]="MySQL")
declare -A pid_of=()
start 18101
start 18102 "$pg_url"
start 18105 "$my_url"

echo "wrk -t2 -c$conns -d${duration}s, $(nproc) cores, $(date -u +%FT%TZ), $users users, random ids"
for port in 18101 18102 18105; do
    fill "$port" "$users"
    for round in 1 2 3; do   # interleaved, so noise hits both paths alike
        for path in /users/ /users-fast/; do
            BENCH_PATH=$path wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$out/random.lua" \
                "http://127.0.0.1:$port" >"$out/wrk.txt"
            rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")
            p99=$(awk '$1 == "99%" {print $2}' "$out/wrk.txt")
            non2xx=$(awk '/Non-2xx/ {print $4}' "$out/wrk.txt")
            printf '%-9s %-14s round %d: %10s req/s  p99 %-8s non-2xx %s\n' \
                "${name[$port]}" "${path}{id}" "$round" "$rps" "$p99" "${non2xx:-0}"
        done
    done
done

# The export runs on servers started afresh, so the request load above does not count
# towards their memory.
kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true; pids=()
start 18103
start 18104 "$pg_url"
start 18106 "$my_url"
echo "GET /export/users of $export_rows rows (fresh servers)"
for port in 18103 18104 18106; do
    fill "$port" "$export_rows"
    pid=${pid_of[$port]}
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true   # resets the peak (VmHWM) to now
    before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    start_ns=$(date +%s%N)
    lines=$(curl -sf "http://127.0.0.1:$port/export/users" | wc -l)
    secs=$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN {print (b - a) / 1e9}')
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    awk -v n="${name[$port]}" -v l="$lines" -v s="$secs" -v b="$before" -v p="$peak" 'BEGIN {
        printf "%-9s %d lines in %.2f s = %.0f rows/s; server RSS before %.1f MiB, peak %.1f MiB\n",
            n, l, s, (l - 1) / s, b / 1024, p / 1024 }'
done
