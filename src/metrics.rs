//! Node metrics, served as OpenMetrics text on `GET /metrics` through the
//! Prometheus project's Rust client (`prometheus-client`).
//!
//! Counters and the publish-latency histogram live in [`Metrics`] (an
//! increment is one relaxed atomic add on the hot path). Everything that is
//! state rather than a count — connections, subscriptions per namespace,
//! broker health, draining, and the standard `process_*` metrics (CPU,
//! resident memory, open file descriptors) — is read when scraped, by the
//! collector in `render`. Every sample carries the node's id as `node`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::metrics::counter::Counter;

/// Upper bounds of the publish-latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

#[derive(Debug)]
pub struct Metrics {
    pub connections_opened: Counter,
    pub connections_closed: Counter,
    pub frames_in: Counter,
    pub bad_frames: Counter,
    pub messages_published: Counter,
    pub direct_sent: Counter,
    pub broker_messages_in: Counter,
    pub deliveries: Counter,
    pub slow_consumer_closes: Counter,
    pub heartbeat_timeouts: Counter,
    pub broker_errors: Counter,
    pub redis_reconnects: Counter,
    /// Messages a node read back from a channel's history to fill a gap.
    pub gap_repairs: Counter,
    /// `resync` frames sent: a gap the history could not fill, or an epoch change.
    pub resyncs: Counter,
    /// Subscriptions that resumed from a client's position (`recovered: true`).
    pub recoveries: Counter,
    pub presence_ops: Counter,
    pub presence_errors: Counter,
    pub rate_limited: Counter,
    pub handshakes_refused: Counter,
    pub api_requests: Counter,
    /// Time for the broker to accept a publish (Redis: the Lua round trip).
    pub publish_duration: PublishDuration,
}

/// The counters' field, name (without `_total`, which the encoder adds)
/// and help, in the order they are served.
macro_rules! counters {
    ($m:expr) => {
        [
            (
                &$m.connections_opened,
                "switchboard_connections_opened",
                "WebSocket connections accepted",
            ),
            (
                &$m.connections_closed,
                "switchboard_connections_closed",
                "WebSocket connections ended",
            ),
            (
                &$m.frames_in,
                "switchboard_frames_received",
                "Client frames received",
            ),
            (
                &$m.bad_frames,
                "switchboard_bad_frames",
                "Client frames answered with an error",
            ),
            (
                &$m.messages_published,
                "switchboard_messages_published",
                "Messages published to channels by this node",
            ),
            (
                &$m.direct_sent,
                "switchboard_direct_messages_sent",
                "Direct messages sent to users by this node",
            ),
            (
                &$m.broker_messages_in,
                "switchboard_broker_messages_received",
                "Messages received from the broker for local delivery",
            ),
            (
                &$m.deliveries,
                "switchboard_deliveries",
                "Frames queued to local connections",
            ),
            (
                &$m.slow_consumer_closes,
                "switchboard_slow_consumer_closes",
                "Connections closed because their queue was full",
            ),
            (
                &$m.heartbeat_timeouts,
                "switchboard_heartbeat_timeouts",
                "Connections closed for missing heartbeats",
            ),
            (
                &$m.broker_errors,
                "switchboard_broker_errors",
                "Broker operations that failed or timed out",
            ),
            (
                &$m.redis_reconnects,
                "switchboard_redis_reconnects",
                "Times the Redis subscriber connection was re-established",
            ),
            (
                &$m.gap_repairs,
                "switchboard_gap_repairs",
                "Messages read back from channel history to fill a gap in delivery",
            ),
            (
                &$m.resyncs,
                "switchboard_resyncs",
                "resync frames sent to channels (gap history could not fill, or epoch change)",
            ),
            (
                &$m.recoveries,
                "switchboard_recoveries",
                "Subscriptions that resumed from a client's position (recovered: true)",
            ),
            (
                &$m.presence_ops,
                "switchboard_presence_operations",
                "Presence and registry reads and writes",
            ),
            (
                &$m.presence_errors,
                "switchboard_presence_errors",
                "Presence, registry and heartbeat operations that failed",
            ),
            (
                &$m.rate_limited,
                "switchboard_rate_limited_frames",
                "Client frames refused for exceeding max_messages_per_second",
            ),
            (
                &$m.handshakes_refused,
                "switchboard_handshakes_refused",
                "Upgrades answered 503 because max_pending_handshakes were in progress",
            ),
            (
                &$m.api_requests,
                "switchboard_api_requests",
                "Server API requests",
            ),
        ]
    };
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_opened: Counter::default(),
            connections_closed: Counter::default(),
            frames_in: Counter::default(),
            bad_frames: Counter::default(),
            messages_published: Counter::default(),
            direct_sent: Counter::default(),
            broker_messages_in: Counter::default(),
            deliveries: Counter::default(),
            slow_consumer_closes: Counter::default(),
            heartbeat_timeouts: Counter::default(),
            broker_errors: Counter::default(),
            redis_reconnects: Counter::default(),
            gap_repairs: Counter::default(),
            resyncs: Counter::default(),
            recoveries: Counter::default(),
            presence_ops: Counter::default(),
            presence_errors: Counter::default(),
            rate_limited: Counter::default(),
            handshakes_refused: Counter::default(),
            api_requests: Counter::default(),
            publish_duration: PublishDuration(Histogram::new(BUCKETS)),
        }
    }
}

/// The publish-latency histogram (seconds).
#[derive(Debug)]
pub struct PublishDuration(Histogram);

impl PublishDuration {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// State read when scraped.
#[derive(Debug, Default)]
pub struct Gauges {
    pub connections: usize,
    pub subscriptions: usize,
    pub channels: usize,
    pub broker_up: bool,
    pub draining: bool,
    /// Per namespace (`""`: the default one): (subscriptions, channels).
    pub namespaces: BTreeMap<String, (usize, usize)>,
    /// When the node started, in ms since the Unix epoch.
    pub started_at_ms: u64,
}

pub fn inc(counter: &Counter) {
    counter.inc();
}

pub fn add(counter: &Counter, n: u64) {
    counter.inc_by(n);
}

impl Metrics {
    /// The OpenMetrics text of every metric, labelled with `node`.
    pub fn render(&self, node: &str, gauges: Gauges) -> String {
        let labels = [(Cow::Borrowed("node"), Cow::Owned(node.to_owned()))];
        let mut registry = Registry::with_labels(labels.into_iter());
        for (counter, name, help) in counters!(self) {
            registry.register(name, help, counter.clone());
        }
        registry.register_with_unit(
            "switchboard_broker_publish_duration",
            "Time for the broker to accept a publish",
            Unit::Seconds,
            self.publish_duration.0.clone(),
        );
        registry.register_collector(Box::new(State(gauges)));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The scraped state, and the process's own figures from `/proc`.
#[derive(Debug)]
struct State(Gauges);

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = &self.0;
        let e = &mut encoder;
        gauge(
            e,
            "switchboard_connections",
            "Open WebSocket connections",
            g.connections as i64,
        )?;
        gauge(
            e,
            "switchboard_subscriptions",
            "Channel subscriptions of local connections",
            g.subscriptions as i64,
        )?;
        gauge(
            e,
            "switchboard_channels",
            "Channels with at least one local subscriber",
            g.channels as i64,
        )?;
        gauge(
            e,
            "switchboard_broker_up",
            "1 while the broker is reachable",
            i64::from(g.broker_up),
        )?;
        gauge(
            e,
            "switchboard_draining",
            "1 while the node is shutting down",
            i64::from(g.draining),
        )?;
        for (name, help, pick) in [
            (
                "switchboard_namespace_subscriptions",
                "Channel subscriptions of local connections, per namespace (\"\" is the default one)",
                0,
            ),
            (
                "switchboard_namespace_channels",
                "Channels with local subscribers, per namespace",
                1,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
            for (ns, counts) in &g.namespaces {
                let value = if pick == 0 { counts.0 } else { counts.1 };
                let label = [("namespace", ns.as_str())];
                ConstGauge::new(value as i64).encode(family.encode_family(&label)?)?;
            }
        }
        let p = process::read();
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.resident_bytes as i64,
        )?;
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds as i64,
        )?;
        gauge(
            e,
            "process_max_fds",
            "Maximum number of open file descriptors",
            p.max_fds as i64,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            g.started_at_ms as f64 / 1000.0,
        )
    }
}

/// The standard process metrics, from `/proc/self` (zeros elsewhere).
mod process {
    #[derive(Debug, Default)]
    pub struct Figures {
        pub cpu_seconds: f64,
        pub resident_bytes: u64,
        pub open_fds: u64,
        pub max_fds: u64,
    }

    /// Clock ticks per second of `/proc/self/stat`'s times (USER_HZ,
    /// 100 on every Linux architecture Switchboard builds for).
    const TICKS: f64 = 100.0;
    /// Bytes per page of `/proc/self/statm`.
    const PAGE: u64 = 4096;

    pub fn read() -> Figures {
        let mut f = Figures::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces): utime
            // and stime are the 12th and 13th after the closing parenthesis.
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            f.cpu_seconds = (ticks(11) + ticks(12)) / TICKS;
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let pages = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok());
            f.resident_bytes = pages.unwrap_or(0) * PAGE;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            f.open_fds = dir.count() as u64;
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            f.max_fds = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        f
    }
}
