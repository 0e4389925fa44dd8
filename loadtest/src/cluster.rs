//! A local cluster for benchmarks: one `redis-server` and N `switchboard`
//! nodes on free loopback ports, torn down when dropped. Used by the
//! `cluster` subcommand and by `--cluster N` on every scenario, so a 2-node
//! benchmark is one command.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct LocalCluster {
    redis: Child,
    nodes: Vec<Child>,
    pub redis_url: String,
    /// `ws://127.0.0.1:PORT/ws` per node.
    pub ws_urls: Vec<String>,
    /// `http://127.0.0.1:PORT/metrics` per node.
    pub metrics_urls: Vec<String>,
    pub pids: Vec<u32>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `switchboard` binary next to this one (same cargo profile), else on PATH.
pub fn default_node_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("switchboard")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("switchboard"))
}

async fn wait_ready(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("http://127.0.0.1:{port}/readyz");
        if let Ok(body) = crate::sampler::http_get(&url).await {
            if body.starts_with("ready") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{what} on port {port} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl LocalCluster {
    /// Start Redis and `nodes` nodes (each with one worker, so two nodes
    /// share a 2-core machine fairly), passing `node_args` to every node.
    pub async fn start(
        nodes: usize,
        binary: &Path,
        node_args: &[String],
    ) -> anyhow::Result<LocalCluster> {
        let redis_port = free_port()?;
        let redis = Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server (apt-get install redis-server)")?;
        let mut cluster = LocalCluster {
            redis,
            nodes: Vec::new(),
            redis_url: format!("redis://127.0.0.1:{redis_port}"),
            ws_urls: Vec::new(),
            metrics_urls: Vec::new(),
            pids: Vec::new(),
        };
        // Nodes start fine without Redis, but would log an outage first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", redis_port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on port {redis_port}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut ports = Vec::new();
        for i in 0..nodes {
            let port = free_port()?;
            let child = Command::new(binary)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--redis-url", &cluster.redis_url])
                .args(["--node-id", &format!("bench-{i}")])
                .args([
                    "--workers",
                    "1",
                    "--max-connections",
                    "200000",
                    "--backlog",
                    "8192",
                ])
                .args(node_args)
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                // The harness's publishers send far more than a person's
                // client would; a --node-arg flag still overrides these.
                .env("SWITCHBOARD_MAX_MESSAGES_PER_SECOND", "1000000")
                .env("SWITCHBOARD_MAX_CONNECTIONS_PER_USER", "1000000")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!("start {} (cargo build --release first)", binary.display())
                })?;
            cluster.pids.push(child.id());
            cluster.nodes.push(child);
            cluster.ws_urls.push(format!("ws://127.0.0.1:{port}/ws"));
            cluster
                .metrics_urls
                .push(format!("http://127.0.0.1:{port}/metrics"));
            ports.push(port);
        }
        for (i, port) in ports.iter().enumerate() {
            wait_ready(*port, &format!("node {i}")).await?;
        }
        Ok(cluster)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self
            .nodes
            .iter_mut()
            .chain(std::iter::once(&mut self.redis))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
