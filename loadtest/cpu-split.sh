#!/usr/bin/env bash
# User and kernel CPU per delivery of Switchboard and its peers, side by side.
#
#   loadtest/cpu-split.sh                     # rate 250/s (50k deliveries/s), all three systems
#   RATES="50 250 500" loadtest/cpu-split.sh switchboard socketioxide
#
# Drives the peers' comparison generator (target/peers/bench/run.sh, set up
# by the peers' setup.sh; see docs/benchmarks.md) one rate at a time and
# samples utime and stime (/proc/PID/stat) of the two nodes and Redis over
# the publish window only: from the generator's "connected+subscribed" line
# to its "sent N publishes" line. Prints one markdown row per system and
# rate: user, kernel and total µs of CPU per delivery, nodes and Redis.
# Environment: RATES [250], DURATION [10], SUBS [2000], CHANNELS [10], and
# anything run.sh takes (SB_BIN, SB_ARGS...).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=target/peers/bench/run.sh
[ -x "$RUN" ] || { echo "cpu-split: $RUN missing; run the peers' setup.sh first" >&2; exit 1; }
SYSTEMS=("$@"); [ ${#SYSTEMS[@]} -gt 0 ] || SYSTEMS=(switchboard socketioxide socketio)
RATES=${RATES:-250}; DURATION=${DURATION:-10}; SUBS=${SUBS:-2000}; CHANNELS=${CHANNELS:-10}
export DURATION SUBS CHANNELS
TICK=$(getconf CLK_TCK)

# "utime stime" of each pid, summed per group: nodes (a, b) and redis.
sample() { # pids...
  local u=0 s=0 f
  for p in "$@"; do
    read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat")
    u=$((u + f[11])); s=$((s + f[12]))
  done
  echo "$u $s"
}

echo "| system | deliveries/s | node user µs | node kernel µs | redis user µs | redis kernel µs | total µs/delivery |"
echo "|---|---|---|---|---|---|---|"
for system in "${SYSTEMS[@]}"; do
  for rate in $RATES; do
    deliveries=$((rate * SUBS / CHANNELS * DURATION))
    nodes=(); redis=(); n0=(); r0=()
    while IFS= read -r line; do
      case "$line" in
        "== "*"pids "*)
          pids=${line#*pids }; pids=${pids%%,redis=*}; rpid=${line#*redis=}; rpid=${rpid%%,*}; rpid=${rpid%% *}
          nodes=(); for kv in ${pids//,/ }; do nodes+=("${kv#*=}"); done
          redis=("$rpid") ;;
        *"connected+subscribed"*)
          read -r -a n0 < <(sample "${nodes[@]}"); read -r -a r0 < <(sample "${redis[@]}") ;;
        *"sent "*" publishes"*)
          read -r -a n1 < <(sample "${nodes[@]}"); read -r -a r1 < <(sample "${redis[@]}")
          python3 - "$system" "$rate" "$deliveries" "$DURATION" "$TICK" "${n0[@]}" "${n1[@]}" "${r0[@]}" "${r1[@]}" <<'PY'
import sys
system, rate, deliveries, duration, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
nu0, ns0, nu1, ns1, ru0, rs0, ru1, rs1 = map(int, sys.argv[6:14])
us = lambda ticks: ticks / tick * 1e6 / deliveries
cols = [us(nu1 - nu0), us(ns1 - ns0), us(ru1 - ru0), us(rs1 - rs0)]
print(f"| {system} | {deliveries // duration:,} | ".replace(",", " ") + " | ".join(f"{c:.2f}" for c in cols) + f" | {sum(cols):.2f} |")
PY
          ;;
      esac
    done < <("$RUN" "$system" "$rate" 2>&1 >/dev/null)
  done
done
