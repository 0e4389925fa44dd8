//! The binary's command line: the clap definitions of every subcommand and
//! its flags (the doc comments are the `--help` text). Kept apart from the
//! dispatch in `main.rs`; a module of the binary, not of the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchboard-loadtest",
    about = "Load-test harness for Switchboard"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Args, Clone)]
pub(crate) struct Common {
    /// Node WebSocket URLs, comma-separated (ws://host:port/ws).
    #[arg(long, value_delimiter = ',', required_unless_present = "cluster")]
    pub(crate) nodes: Vec<String>,
    /// Start redis-server and this many local nodes for the run instead.
    #[arg(long, conflicts_with = "nodes")]
    pub(crate) cluster: Option<usize>,
    /// With --cluster: Redis as a Redis Cluster of this many masters (no
    /// replicas) instead of one redis-server; the nodes get a
    /// redis+cluster:// URL naming every master, and Redis CPU is summed
    /// over them (0: one redis-server).
    #[arg(
        long,
        default_value_t = 0,
        requires = "cluster",
        conflicts_with = "nodes"
    )]
    pub(crate) redis_shards: usize,
    /// Extra argument for every node started by --cluster (repeatable).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub(crate) node_args: Vec<String>,
    /// The switchboard binary for --cluster (default: next to this one).
    #[arg(long)]
    pub(crate) bin: Option<PathBuf>,
    /// Local node pids whose RSS is sampled (automatic with --cluster).
    #[arg(long, value_delimiter = ',')]
    pub(crate) pids: Vec<u32>,
    /// Local Redis pids whose CPU is measured, summed (automatic with --cluster).
    #[arg(long, value_delimiter = ',')]
    pub(crate) redis_pids: Vec<u32>,
    /// /metrics URLs to scrape before and after (automatic with --cluster).
    #[arg(long = "metrics-url", value_delimiter = ',')]
    pub(crate) metrics_urls: Vec<String>,
    /// Output directory for summary.json and report.html.
    #[arg(long, default_value = "loadtest-out")]
    pub(crate) out: PathBuf,
    /// Loopback source addresses to spread connections over (0 = automatic).
    #[arg(long, default_value_t = 0)]
    pub(crate) source_ips: usize,
    /// Handshakes in flight at once during set-up.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Exit with status 1 if any delivery was lost or duplicated, or any request failed.
    #[arg(long)]
    pub(crate) fail_on_loss: bool,
    /// No per-second progress lines.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// `--trace-fraction` and what goes with it (fanout; churn with --recover).
#[derive(Args, Clone)]
pub(crate) struct Trace {
    /// Share of publishes (0..=1, at random) that carry a fresh W3C
    /// `traceparent` with the sampled flag, continued by nodes that export
    /// traces; the report lists the slowest traced deliveries (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) trace_fraction: f64,
    /// How many traces to list: those whose slowest delivery was slowest.
    #[arg(long, default_value_t = 10)]
    pub(crate) slowest: usize,
    /// Jaeger UI base URL (http://host:16686): the report links each listed
    /// trace id to URL/trace/<id>.
    #[arg(long)]
    pub(crate) jaeger_url: Option<String>,
}

impl From<Trace> for switchboard_loadtest::traces::TraceParams {
    fn from(t: Trace) -> Self {
        Self {
            fraction: t.trace_fraction,
            slowest: t.slowest,
            jaeger_url: t.jaeger_url,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// C subscribers on K channels, P publishers at an open-loop rate R.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        channels: usize,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Messages per second (deliveries/s = rate × connections / channels).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
        /// Subscribers keep their (offset, epoch) per channel and, when a
        /// connection ends, reconnect (to the next node) and resume with
        /// `subscribe {since}`; loss is counted against acknowledged offsets.
        #[arg(long)]
        recover: bool,
        /// With --recover: drop --reconnect-fraction of the subscribers'
        /// connections every this many seconds while publishing, one at a
        /// time at even intervals (0: never).
        #[arg(long, default_value_t = 0.0, requires = "recover")]
        reconnect_every: f64,
        /// The share of subscribers dropped per --reconnect-every period.
        #[arg(long, default_value_t = 0.1, requires = "recover")]
        reconnect_fraction: f64,
        /// Seconds a dropped subscriber stays away before reconnecting
        /// (what it misses meanwhile is replayed by the recovery).
        #[arg(long, default_value_t = 0.0, requires = "recover")]
        reconnect_delay: f64,
        #[command(flatten)]
        trace: Trace,
    },
    /// Ramp N connections at a rate; handshake latency, connect rate, memory per connection.
    Connect {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// Worker processes (0 = one per 15 000 connections).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Retry an upgrade refused with 503 up to this many times, after
        /// its Retry-After plus up to as much again of jitter, as a
        /// well-behaved client would (0: a refusal is final).
        #[arg(long, default_value_t = 0)]
        retry_refused: u32,
    },
    /// U users sending direct messages to each other across nodes.
    Direct {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
    },
    /// Connect / subscribe / unsubscribe / close cycles.
    Churn {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        #[arg(long, default_value_t = 20)]
        channels: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Each loop is one client on one channel that comes back: it
        /// subscribes with `since` (its last position) once it has one,
        /// receives, unsubscribes and closes, while publishers send on the
        /// channels; loss is counted against acknowledged offsets.
        #[arg(long)]
        recover: bool,
        /// With --recover: publisher connections.
        #[arg(long, default_value_t = 1, requires = "recover")]
        publishers: usize,
        /// With --recover: messages per second, all publishers together.
        #[arg(long, default_value_t = 100.0, requires = "recover")]
        publish_rate: f64,
        /// With --recover: seconds each cycle stays subscribed (and longer
        /// while a recovery's replay is still arriving).
        #[arg(long, default_value_t = 0.2, requires = "recover")]
        receive: f64,
        /// With --recover: tracing of the publishers' messages (see fanout).
        #[command(flatten)]
        trace: Trace,
    },
    /// Start redis-server (or a Redis Cluster) and N nodes, print their URLs, run until Ctrl-C.
    Cluster {
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// A Redis Cluster of this many masters (no replicas) instead of
        /// one redis-server; the nodes get a redis+cluster:// URL (0: one
        /// redis-server).
        #[arg(long, default_value_t = 0)]
        redis_shards: usize,
        #[arg(long = "node-arg", allow_hyphen_values = true)]
        node_args: Vec<String>,
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Accept OTLP/HTTP trace exports and count them (for tracing-overhead runs).
    OtlpSink {
        #[arg(long, default_value_t = 4318)]
        port: u16,
    },
    #[command(hide = true)]
    ConnectWorker {
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 0)]
        source_ip_offset: usize,
        #[arg(long, default_value_t = 0)]
        source_ips: usize,
        #[arg(long, default_value_t = 0)]
        retry_refused: u32,
    },
}
