#!/usr/bin/env bash
# The chaos checker's long form (tests/api/chaos.rs): three courier processes on a Redis of
# their own and on a local three-master Redis Cluster, subscribers and publishers on every
# node, while a node is killed and restarted, Redis is paused and restarted.
#
#   bench/chaos.sh [SECONDS]      # publishing time per run, default 120
#
# Needs redis-server and redis-cli (Debian: redis-server, redis-tools). Prints each run's
# totals; fails when a promise is broken (see the test's header).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
COURIER_CHAOS_SECS=$secs CI=true cargo test --test api chaos -- --nocapture --test-threads 1
