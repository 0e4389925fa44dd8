//! A local cluster for benchmarks: one `redis-server` (or, with
//! `--redis-shards S`, a Redis Cluster of S masters) and N `switchboard`
//! nodes on free loopback ports, torn down when dropped. Used by the
//! `cluster` subcommand and by `--cluster N` on every scenario, so a 2-node
//! benchmark is one command. The processes are the tests' fixtures
//! (`switchboard_fixtures`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use switchboard_fixtures::{poll_until, NodeProcess, RedisCluster, RedisServer};

pub struct LocalCluster {
    // Nodes first: they are dropped (killed) before Redis.
    _nodes: Vec<NodeProcess>,
    /// One of these two: `redis_shards` 0, or 1 and more.
    _redis: Option<RedisServer>,
    _redis_cluster: Option<RedisCluster>,
    /// `redis://…`, or `redis+cluster://…` naming every master.
    pub redis_url: String,
    /// The Redis processes: the one server, or every master.
    pub redis_pids: Vec<u32>,
    /// `ws://127.0.0.1:PORT/ws` per node.
    pub ws_urls: Vec<String>,
    /// `http://127.0.0.1:PORT/metrics` per node.
    pub metrics_urls: Vec<String>,
    pub pids: Vec<u32>,
}

/// The `switchboard` binary next to this one (same cargo profile), else on PATH.
pub fn default_node_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("switchboard")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("switchboard"))
}

async fn ready(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/readyz");
    crate::sampler::http_get(&url)
        .await
        .is_ok_and(|body| body.starts_with("ready"))
}

impl LocalCluster {
    /// Start Redis and `nodes` nodes (each with one worker, so two nodes
    /// share a 2-core machine fairly), passing `node_args` to every node.
    /// Redis is one `redis-server` if `redis_shards` is 0, else a Redis
    /// Cluster of that many masters without replicas (a benchmark measures
    /// sharding, not failover), which the nodes reach by a
    /// `redis+cluster://` URL.
    pub async fn start(
        nodes: usize,
        redis_shards: usize,
        binary: &Path,
        node_args: &[String],
    ) -> anyhow::Result<LocalCluster> {
        // Nodes start fine without Redis, but would log an outage first.
        let (redis, redis_cluster, redis_url, redis_pids) = if redis_shards == 0 {
            let server = RedisServer::try_start()
                .await
                .context("apt-get install redis-server")?;
            let (url, pids) = (server.url(), server.pid().into_iter().collect());
            (Some(server), None, url, pids)
        } else {
            let cluster = RedisCluster::try_start(redis_shards, 0)
                .await
                .with_context(|| {
                    format!("start a Redis Cluster of {redis_shards} masters (apt-get install redis-server)")
                })?;
            let (url, pids) = (cluster.url(), cluster.pids());
            (None, Some(cluster), url, pids)
        };
        let mut started = Vec::new();
        for i in 0..nodes {
            let node = NodeProcess::spawn(binary, |cmd| {
                cmd.args(["--redis-url", &redis_url])
                    .args(["--node-id", &format!("bench-{i}")])
                    .args(["--workers", "1"])
                    .args(["--max-connections", "200000", "--backlog", "8192"])
                    .args(node_args)
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                    )
                    // The harness's publishers send far more than a person's
                    // client would; a --node-arg flag still overrides these.
                    .env("SWITCHBOARD_MAX_MESSAGES_PER_SECOND", "1000000")
                    .env("SWITCHBOARD_MAX_CONNECTIONS_PER_USER", "1000000")
                    .stderr(Stdio::inherit());
                if redis_shards > 0 {
                    // A cluster URL makes a node wait for a replica of
                    // every publish by default; these shards have none.
                    cmd.env("SWITCHBOARD_REDIS_WAIT_REPLICAS", "0");
                }
            })
            .with_context(|| format!("start {} (cargo build --release first)", binary.display()))?;
            started.push(node);
        }
        for (i, node) in started.iter().enumerate() {
            if !poll_until(Duration::from_secs(20), || ready(node.port())).await {
                bail!("node {i} on port {} did not become ready", node.port());
            }
        }
        Ok(LocalCluster {
            redis_url,
            redis_pids,
            ws_urls: started.iter().map(|n| n.ws_url("/ws")).collect(),
            metrics_urls: started
                .iter()
                .map(|n| format!("http://127.0.0.1:{}/metrics", n.port()))
                .collect(),
            pids: started.iter().map(NodeProcess::pid).collect(),
            _nodes: started,
            _redis: redis,
            _redis_cluster: redis_cluster,
        })
    }
}
