//! What every scenario shares: the target nodes, source addresses, local
//! pids to watch, metrics endpoints, and helpers to open many connections
//! and to sample the run once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::client::{self, Sources, Ws};
use crate::sampler;
use crate::stats::{self, summarize};
use crate::summary::{ConnectFigures, NodeMemory, ProcessCpu, RedisCpu};

pub struct Env {
    /// WebSocket URLs of the nodes; connections are spread round-robin.
    pub nodes: Vec<String>,
    pub sources: Arc<Sources>,
    /// Local node processes whose memory is sampled.
    pub pids: Vec<u32>,
    /// Local Redis processes whose CPU is measured, summed: one
    /// `redis-server`, or every node of a Redis Cluster.
    pub redis_pids: Vec<u32>,
    /// `/metrics` URLs scraped before and after the run.
    pub metrics_urls: Vec<String>,
    /// Handshakes in flight at once while setting up.
    pub connect_concurrency: usize,
    /// Print a line a second.
    pub progress: bool,
    /// The command line, recorded in the summary.
    pub command: String,
}

impl Env {
    pub fn node_url(&self, i: usize, user: &str) -> String {
        client::with_query(&self.nodes[i % self.nodes.len()], "user", user)
    }

    pub fn log(&self, line: impl AsRef<str>) {
        if self.progress {
            eprintln!("{}", line.as_ref());
        }
    }

    /// Open `count` connections named by `user(i)`, at most
    /// `connect_concurrency` handshakes at a time. Failed ones are counted,
    /// not retried. Each comes with the node id of its `welcome` (its URL
    /// if the welcome names none).
    pub async fn connect_many(
        &self,
        count: usize,
        user: impl Fn(usize) -> String,
    ) -> (Vec<(usize, Ws, String)>, ConnectFigures, Vec<String>) {
        let permits = Arc::new(Semaphore::new(self.connect_concurrency.max(1)));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            let url = self.node_url(i, &user(i));
            let sources = self.sources.clone();
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let result = client::connect(&url, &sources).await;
                drop(permit);
                let result = result.map(|(ws, welcome)| (ws, client::node_of(&welcome, &url)));
                (i, result, t.elapsed())
            }));
        }
        let mut handshake = stats::new_histogram();
        let mut out = Vec::with_capacity(count);
        let mut errors = Vec::new();
        let mut failed = 0;
        for task in tasks {
            let (i, result, took) = task.await.expect("connect task");
            match result {
                Ok((ws, node)) => {
                    stats::record(&mut handshake, took.as_micros() as u64);
                    out.push((i, ws, node));
                }
                Err(e) => {
                    failed += 1;
                    if errors.len() < 10 {
                        errors.push(format!("connect: {e:#}"));
                    }
                }
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        let figures = ConnectFigures {
            attempted: count as u64,
            established: out.len() as u64,
            errors: failed,
            retried: 0,
            rate_per_s: out.len() as f64 / secs,
            handshake: (!handshake.is_empty()).then(|| summarize(&handshake)),
            memory_per_connection_bytes: None,
        };
        (out, figures, errors)
    }

    pub fn rss_total_kib(&self) -> u64 {
        self.pids.iter().filter_map(|p| sampler::rss_kib(*p)).sum()
    }
}

/// Latency histograms split in shards so that thousands of receiving tasks
/// rarely contend on one lock; `interval` is reset every second for the
/// per-second p99.
pub struct Latencies {
    total: Vec<Mutex<Histogram<u64>>>,
    interval: Vec<Mutex<Histogram<u64>>>,
}

const SHARDS: usize = 32;

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            total: (0..SHARDS)
                .map(|_| Mutex::new(stats::new_histogram()))
                .collect(),
            interval: (0..SHARDS)
                .map(|_| Mutex::new(stats::new_histogram()))
                .collect(),
        }
    }
}

impl Latencies {
    pub fn record(&self, shard: usize, micros: u64) {
        stats::record(&mut self.total[shard % SHARDS].lock().unwrap(), micros);
        stats::record(&mut self.interval[shard % SHARDS].lock().unwrap(), micros);
    }

    fn merge(shards: &[Mutex<Histogram<u64>>], reset: bool) -> Histogram<u64> {
        let mut all = stats::new_histogram();
        for shard in shards {
            let mut h = shard.lock().unwrap();
            all.add(&*h).expect("same bounds");
            if reset {
                h.reset();
            }
        }
        all
    }

    pub fn total(&self) -> Histogram<u64> {
        Self::merge(&self.total, false)
    }

    /// The histogram since the last call.
    pub fn take_interval(&self) -> Histogram<u64> {
        Self::merge(&self.interval, true)
    }
}

/// Counters the per-second sampler turns into a time series.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub connections: AtomicU64,
}

/// Sample counters, latency and node memory every second until stopped;
/// node and Redis CPU from start to stop.
pub struct Sampler {
    pub samples: Arc<Mutex<Vec<crate::summary::Sample>>>,
    pub memory: Arc<Mutex<Vec<NodeMemory>>>,
    /// Each Redis process's CPU seconds at the start (unreadable pids left out).
    redis_start: Vec<(u32, f64)>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(
        env: &Env,
        counters: Arc<Counters>,
        latencies: Option<Arc<Latencies>>,
        t0: Instant,
    ) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let memory = Arc::new(Mutex::new(
            env.pids
                .iter()
                .map(|&pid| NodeMemory {
                    pid,
                    rss_kib: Vec::new(),
                    // The start value for now; `stop` turns it into the difference.
                    cpu_s: sampler::cpu_seconds(pid).unwrap_or(0.0),
                })
                .collect::<Vec<_>>(),
        ));
        let redis_start = env
            .redis_pids
            .iter()
            .filter_map(|&pid| Some((pid, sampler::cpu_seconds(pid)?)))
            .collect();
        let (s, m, progress) = (samples.clone(), memory.clone(), env.progress);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            let (mut last_sent, mut last_delivered) = (0, 0);
            loop {
                tick.tick().await;
                let t = t0.elapsed().as_secs_f64();
                let sent = counters.sent.load(Ordering::Relaxed);
                let delivered = counters.delivered.load(Ordering::Relaxed);
                let p99_ms = latencies
                    .as_ref()
                    .map(|l| l.take_interval())
                    .filter(|h| !h.is_empty())
                    .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
                let sample = crate::summary::Sample {
                    t,
                    sent: sent - last_sent,
                    delivered: delivered - last_delivered,
                    connections: counters.connections.load(Ordering::Relaxed),
                    p99_ms,
                };
                let mut rss_line = String::new();
                for node in m.lock().unwrap().iter_mut() {
                    if let Some(kib) = sampler::rss_kib(node.pid) {
                        node.rss_kib.push((t, kib));
                        rss_line.push_str(&format!(" rss[{}]={}MiB", node.pid, kib / 1024));
                    }
                }
                if progress {
                    eprintln!(
                        "t={t:>5.1}s sent/s={:>7} delivered/s={:>8} conns={:>6} p99={:>7.2}ms{rss_line}",
                        sample.sent, sample.delivered, sample.connections, sample.p99_ms
                    );
                }
                (last_sent, last_delivered) = (sent, delivered);
                s.lock().unwrap().push(sample);
            }
        });
        Sampler {
            samples,
            memory,
            redis_start,
            task,
        }
    }

    /// The samples, node memory and CPU, and Redis CPU (if there were
    /// Redis pids), summed over its processes.
    pub fn stop(
        self,
    ) -> (
        Vec<crate::summary::Sample>,
        Vec<NodeMemory>,
        Option<RedisCpu>,
    ) {
        self.task.abort();
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        let mut memory = std::mem::take(&mut *self.memory.lock().unwrap());
        for node in &mut memory {
            node.cpu_s = sampler::cpu_seconds(node.pid).map_or(0.0, |now| now - node.cpu_s);
        }
        let processes: Vec<ProcessCpu> = self
            .redis_start
            .iter()
            .map(|&(pid, start)| ProcessCpu {
                pid,
                cpu_s: sampler::cpu_seconds(pid).map_or(0.0, |now| now - start),
            })
            .collect();
        let redis = (!processes.is_empty()).then(|| RedisCpu {
            cpu_s: processes.iter().map(|p| p.cpu_s).sum(),
            processes,
        });
        (samples, memory, redis)
    }
}

/// The parts of a server frame the scenarios read: its type, the stamp
/// the harness put in `data`, `ok` of replies, and the stream positions
/// `--recover` follows.
#[derive(serde::Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(default, borrow)]
    pub data: Option<Stamp<'a>>,
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default, borrow)]
    pub channel: Option<&'a str>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default, borrow)]
    pub epoch: Option<&'a str>,
    /// Of a `subscribe {since}` reply.
    #[serde(default)]
    pub recovered: Option<bool>,
}

/// What every test message carries: sender, its sequence number towards
/// this receiver, and the intended send time (µs since the run's start);
/// traced messages (`--trace-fraction`) also their trace id.
#[derive(serde::Deserialize)]
pub struct Stamp<'a> {
    pub p: u32,
    pub s: u64,
    pub t: u64,
    #[serde(default, borrow)]
    pub tr: Option<&'a str>,
}

/// Wall-clock milliseconds since the Unix epoch (the run's start stamp).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since `t0`.
pub fn micros_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}
