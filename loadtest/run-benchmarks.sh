#!/usr/bin/env bash
# The runs behind docs/benchmarks.md: each starts its own redis-server and
# two switchboard nodes (one worker each) on this machine, runs one
# scenario, and writes bench-out/<name>/{summary.json,report.html}.
#   cargo build --release --workspace && loadtest/run-benchmarks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LT=target/release/switchboard-loadtest
OUT=${OUT:-bench-out}
run() { name=$1; shift; echo "== $name: $*"; "$LT" "$@" --cluster 2 --quiet --out "$OUT/$name" | sed 's/^/   /'; }

# Idle memory per connection and connect rate at 24k connections.
run connect-24k connect --connections 24000 --rate 5000 --hold 2
run connect-rate connect --connections 20000 --rate 10000 --hold 1
# Cross-node fanout: 2000 subscribers on 10 channels (200 per channel, 1000
# per node), 4 publishers; deliveries/s = rate x 200.
for rate in 250 500 625 750 1000 1250; do
  run "fanout-$rate" fanout --connections 2000 --channels 10 --publishers 4 --rate "$rate" --duration 10
done
run direct-5k direct --users 2000 --rate 5000 --duration 10
run churn-300 churn --rate 300 --concurrency 50 --duration 10
