//! `churn`: W concurrent loops of connect → subscribe → unsubscribe →
//! close, paced to R cycles per second in total, for D seconds. Measures
//! completed cycles, failures and the latency of a whole cycle — the load
//! a flapping mobile fleet or a rolling restart puts on registry, presence
//! and the subscribe/unsubscribe path.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client;
use crate::env::{Counters, Env, Latencies, Sampler};
use crate::stats::{distribution, summarize};
use crate::summary::{ConnectFigures, Summary};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChurnParams {
    /// Cycles per second, all loops together.
    pub rate: f64,
    /// Loops running at once.
    pub concurrency: usize,
    pub channels: usize,
    pub duration_s: f64,
}

pub async fn run(env: &Env, p: &ChurnParams) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        p.rate > 0.0 && p.concurrency > 0 && p.channels > 0,
        "rate, concurrency and channels must be positive"
    );
    let t0 = Instant::now();
    let started_at_ms = crate::env::unix_ms();
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Latencies::default());
    let errors = Arc::new(Mutex::new((0u64, Vec::<String>::new())));
    let sampler = Sampler::start(env, counters.clone(), Some(latencies.clone()), t0);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(p.duration_s);
    let period = Duration::from_secs_f64(p.concurrency as f64 / p.rate);
    let nodes = Arc::new(env.nodes.clone());
    let mut loops = Vec::new();
    for w in 0..p.concurrency {
        let (nodes, sources, counters, latencies, errors, p) = (
            nodes.clone(),
            env.sources.clone(),
            counters.clone(),
            latencies.clone(),
            errors.clone(),
            p.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let at = start + period.mul_f64(n as f64 + w as f64 / p.concurrency as f64);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                counters.sent.fetch_add(1, Ordering::Relaxed);
                let cycle = n as usize * p.concurrency + w;
                let url =
                    client::with_query(&nodes[cycle % nodes.len()], "user", &format!("churn{w}"));
                let channel = format!("churn{}", cycle % p.channels);
                let result = async {
                    let (mut ws, _) = client::connect(&url, &sources).await?;
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let r = async {
                        client::request(
                            &mut ws,
                            serde_json::json!({"type": "subscribe", "id": 1, "channel": channel}),
                        )
                        .await?;
                        client::request(
                            &mut ws,
                            serde_json::json!({"type": "unsubscribe", "id": 2, "channel": channel}),
                        )
                        .await?;
                        anyhow::Ok(())
                    }
                    .await;
                    counters.connections.fetch_sub(1, Ordering::Relaxed);
                    let _ = ws.close(None).await;
                    r
                }
                .await;
                match result {
                    // Measured from the scheduled start: a late cycle counts its wait.
                    Ok(()) => {
                        latencies.record(w, at.elapsed().as_micros() as u64);
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let mut errors = errors.lock().unwrap();
                        errors.0 += 1;
                        if errors.1.len() < 20 {
                            errors.1.push(format!("{e:#}"));
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (samples, nodes) = sampler.stop();
    let histogram = latencies.total();
    let (error_count, errors) = std::mem::take(&mut *errors.lock().unwrap());
    let completed = counters.delivered.load(Ordering::Relaxed);
    Ok(Summary {
        scenario: "churn".into(),
        command: env.command.clone(),
        started_at_ms,
        duration_s: elapsed,
        params: serde_json::to_value(p)?,
        target_rate: Some(p.rate),
        published: counters.sent.load(Ordering::Relaxed),
        publish_errors: error_count,
        deliveries_per_s: completed as f64 / elapsed,
        latency: (!histogram.is_empty()).then(|| summarize(&histogram)),
        latency_distribution: distribution(&histogram),
        connect: Some(ConnectFigures {
            attempted: counters.sent.load(Ordering::Relaxed),
            established: completed,
            errors: error_count,
            rate_per_s: completed as f64 / elapsed,
            ..ConnectFigures::default()
        }),
        errors,
        samples,
        nodes,
        ..Summary::default()
    })
}
