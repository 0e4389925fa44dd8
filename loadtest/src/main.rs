//! `switchboard-loadtest`: run a scenario against nodes (or a local cluster
//! it starts), print progress, write summary.json and report.html.
//! The command line itself is defined in `cli.rs`; this file turns it
//! into a run.

mod cli;

use std::sync::Arc;

use clap::Parser;
use cli::{Cli, Cmd, Common};
use switchboard_loadtest::churn::ChurnParams;
use switchboard_loadtest::client::Sources;
use switchboard_loadtest::cluster::{default_node_binary, LocalCluster};
use switchboard_loadtest::connect::ConnectParams;
use switchboard_loadtest::direct::DirectParams;
use switchboard_loadtest::env::Env;
use switchboard_loadtest::fanout::FanoutParams;
use switchboard_loadtest::{churn, connect, direct, fanout, headline, write_outputs};

/// Resolve the targets, starting a local cluster if asked. The cluster
/// lives as long as the returned guard.
async fn environment(
    common: &Common,
    connections: usize,
) -> anyhow::Result<(Env, Option<LocalCluster>)> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (nodes, pids, redis_pids, metrics_urls, cluster) = match common.cluster {
        Some(n) => {
            let bin = common.bin.clone().unwrap_or_else(default_node_binary);
            let cluster =
                LocalCluster::start(n, common.redis_shards, &bin, &common.node_args).await?;
            eprintln!(
                "started redis {} and nodes {:?}",
                cluster.redis_url, cluster.ws_urls
            );
            (
                cluster.ws_urls.clone(),
                cluster.pids.clone(),
                cluster.redis_pids.clone(),
                cluster.metrics_urls.clone(),
                Some(cluster),
            )
        }
        None => (
            common.nodes.clone(),
            common.pids.clone(),
            common.redis_pids.clone(),
            common.metrics_urls.clone(),
            None,
        ),
    };
    let sources = Sources::for_targets(&nodes, connections, common.source_ips);
    let env = Env {
        nodes,
        sources: Arc::new(sources),
        pids,
        redis_pids,
        metrics_urls,
        connect_concurrency: common.connect_concurrency,
        progress: !common.quiet,
        command,
    };
    Ok((env, cluster))
}

/// Pids as a `--pids` value: comma-separated.
fn join(pids: &[u32]) -> String {
    pids.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
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
            trace,
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
                trace: trace.into(),
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
            trace,
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
                trace: trace.into(),
            };
            finish(&common, &churn::run(&env, &params).await?)
        }
        Cmd::Cluster {
            nodes,
            redis_shards,
            node_args,
            bin,
        } => {
            let bin = bin.unwrap_or_else(default_node_binary);
            let cluster = LocalCluster::start(nodes, redis_shards, &bin, &node_args).await?;
            println!(
                "redis: {} (pids {})",
                cluster.redis_url,
                join(&cluster.redis_pids)
            );
            for ((ws, metrics), pid) in cluster
                .ws_urls
                .iter()
                .zip(&cluster.metrics_urls)
                .zip(&cluster.pids)
            {
                println!("node pid {pid}: {ws}  ({metrics})");
            }
            println!(
                "--nodes {} --pids {} --redis-pids {}",
                cluster.ws_urls.join(","),
                join(&cluster.pids),
                join(&cluster.redis_pids)
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
