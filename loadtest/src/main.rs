//! `switchboard-loadtest`: run a scenario against nodes (or a local cluster
//! it starts), print progress, write summary.json and report.html.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use switchboard_loadtest::churn::ChurnParams;
use switchboard_loadtest::client::Sources;
use switchboard_loadtest::cluster::{default_node_binary, LocalCluster};
use switchboard_loadtest::connect::ConnectParams;
use switchboard_loadtest::direct::DirectParams;
use switchboard_loadtest::env::Env;
use switchboard_loadtest::fanout::FanoutParams;
use switchboard_loadtest::{churn, connect, direct, fanout, headline, write_outputs};

#[derive(Parser)]
#[command(
    name = "switchboard-loadtest",
    about = "Load-test harness for Switchboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Node WebSocket URLs, comma-separated (ws://host:port/ws).
    #[arg(long, value_delimiter = ',', required_unless_present = "cluster")]
    nodes: Vec<String>,
    /// Start redis-server and this many local nodes for the run instead.
    #[arg(long, conflicts_with = "nodes")]
    cluster: Option<usize>,
    /// Extra argument for every node started by --cluster (repeatable).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// The switchboard binary for --cluster (default: next to this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Local node pids whose RSS is sampled (automatic with --cluster).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// /metrics URLs to scrape before and after (automatic with --cluster).
    #[arg(long = "metrics-url", value_delimiter = ',')]
    metrics_urls: Vec<String>,
    /// Output directory for summary.json and report.html.
    #[arg(long, default_value = "loadtest-out")]
    out: PathBuf,
    /// Loopback source addresses to spread connections over (0 = automatic).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
    /// Handshakes in flight at once during set-up.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Exit with status 1 if any delivery was lost or duplicated, or any request failed.
    #[arg(long)]
    fail_on_loss: bool,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Cmd {
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
    },
    /// Start redis-server and N nodes, print their URLs, run until Ctrl-C.
    Cluster {
        #[arg(long, default_value_t = 2)]
        nodes: usize,
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

/// Resolve the targets, starting a local cluster if asked. The cluster
/// lives as long as the returned guard.
async fn environment(
    common: &Common,
    connections: usize,
) -> anyhow::Result<(Env, Option<LocalCluster>)> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (nodes, pids, metrics_urls, cluster) = match common.cluster {
        Some(n) => {
            let bin = common.bin.clone().unwrap_or_else(default_node_binary);
            let cluster = LocalCluster::start(n, &bin, &common.node_args).await?;
            eprintln!(
                "started redis {} and nodes {:?}",
                cluster.redis_url, cluster.ws_urls
            );
            (
                cluster.ws_urls.clone(),
                cluster.pids.clone(),
                cluster.metrics_urls.clone(),
                Some(cluster),
            )
        }
        None => (
            common.nodes.clone(),
            common.pids.clone(),
            common.metrics_urls.clone(),
            None,
        ),
    };
    let sources = Sources::for_targets(&nodes, connections, common.source_ips);
    let env = Env {
        nodes,
        sources: Arc::new(sources),
        pids,
        metrics_urls,
        connect_concurrency: common.connect_concurrency,
        progress: !common.quiet,
        command,
    };
    Ok((env, cluster))
}

fn finish(common: &Common, summary: &switchboard_loadtest::summary::Summary) -> anyhow::Result<()> {
    write_outputs(&common.out, summary)?;
    print!("{}", headline(summary));
    println!(
        "  wrote {}/summary.json and report.html",
        common.out.display()
    );
    let lossy = summary
        .delivery
        .as_ref()
        .is_some_and(|d| d.lost > 0 || d.duplicates > 0)
        || summary.publish_errors > 0
        || summary.connect.as_ref().is_some_and(|c| c.errors > 0);
    if common.fail_on_loss && lossy {
        eprintln!("failing: loss, duplicates or errors (--fail-on-loss)");
        std::process::exit(1);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Fanout {
            common,
            connections,
            channels,
            publishers,
            rate,
            duration,
            payload,
            drain,
            recover,
            reconnect_every,
            reconnect_fraction,
            reconnect_delay,
        } => {
            let (env, _cluster) = environment(&common, connections + publishers).await?;
            let params = FanoutParams {
                connections,
                channels,
                publishers,
                rate,
                duration_s: duration,
                payload,
                drain_s: drain,
                recover,
                reconnect_every_s: reconnect_every,
                reconnect_fraction,
                reconnect_delay_s: reconnect_delay,
            };
            finish(&common, &fanout::run(&env, &params).await?)
        }
        Cmd::Connect {
            common,
            connections,
            rate,
            hold,
            workers,
            retry_refused,
        } => {
            let (env, _cluster) = environment(&common, connections).await?;
            let params = ConnectParams {
                connections,
                rate,
                hold_s: hold,
                workers,
                retry_refused,
            };
            finish(&common, &connect::run(&env, &params).await?)
        }
        Cmd::Direct {
            common,
            users,
            rate,
            duration,
            drain,
        } => {
            let (env, _cluster) = environment(&common, users).await?;
            let params = DirectParams {
                users,
                rate,
                duration_s: duration,
                drain_s: drain,
            };
            finish(&common, &direct::run(&env, &params).await?)
        }
        Cmd::Churn {
            common,
            rate,
            concurrency,
            channels,
            duration,
            recover,
            publishers,
            publish_rate,
            receive,
        } => {
            let (env, _cluster) = environment(&common, concurrency + publishers).await?;
            let params = ChurnParams {
                rate,
                concurrency,
                channels,
                duration_s: duration,
                recover,
                publishers,
                publish_rate,
                receive_s: receive,
            };
            finish(&common, &churn::run(&env, &params).await?)
        }
        Cmd::Cluster {
            nodes,
            node_args,
            bin,
        } => {
            let bin = bin.unwrap_or_else(default_node_binary);
            let cluster = LocalCluster::start(nodes, &bin, &node_args).await?;
            println!("redis: {}", cluster.redis_url);
            for ((ws, metrics), pid) in cluster
                .ws_urls
                .iter()
                .zip(&cluster.metrics_urls)
                .zip(&cluster.pids)
            {
                println!("node pid {pid}: {ws}  ({metrics})");
            }
            println!(
                "--nodes {} --pids {}",
                cluster.ws_urls.join(","),
                cluster
                    .pids
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            println!("Ctrl-C stops the cluster.");
            tokio::signal::ctrl_c().await?;
            drop(cluster);
            Ok(())
        }
        Cmd::OtlpSink { port } => switchboard_loadtest::sink::run(port).await,
        Cmd::ConnectWorker {
            nodes,
            connections,
            first,
            rate,
            source_ip_offset,
            source_ips,
            retry_refused,
        } => {
            connect::worker(
                nodes,
                Sources::loopback(source_ip_offset, source_ips),
                connections,
                first,
                rate,
                retry_refused,
            )
            .await
        }
    }
}
