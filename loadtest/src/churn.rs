//! `churn`: W concurrent loops of connect → subscribe → unsubscribe →
//! close, paced to R cycles per second in total, for D seconds. Measures
//! completed cycles, failures and the latency of a whole cycle — the load
//! a flapping mobile fleet or a rolling restart puts on registry, presence
//! and the subscribe/unsubscribe path.
//!
//! With `--recover`, publishers send on the channels meanwhile, each loop
//! keeps to one channel and is a client that comes back: it subscribes
//! with `since` (its last position) once it has one, reads for
//! `--receive` seconds (and until a recovery's replay is complete), then
//! unsubscribes and closes. Loss and duplicates are counted against the
//! acknowledged offsets, from where a loop's first subscription found the
//! channel to the last message it got (see [`crate::recover`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{self, Sources};
use crate::env::{micros_since, Counters, Env, Frame, Latencies, Sampler};
use crate::fanout::{self, FanoutParams};
use crate::recover::{self, Counts, RecoverStats, Seen, Tracker};
use crate::stats::{distribution, summarize, Delivery};
use crate::summary::{ConnectFigures, RecoveryFigures, Summary};
use crate::traces::TraceParams;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChurnParams {
    /// Cycles per second, all loops together.
    pub rate: f64,
    /// Loops running at once.
    pub concurrency: usize,
    pub channels: usize,
    pub duration_s: f64,
    /// Resume with `subscribe {since}`; publishers run meanwhile.
    pub recover: bool,
    /// With `recover`: publisher connections, and messages per second they
    /// send together (round-robin over the channels).
    pub publishers: usize,
    pub publish_rate: f64,
    /// With `recover`: how long each cycle stays subscribed, s.
    pub receive_s: f64,
    /// With `recover`: `--trace-fraction` of the publishers, `--slowest`,
    /// `--jaeger-url`.
    pub trace: TraceParams,
}

/// Longest a cycle waits for a recovery's replay to arrive.
const REPLAY_CAP: Duration = Duration::from_secs(10);

/// What a loop takes into a cycle.
struct Cycle<'a> {
    url: String,
    channel: String,
    sources: &'a Sources,
    counters: &'a Counters,
}

/// Connect, subscribe, unsubscribe, close.
async fn plain_cycle(c: Cycle<'_>) -> anyhow::Result<()> {
    let (mut ws, _) = client::connect(&c.url, c.sources).await?;
    c.counters.connections.fetch_add(1, Ordering::Relaxed);
    let channel = c.channel;
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
    c.counters.connections.fetch_sub(1, Ordering::Relaxed);
    let _ = ws.close(None).await;
    r
}

/// Connect, subscribe from the tracker's position, receive, unsubscribe,
/// close; live deliveries of traced messages go to `publishing`'s traces.
async fn recovering_cycle(
    c: Cycle<'_>,
    tracker: &mut Tracker,
    returning: bool,
    stats: &RecoverStats,
    receive: Duration,
    publishing: &fanout::Shared,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut ws, welcome) = client::connect(&c.url, c.sources).await?;
    c.counters.connections.fetch_add(1, Ordering::Relaxed);
    let node = client::node_of(&welcome, &c.url);
    let t0 = publishing.t0();
    let traced = |f: &Frame<'_>, seen: &Seen| {
        if let Seen::Live(_) = seen {
            publishing.traced(f, micros_since(t0), &node);
        }
    };
    let r = async {
        let reconnect = returning.then_some(started);
        recover::subscribe(&mut ws, 1, tracker, reconnect, stats, traced).await?;
        recover::receive(&mut ws, tracker, stats, receive, REPLAY_CAP, traced).await?;
        recover::unsubscribe(&mut ws, 2, tracker, stats).await
    }
    .await;
    c.counters.connections.fetch_sub(1, Ordering::Relaxed);
    stats.dropped.fetch_add(1, Ordering::Relaxed);
    let _ = ws.close(None).await;
    r
}

pub async fn run(env: &Env, p: &ChurnParams) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        p.rate > 0.0 && p.concurrency > 0 && p.channels > 0,
        "rate, concurrency and channels must be positive"
    );
    anyhow::ensure!(
        !p.recover || (p.publishers > 0 && p.publish_rate > 0.0 && p.receive_s >= 0.0),
        "--recover needs publishers and a publish rate above 0"
    );
    p.trace.check()?;
    anyhow::ensure!(
        p.recover || p.trace.fraction == 0.0,
        "--trace-fraction needs --recover in churn (only its publishers publish)"
    );
    let t0 = Instant::now();
    let started_at_ms = crate::env::unix_ms();
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Latencies::default());
    let errors = Arc::new(Mutex::new((0u64, Vec::<String>::new())));
    let stats = Arc::new(RecoverStats::default());
    // --recover: publishers on the churn channels, acknowledgements recorded.
    let mut publishing = fanout::Shared::new(t0, p.channels, "churn", true);
    publishing.traces = p.trace.start();
    publishing.redial = Some(fanout::Redial {
        nodes: env.nodes.clone(),
        sources: env.sources.clone(),
        user: "churnpub",
    });
    let publishing = Arc::new(publishing);
    let pubs = if p.recover {
        let (pubs, _, pub_errors) = env
            .connect_many(p.publishers, |j| format!("churnpub{j}"))
            .await;
        errors.lock().unwrap().1.extend(pub_errors);
        anyhow::ensure!(!pubs.is_empty(), "no publisher could connect");
        pubs
    } else {
        Vec::new()
    };
    let sampler = Sampler::start(env, counters.clone(), Some(latencies.clone()), t0);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(p.duration_s);
    let period = Duration::from_secs_f64(p.concurrency as f64 / p.rate);
    let publish = FanoutParams {
        connections: 0,
        channels: p.channels,
        publishers: pubs.len(),
        rate: p.publish_rate,
        duration_s: p.duration_s,
        payload: 16,
        drain_s: 0.0,
        recover: true,
        reconnect_every_s: 0.0,
        reconnect_fraction: 0.0,
        reconnect_delay_s: 0.0,
        trace: p.trace.clone(),
    };
    let publishers: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(j, (_, ws, _))| {
            let task = fanout::publisher(ws, j, publish.clone(), publishing.clone(), start);
            tokio::spawn(task)
        })
        .collect();
    let nodes = Arc::new(env.nodes.clone());
    let mut loops = Vec::new();
    for w in 0..p.concurrency {
        let (nodes, sources, counters, latencies, errors, stats, p) = (
            nodes.clone(),
            env.sources.clone(),
            counters.clone(),
            latencies.clone(),
            errors.clone(),
            stats.clone(),
            p.clone(),
        );
        let publishing = publishing.clone();
        loops.push(tokio::spawn(async move {
            // One client, one channel, across all its cycles (--recover).
            let k = w % p.channels;
            let mut tracker = Tracker::new(format!("churn{k}"), false);
            let mut returning = false;
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
                let c = Cycle {
                    url,
                    channel: format!("churn{}", cycle % p.channels),
                    sources: &sources,
                    counters: &counters,
                };
                let result = if p.recover {
                    let receive = Duration::from_secs_f64(p.receive_s);
                    let r =
                        recovering_cycle(c, &mut tracker, returning, &stats, receive, &publishing)
                            .await;
                    // Subscribed once: later cycles come back to where it left.
                    returning |= tracker.ledger.position().is_some() || r.is_ok();
                    r
                } else {
                    plain_cycle(c).await
                };
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
            (k, tracker)
        }));
    }
    let mut trackers = Vec::new();
    for l in loops {
        if let Ok(t) = l.await {
            trackers.push(t);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    for task in publishers {
        let _ = task.await;
    }
    let (samples, nodes, redis) = sampler.stop();
    let histogram = latencies.total();
    let (cycle_errors, mut errors) = std::mem::take(&mut *errors.lock().unwrap());
    let mut error_count = cycle_errors;
    let completed = counters.delivered.load(Ordering::Relaxed);
    let (delivery, recovery) = match &publishing.acked {
        Some(acked) if p.recover => {
            let mut counts = Counts::default();
            for (k, tracker) in &trackers {
                // A client is owed nothing published after it last left.
                counts.add(tracker.ledger.settle(&acked.of(*k), true));
            }
            error_count += publishing.publish_errors.load(Ordering::Relaxed);
            errors.extend(publishing.errors.lock().unwrap().drain(..));
            let delivery = Delivery {
                expected: counts.expected,
                received: counts.received,
                duplicates: counts.duplicates,
                lost: counts.lost,
            };
            let publisher_reconnects = publishing.publisher_reconnects.load(Ordering::Relaxed);
            let figures = RecoveryFigures {
                publisher_reconnects,
                ..stats.figures(&counts)
            };
            (Some(delivery), Some(figures))
        }
        _ => (None, None),
    };
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
        delivery,
        latency: (!histogram.is_empty()).then(|| summarize(&histogram)),
        latency_distribution: distribution(&histogram),
        connect: Some(ConnectFigures {
            attempted: counters.sent.load(Ordering::Relaxed),
            established: completed,
            errors: cycle_errors,
            rate_per_s: completed as f64 / elapsed,
            ..ConnectFigures::default()
        }),
        errors,
        samples,
        nodes,
        redis,
        recovery,
        traces: publishing.traces.as_ref().map(|t| t.figures()),
        ..Summary::default()
    })
}
