//! The result of one run: written as `summary.json` and rendered into the
//! self-contained `report.html`.

use serde::Serialize;

use crate::stats::{Delivery, LatencySummary};

/// One second of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the start of the measured phase.
    pub t: f64,
    /// Messages (or connection attempts) sent in this second.
    pub sent: u64,
    /// Deliveries (or completed handshakes) in this second.
    pub delivered: u64,
    /// Open client connections at the end of this second.
    pub connections: u64,
    /// p99 latency of this second's deliveries, ms (0 when none).
    pub p99_ms: f64,
}

/// Resident memory of one local node process over time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeMemory {
    pub pid: u32,
    /// (seconds since start, RSS in KiB)
    pub rss_kib: Vec<(f64, u64)>,
    /// CPU seconds (user + system) the process used during the run.
    pub cpu_s: f64,
}

/// CPU the local Redis processes used during the run: the one
/// `redis-server`, or every node of a Redis Cluster (`--redis-shards`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisCpu {
    /// CPU seconds (user + system), all the processes together.
    pub cpu_s: f64,
    pub processes: Vec<ProcessCpu>,
}

/// CPU seconds (user + system) one process used during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessCpu {
    pub pid: u32,
    pub cpu_s: f64,
}

/// Connection-phase figures (the `connect` scenario, and the set-up of the others).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectFigures {
    pub attempted: u64,
    pub established: u64,
    pub errors: u64,
    /// Upgrades refused with 503 and tried again (`--retry-refused`).
    pub retried: u64,
    /// Established connections per second over the ramp.
    pub rate_per_s: f64,
    /// TCP connect + upgrade + `welcome`, ms.
    pub handshake: Option<LatencySummary>,
    /// (RSS after − RSS before) summed over local node pids / connections, bytes.
    pub memory_per_connection_bytes: Option<f64>,
}

/// What `--recover` saw (fanout and churn). The loss accounting itself is
/// in [`Summary::delivery`]: there `expected` counts the acknowledged
/// publishes each subscriber was owed, and `lost` excludes the
/// `unrecoverable` ones below.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryFigures {
    /// Subscriptions resumed on a new connection after the previous one
    /// ended (fanout) or closed at the end of a cycle (churn).
    pub reconnects: u64,
    /// Connections the harness dropped on purpose: fanout's
    /// `--reconnect-every`, churn's close at the end of every cycle.
    pub dropped: u64,
    /// Connections that ended otherwise (closed by the server, errors).
    pub connection_ends: u64,
    /// Reconnect attempts (connect or subscribe) that failed and were retried.
    pub reconnect_errors: u64,
    /// Publisher connections made again after one ended (a drained node).
    pub publisher_reconnects: u64,
    /// Subscribes sent with `since`.
    pub subscribes_with_since: u64,
    /// Replies with `recovered: true`.
    pub recovered: u64,
    /// Replies with `recovered: false`: the client must resync.
    pub not_recovered: u64,
    /// `resync` frames received.
    pub resyncs: u64,
    /// Reconnects without a position to resume from (nothing received yet,
    /// no history to name the channel's top).
    pub without_position: u64,
    /// Messages received because of a recovery (sent after the reply).
    pub replayed: u64,
    /// Owed messages not received that the client was told about
    /// (`recovered: false`, `resync`, no position): not counted as lost.
    pub unrecoverable: u64,
    /// Reconnect start (the connection lost; after a deliberate drop, the
    /// end of `--reconnect-delay`) → `subscribe` reply with
    /// `recovered: true`, ms. Churn: connect start of the cycle.
    pub recovery: Option<LatencySummary>,
    /// (percentile, ms) points of `recovery`.
    pub recovery_distribution: Vec<(f64, f64)>,
    /// Reconnect start → the last replayed message received (caught up), ms.
    pub catch_up: Option<LatencySummary>,
}

/// One of the slowest traced deliveries (`--trace-fraction`): the
/// slowest delivery of its trace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowTrace {
    /// W3C trace id, 32 hex digits: the trace the nodes exported.
    pub trace_id: String,
    pub channel: String,
    /// The message's offset in its channel, if the frame had one.
    pub offset: Option<u64>,
    /// Publish (intended send time) → this delivery, ms.
    pub latency_ms: f64,
    /// The receiving node (the `node` of its `welcome` frame).
    pub node: String,
}

/// What `--trace-fraction` traced (fanout, churn with `--recover`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TraceFigures {
    /// The share of publishes asked to carry a `traceparent`.
    pub fraction: f64,
    /// Publishes sent with a fresh sampled `traceparent`.
    pub traced_publishes: u64,
    /// Live deliveries of traced messages received (replays not counted).
    pub traced_deliveries: u64,
    /// The traces whose slowest delivery was slowest, slowest first, at
    /// most `--slowest`, one entry per trace.
    pub slowest: Vec<SlowTrace>,
    /// `--jaeger-url`: the report links trace ids to `URL/trace/<id>`.
    pub jaeger_url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub scenario: String,
    /// The command line that produced this run.
    pub command: String,
    /// Unix time of the start, ms.
    pub started_at_ms: u64,
    /// Length of the measured phase, s.
    pub duration_s: f64,
    /// The scenario's parameters.
    pub params: serde_json::Value,
    /// Messages offered per second (open loop) and achieved.
    pub target_rate: Option<f64>,
    pub published: u64,
    pub publish_errors: u64,
    /// Deliveries per second over the measured phase.
    pub deliveries_per_s: f64,
    pub delivery: Option<Delivery>,
    /// Publish → deliver latency from the intended send time.
    pub latency: Option<LatencySummary>,
    /// (percentile, ms) points of the latency distribution.
    pub latency_distribution: Vec<(f64, f64)>,
    pub connect: Option<ConnectFigures>,
    pub errors: Vec<String>,
    pub samples: Vec<Sample>,
    pub nodes: Vec<NodeMemory>,
    /// With local Redis pids (`--cluster`, `--redis-pids`).
    pub redis: Option<RedisCpu>,
    /// Counter deltas scraped from `/metrics` (name -> increase), if asked.
    pub metrics: Option<serde_json::Value>,
    /// With `--recover`.
    pub recovery: Option<RecoveryFigures>,
    /// With `--trace-fraction` above 0.
    pub traces: Option<TraceFigures>,
}
