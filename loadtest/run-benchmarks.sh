#!/usr/bin/env bash
# The runs behind docs/benchmarks.md. Each run starts its own redis-server
# and two switchboard nodes (one worker each) on this machine (--cluster 2),
# runs one scenario, stops them, and writes
# $OUT/<run>/{summary.json,report.html}; the figures of each table are in
# the printed headline lines and in summary.json.
#
#   cargo build --release --workspace
#   loadtest/run-benchmarks.sh                # every section, in order
#   loadtest/run-benchmarks.sh fanout churn   # only these sections
#   loadtest/run-benchmarks.sh --list         # the sections
# Environment: OUT (default bench-out), LT (the harness binary), OTLP_PORT,
# KNEE (the admission section's knee rate, default 7000/s).
#
# Sections (each is named next to its table in docs/benchmarks.md):
#   connections  table "Connections"      5 connect runs (24k, 32k, 7000/s, 8500/s, 10000/s)
#   fanout       table "Cross-node fanout" 6 fanout runs, R = 250 ... 1250
#   direct       table "Direct messages"  1 direct run
#   churn        table "Churn"            1 churn run
#   tracing      table "Tracing overhead" fanout R = 500 with tracing off (twice),
#                1 % and 100 % sampled, exporting to `switchboard-loadtest otlp-sink`
#   admission    table "Handshake admission" connect at the knee and at twice it,
#                with admission control on (default) and off
#   history      table "History and recovery" fanout (R = 500, and a publish-heavy
#                R = 5000) without history and with history_size = 1000; then
#                fanout and churn --recover with reconnects (loss, duplicates,
#                recovery time)
#   redis_cluster table "Redis Cluster: one Redis against three shards" fanout
#                over 1000 channels (2 subscribers each) at R = 5000 and 20000,
#                on one redis-server and on a 3-master Redis Cluster
# The "Targets" table has no run of its own: it quotes the tables above.
set -euo pipefail
cd "$(dirname "$0")/.."
# The harness (the switchboard binary next to it is what --cluster starts).
LT=${LT:-target/release/switchboard-loadtest}
OUT=${OUT:-bench-out}
# Port of the counting OTLP sink in the tracing section.
OTLP_PORT=${OTLP_PORT:-4318}
SECTIONS=(connections one_node fanout direct churn tracing admission history redis_cluster)
# Runs are untraced unless the tracing section sets these (the nodes inherit them).
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_ARG OTEL_SDK_DISABLED

# A run of 20 000+ connections leaves as many loopback sockets in TIME_WAIT
# for 60 s; starting the next one on top of them made its handshakes stall
# and time out (408), whichever build was measured. Wait for them to go.
settle() {
  local waited=0
  while [ "$(ss -tan state time-wait 2>/dev/null | wc -l)" -gt 1000 ] && [ "$waited" -lt 90 ]; do
    sleep 3; waited=$((waited + 3))
  done
}
run() { name=$1; shift; settle; echo "== $name: $*"; "$LT" "$@" --cluster 2 --quiet --out "$OUT/$name" | sed 's/^/   /'; }
# The same with one node (and its Redis).
run_one() { name=$1; shift; settle; echo "== $name: $*"; "$LT" "$@" --cluster 1 --quiet --out "$OUT/$name" | sed 's/^/   /'; }

# Handshake latency, connect rate and idle memory per connection. The 32k
# run needs more than one source address's ~28k ephemeral ports: the
# harness splits it over 3 worker processes (one per 15 000 connections),
# each binding its own loopback address (127.0.0.1, .2, .3).
section_connections() {
  local nofile
  nofile=$(ulimit -n)
  if [ "$nofile" != unlimited ] && [ "$nofile" -lt 20000 ]; then
    echo "warning: ulimit -n is $nofile; the 24k and 32k runs need about 20 000 open files per process" >&2
  fi
  run connect-24k connect --connections 24000 --rate 5000 --hold 2
  run connect-32k connect --connections 32000 --rate 5000 --hold 1
  run connect-rate-7000 connect --connections 20000 --rate 7000 --hold 1
  run connect-rate-8500 connect --connections 20000 --rate 8500 --hold 1
  run connect-rate-10000 connect --connections 20000 --rate 10000 --hold 1
}

# Idle memory on one node as connections grow, up to this machine's limit of
# 20 000 open files per process: memory per connection should stay flat.
section_one_node() {
  local n
  for n in 5000 10000 19000; do
    run_one "one-node-$n" connect --connections "$n" --rate 1000 --hold 2
  done
}

# Cross-node fanout: 2000 subscribers on 10 channels (200 per channel, 1000
# per node), 4 publishers; deliveries/s = rate x 200.
section_fanout() {
  local rate
  for rate in 250 500 625 750 1000 1250; do
    run "fanout-$rate" fanout --connections 2000 --channels 10 --publishers 4 --rate "$rate" --duration 10
  done
}

section_direct() {
  run direct-5k direct --users 2000 --rate 5000 --duration 10
}

section_churn() {
  run churn-300 churn --rate 300 --concurrency 50 --duration 10
}

# Tracing overhead: the fanout run at R = 500 with tracing off (twice), 1 %
# and 100 % sampled. The nodes started by --cluster inherit the OTEL_*
# variables and export to a counting OTLP/HTTP sink. Node CPU per delivery
# is the "µs per delivery" of each run's headline.
section_tracing() {
  local fanout=(fanout --connections 2000 --channels 10 --publishers 4 --rate 500 --duration 10)
  "$LT" otlp-sink --port "$OTLP_PORT" &
  SINK_PID=$!
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$OTLP_PORT") 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then echo "otlp-sink did not listen on port $OTLP_PORT" >&2; return 1; fi
    sleep 0.1
  done
  run tracing-off-1 "${fanout[@]}"
  run tracing-off-2 "${fanout[@]}"
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" \
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 \
    run tracing-1pct "${fanout[@]}"
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" OTEL_TRACES_SAMPLER=always_on \
    run tracing-100pct "${fanout[@]}"
  stop_sink
}

# Handshake admission: offered the knee rate, then twice it, with the
# default max_pending_handshakes (4096), a tighter 1024, the default with
# clients that retry refused upgrades after Retry-After, and the limit out
# of reach (the behaviour before admission control existed). Each run waits
# for the previous run's TIME_WAIT sockets to clear: thousands of them
# skew the next connect run.
section_admission() {
  local knee=${KNEE:-7000}
  local twice=$((2 * knee))
  local burst=(connect --connections $((2 * twice)) --rate "$twice" --hold 1)
  quiet_sockets; run admission-knee connect --connections $((2 * knee)) --rate "$knee" --hold 1
  quiet_sockets; run admission-2x-default "${burst[@]}"
  quiet_sockets; run admission-2x-1024 "${burst[@]}" --node-arg=--max-pending-handshakes --node-arg=1024
  quiet_sockets; run admission-2x-retry "${burst[@]}" --retry-refused 5
  quiet_sockets; run admission-2x-off "${burst[@]}" --node-arg=--max-pending-handshakes --node-arg=1000000
}

# The cost of history. The nodes get a settings file (--config) that gives
# the default namespace -- the harness's channels lt0, lt1, ... and churn0,
# churn1, ... -- history_size = 1000: every publish also appends to the
# channel's Redis stream. Same load without and with it: the tracing
# section's fanout (R = 500, 100k deliveries/s) for node CPU per delivery,
# and a publish-heavy fanout (R = 5000 over 100 channels of 2 subscribers)
# for the per-publish cost. Then, with history, fanout --recover with 10 %
# of the subscribers dropped every 2 s (one at a time, each away 0.5 s)
# and churn --recover (each cycle comes back with its position while 500
# messages/s are published): loss, duplicates and recovery time.
section_history() {
  local fanout=(fanout --connections 2000 --channels 10 --publishers 4 --rate 500 --duration 10)
  local publish=(fanout --connections 200 --channels 100 --publishers 8 --rate 5000 --duration 10)
  local settings
  mkdir -p "$OUT"
  settings="$(cd "$OUT" && pwd)/history-1000.toml"
  printf '[default_namespace]\nhistory_size = 1000\nhistory_ttl_ms = 300000\n' >"$settings"
  local history=(--node-arg=--config "--node-arg=$settings")
  run history-off "${fanout[@]}"
  run history-1000 "${fanout[@]}" "${history[@]}"
  run history-publish-off "${publish[@]}"
  run history-publish-1000 "${publish[@]}" "${history[@]}"
  # Past the knee: the publish rate the cluster sustains, without and with history.
  local saturated=(fanout --connections 200 --channels 100 --publishers 8 --rate 20000 --duration 10)
  run history-max-off "${saturated[@]}"
  run history-max-1000 "${saturated[@]}" "${history[@]}"
  run history-recover "${fanout[@]}" "${history[@]}" --recover --reconnect-every 2 --reconnect-fraction 0.1 --reconnect-delay 0.5
  run history-churn-recover churn --rate 300 --concurrency 50 --duration 10 "${history[@]}" --recover --publish-rate 500
}

# Wait (up to 2 minutes) until fewer than 1000 sockets are in TIME_WAIT.
quiet_sockets() {
  local tries=0 tw
  while tw=$(ss -s | sed -n 's/.*timewait \([0-9]*\).*/\1/p') && [ "${tw:-0}" -gt 1000 ] && [ "$tries" -lt 24 ]; do
    sleep 5
    tries=$((tries + 1))
  done
}

# The sink started by the tracing section, stopped however the script ends.
# Redis's share of a publish-heavy load on one redis-server and on a Redis
# Cluster of 3 masters (sharded pub/sub): 1000 channels with 2 subscribers
# each, so every message costs Redis a script, an SPUBLISH/PUBLISH and two
# deliveries. The headline gives Redis CPU summed over the masters;
# summary.json's redis.processes has each master's.
section_redis_cluster() {
  local r s
  for r in 5000 20000; do
    for s in 0 3; do
      run "redis-shards-$s-rate-$r" fanout --redis-shards "$s" --connections 2000 --channels 1000 --publishers 8 --rate "$r" --duration 10
    done
  done
}

SINK_PID=
stop_sink() {
  if [ -n "$SINK_PID" ]; then
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=
  fi
}
trap stop_sink EXIT

if [ "${1:-}" = --list ] || [ "${1:-}" = -l ]; then
  printf '%s\n' "${SECTIONS[@]}"
  exit 0
fi
chosen=("$@")
if [ ${#chosen[@]} -eq 0 ]; then chosen=("${SECTIONS[@]}"); fi
for s in "${chosen[@]}"; do
  if ! declare -F "section_$s" >/dev/null; then
    echo "unknown section '$s'; sections: ${SECTIONS[*]}" >&2
    exit 2
  fi
done
if [ ! -x "$LT" ]; then
  echo "$LT not found: run cargo build --release --workspace first" >&2
  exit 2
fi
for s in "${chosen[@]}"; do
  echo "### section $s"
  "section_$s"
done
