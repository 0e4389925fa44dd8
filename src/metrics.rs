//! Node counters, rendered as Prometheus text on `GET /metrics`.
//!
//! Plain atomics: incrementing one is a single relaxed add on the hot path,
//! and the text format is simple enough not to need a metrics crate.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub frames_in: AtomicU64,
    pub bad_frames: AtomicU64,
    pub messages_published: AtomicU64,
    pub direct_sent: AtomicU64,
    pub deliveries: AtomicU64,
    pub broker_messages_in: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub broker_errors: AtomicU64,
    pub redis_reconnects: AtomicU64,
    /// Messages a node read back from a channel's history to fill a gap.
    pub gap_repairs: AtomicU64,
    /// `resync` frames sent: a gap the history could not fill, or an epoch change.
    pub resyncs: AtomicU64,
    /// Subscriptions that resumed from a client's position (`recovered: true`).
    pub recoveries: AtomicU64,
    pub presence_ops: AtomicU64,
    pub presence_errors: AtomicU64,
    pub api_requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub handshakes_refused: AtomicU64,
    /// Time for the broker to accept a publish (Redis: the Lua round trip).
    pub publish_duration: Histogram,
}

/// Upper bounds of the publish-latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// A Prometheus histogram with fixed buckets, in atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, node: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{node=\"{node}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{node=\"{node}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{node=\"{node}\"}} {cumulative}");
    }
}

/// Gauges read from live state when scraped.
pub struct Gauges {
    pub connections: usize,
    pub subscriptions: usize,
    pub channels: usize,
    pub broker_up: bool,
    pub draining: bool,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl Metrics {
    pub fn render(&self, node: &str, g: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
        };
        let counters: [(&str, &str, &AtomicU64); 20] = [
            (
                "switchboard_connections_opened_total",
                "WebSocket connections accepted.",
                &self.connections_opened,
            ),
            (
                "switchboard_connections_closed_total",
                "WebSocket connections ended.",
                &self.connections_closed,
            ),
            (
                "switchboard_frames_received_total",
                "Client frames received.",
                &self.frames_in,
            ),
            (
                "switchboard_bad_frames_total",
                "Client frames answered with an error.",
                &self.bad_frames,
            ),
            (
                "switchboard_messages_published_total",
                "Messages published to channels by this node.",
                &self.messages_published,
            ),
            (
                "switchboard_direct_messages_sent_total",
                "Direct messages sent to users by this node.",
                &self.direct_sent,
            ),
            (
                "switchboard_broker_messages_received_total",
                "Messages received from the broker for local delivery.",
                &self.broker_messages_in,
            ),
            (
                "switchboard_deliveries_total",
                "Frames queued to local connections.",
                &self.deliveries,
            ),
            (
                "switchboard_slow_consumer_closes_total",
                "Connections closed because their queue was full.",
                &self.slow_consumer_closes,
            ),
            (
                "switchboard_heartbeat_timeouts_total",
                "Connections closed for missing heartbeats.",
                &self.heartbeat_timeouts,
            ),
            (
                "switchboard_broker_errors_total",
                "Broker operations that failed or timed out.",
                &self.broker_errors,
            ),
            (
                "switchboard_redis_reconnects_total",
                "Times the Redis subscriber connection was re-established.",
                &self.redis_reconnects,
            ),
            (
                "switchboard_gap_repairs_total",
                "Messages read back from channel history to fill a gap in delivery.",
                &self.gap_repairs,
            ),
            (
                "switchboard_resyncs_total",
                "resync frames sent to channels (gap history could not fill, or epoch change).",
                &self.resyncs,
            ),
            (
                "switchboard_recoveries_total",
                "Subscriptions that resumed from a client's position (recovered: true).",
                &self.recoveries,
            ),
            (
                "switchboard_presence_operations_total",
                "Presence and registry reads and writes.",
                &self.presence_ops,
            ),
            (
                "switchboard_presence_errors_total",
                "Presence, registry and heartbeat operations that failed.",
                &self.presence_errors,
            ),
            (
                "switchboard_rate_limited_frames_total",
                "Client frames refused for exceeding max_messages_per_second.",
                &self.rate_limited,
            ),
            (
                "switchboard_handshakes_refused_total",
                "Upgrades answered 503 because max_pending_handshakes were in progress.",
                &self.handshakes_refused,
            ),
            (
                "switchboard_api_requests_total",
                "Server API requests.",
                &self.api_requests,
            ),
        ];
        for (name, help, c) in counters {
            line(name, "counter", help, c.load(Relaxed));
        }
        line(
            "switchboard_connections",
            "gauge",
            "Open WebSocket connections.",
            g.connections as u64,
        );
        line(
            "switchboard_subscriptions",
            "gauge",
            "Channel subscriptions of local connections.",
            g.subscriptions as u64,
        );
        line(
            "switchboard_channels",
            "gauge",
            "Channels with at least one local subscriber.",
            g.channels as u64,
        );
        line(
            "switchboard_broker_up",
            "gauge",
            "1 while the broker is reachable.",
            g.broker_up as u64,
        );
        line(
            "switchboard_draining",
            "gauge",
            "1 while the node is shutting down.",
            g.draining as u64,
        );
        self.publish_duration.render(
            &mut out,
            "switchboard_broker_publish_duration_seconds",
            "Time for the broker to accept a publish.",
            node,
        );
        out
    }
}
