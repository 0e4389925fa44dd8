//! `connect`: open N connections at an open-loop rate, measure handshake
//! latency (TCP + upgrade + `welcome`) and the achieved connect rate, hold
//! them, and measure the nodes' idle memory per connection.
//!
//! One process can hold fewer sockets than a large test needs (this
//! machine caps open files at 20 000 per process), so the run is split
//! over worker processes — this same binary, `connect-worker` — whose
//! results the parent merges.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::client::{self, Sources};
use crate::env::{Counters, Env, Sampler};
use crate::stats::{self, summarize};
use crate::summary::{ConnectFigures, Summary};

/// Connections one worker process opens at most.
pub const PER_WORKER: usize = 15_000;

#[derive(Debug, Clone, Serialize)]
pub struct ConnectParams {
    pub connections: usize,
    /// New connections per second (all workers together).
    pub rate: f64,
    /// Seconds to hold the connections once all are open.
    pub hold_s: f64,
    /// Worker processes (0 = one per 15 000 connections).
    pub workers: usize,
    /// Retries of an upgrade refused with 503 (after Retry-After + jitter).
    pub retry_refused: u32,
}

/// The wait a node asks for in `Retry-After` (it always sends 1 s).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a worker reports once its ramp is done.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub attempted: u64,
    pub established: u64,
    pub errors: Vec<String>,
    pub error_count: u64,
    /// Upgrades refused with 503 and tried again.
    #[serde(default)]
    pub retried: u64,
    /// Handshake latencies, µs.
    pub handshakes_us: Vec<u32>,
    /// Seconds from the first scheduled connection to the last established one.
    pub ramp_s: f64,
}

/// Which connections one ramp opens, and how.
#[derive(Debug, Clone, Copy)]
pub struct RampPlan {
    pub count: usize,
    /// User names start at `c{first}`.
    pub first: usize,
    /// New connections per second.
    pub rate: f64,
    /// Retries of an upgrade refused with 503.
    pub retry_refused: u32,
}

/// Open `count` connections (user names from `first`) at `rate`/s, report
/// when all are open, then hold them until `release` fires.
pub async fn ramp(
    nodes: &[String],
    sources: Arc<Sources>,
    plan: RampPlan,
    counters: Arc<Counters>,
    release: watch::Receiver<bool>,
) -> WorkerReport {
    let RampPlan {
        count,
        first,
        rate,
        retry_refused,
    } = plan;
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let at = start + period.mul_f64(n as f64);
        let url = client::with_query(
            &nodes[(first + n) % nodes.len()],
            "user",
            &format!("c{}", first + n),
        );
        let (sources, counters, mut release) = (sources.clone(), counters.clone(), release.clone());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            counters.sent.fetch_add(1, Ordering::Relaxed);
            let mut retries = 0;
            // The latency of the attempt that succeeds: retry waits are
            // the client's choice, not the server's queue.
            let (mut ws, took) = loop {
                let t = Instant::now();
                match client::connect(&url, &sources).await {
                    Ok((ws, _)) => break (ws, t.elapsed()),
                    Err(e) => {
                        let e = format!("{e:#}");
                        if retries < retry_refused && e.contains("503") {
                            retries += 1;
                            let jitter = RETRY_AFTER.mul_f64(fastrand::f64());
                            tokio::time::sleep(RETRY_AFTER + jitter).await;
                            continue;
                        }
                        let _ = done_tx.send(Err((e, retries)));
                        return;
                    }
                }
            };
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            counters.connections.fetch_add(1, Ordering::Relaxed);
            let _ = done_tx.send(Ok((took, Instant::now(), retries)));
            // Hold: keep reading so pings are answered, until released.
            loop {
                tokio::select! {
                    msg = ws.next() => if !matches!(msg, Some(Ok(_))) { break },
                    _ = release.changed() => break,
                }
            }
            counters.connections.fetch_sub(1, Ordering::Relaxed);
            let _ = ws.close(None).await;
        });
        tasks.push(done_rx);
    }
    let mut report = WorkerReport {
        attempted: count as u64,
        ..WorkerReport::default()
    };
    let mut last = start;
    for task in tasks {
        match task.await {
            Ok(Ok((took, at, retries))) => {
                report.retried += u64::from(retries);
                report.established += 1;
                report
                    .handshakes_us
                    .push(took.as_micros().min(u32::MAX as u128) as u32);
                last = last.max(at);
            }
            Ok(Err((e, retries))) => {
                report.retried += u64::from(retries);
                report.error_count += 1;
                if report.errors.len() < 10 {
                    report.errors.push(e);
                }
            }
            Err(_) => report.error_count += 1,
        }
    }
    report.ramp_s = last.duration_since(start).as_secs_f64();
    report
}

pub async fn run(env: &Env, p: &ConnectParams) -> anyhow::Result<Summary> {
    let started_at_ms = crate::env::unix_ms();
    let workers = if p.workers > 0 {
        p.workers
    } else {
        p.connections.div_ceil(PER_WORKER).max(1)
    };
    let t0 = Instant::now();
    // Let the nodes settle, then take the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = env.rss_total_kib();
    let counters = Arc::new(Counters::default());
    let sampler = Sampler::start(env, counters.clone(), None, t0);
    env.log(format!(
        "opening {} connections at {}/s with {workers} worker process(es)",
        p.connections, p.rate
    ));

    let (release_tx, release_rx) = watch::channel(false);
    let mut reports = Vec::new();
    let mut children = Vec::new();
    if workers == 1 {
        reports.push(
            ramp(
                &env.nodes,
                env.sources.clone(),
                RampPlan {
                    count: p.connections,
                    first: 0,
                    rate: p.rate,
                    retry_refused: p.retry_refused,
                },
                counters.clone(),
                release_rx,
            )
            .await,
        );
    } else {
        let exe = std::env::current_exe()?;
        let share = p.connections.div_ceil(workers);
        for w in 0..workers {
            let first = w * share;
            let count = share.min(p.connections.saturating_sub(first));
            if count == 0 {
                break;
            }
            let mut child = tokio::process::Command::new(&exe)
                .arg("connect-worker")
                .args(["--nodes", &env.nodes.join(",")])
                .args([
                    "--connections",
                    &count.to_string(),
                    "--first",
                    &first.to_string(),
                ])
                .args(["--rate", &(p.rate / workers as f64).to_string()])
                .args(["--retry-refused", &p.retry_refused.to_string()])
                // Each worker binds its own loopback source (one source
                // address has ~28k ephemeral ports for all destinations).
                .args(["--source-ip-offset", &w.to_string(), "--source-ips", "1"])
                .stdout(Stdio::piped())
                .stdin(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            children.push((child, stdout));
        }
        for (_, stdout) in children.iter_mut() {
            let mut line = String::new();
            stdout.read_line(&mut line).await?;
            let report: WorkerReport = serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("worker report {line:?}: {e}"))?;
            counters
                .delivered
                .fetch_add(report.established, Ordering::Relaxed);
            counters
                .connections
                .fetch_add(report.established, Ordering::Relaxed);
            reports.push(report);
        }
    }

    // All open: let the nodes settle, then measure memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = env.rss_total_kib();
    tokio::time::sleep(Duration::from_secs_f64(p.hold_s)).await;
    let _ = release_tx.send(true);
    for (mut child, _) in children {
        drop(child.stdin.take()); // EOF releases the worker's connections
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let (samples, nodes, redis) = sampler.stop();

    let mut handshake = stats::new_histogram();
    let mut figures = ConnectFigures::default();
    let mut errors = Vec::new();
    let mut ramp_s: f64 = 0.0;
    for r in &reports {
        figures.attempted += r.attempted;
        figures.established += r.established;
        figures.errors += r.error_count;
        figures.retried += r.retried;
        errors.extend(r.errors.iter().cloned());
        ramp_s = ramp_s.max(r.ramp_s);
        for &us in &r.handshakes_us {
            stats::record(&mut handshake, us as u64);
        }
    }
    figures.rate_per_s = figures.established as f64 / ramp_s.max(1e-6);
    figures.handshake = (!handshake.is_empty()).then(|| summarize(&handshake));
    if !env.pids.is_empty() && figures.established > 0 {
        figures.memory_per_connection_bytes =
            Some(rss_after.saturating_sub(rss_before) as f64 * 1024.0 / figures.established as f64);
    }
    env.log(format!(
        "established {} of {} in {ramp_s:.2}s ({:.0}/s); node RSS {} -> {} KiB",
        figures.established, figures.attempted, figures.rate_per_s, rss_before, rss_after
    ));
    Ok(Summary {
        scenario: "connect".into(),
        command: env.command.clone(),
        started_at_ms,
        duration_s: ramp_s,
        params: serde_json::to_value(p)?,
        target_rate: Some(p.rate),
        latency: figures.handshake.clone(),
        latency_distribution: stats::distribution(&handshake),
        connect: Some(figures),
        errors,
        samples,
        nodes,
        redis,
        ..Summary::default()
    })
}

/// The `connect-worker` subcommand: ramp, print the report as one JSON
/// line, hold until stdin closes.
pub async fn worker(
    nodes: Vec<String>,
    sources: Sources,
    count: usize,
    first: usize,
    rate: f64,
    retry_refused: u32,
) -> anyhow::Result<()> {
    let (release_tx, release_rx) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let plan = RampPlan {
        count,
        first,
        rate,
        retry_refused,
    };
    let report = ramp(&nodes, Arc::new(sources), plan, counters, release_rx).await;
    println!("{}", serde_json::to_string(&report)?);
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    let _ = stdin.read_line(&mut line).await;
    let _ = release_tx.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
