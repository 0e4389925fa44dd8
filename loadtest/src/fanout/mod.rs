//! `fanout`: C subscribers spread over the nodes, subscribed to K channels;
//! P publishers send at an open-loop rate R. Every message carries its
//! publisher, a per-(publisher, channel) sequence number and its *intended*
//! send time, so latency, loss and duplicates are exact.
//!
//! Open loop: publisher j sends its n-th message at t0 + n·P/R whatever
//! happened to earlier ones; if it falls behind it sends at once and the
//! lag shows up in the latency, instead of silently lowering the rate.
//!
//! With `--recover` subscribers follow each channel's (offset, epoch) and
//! resume with `subscribe {since}` when a connection ends — or when the
//! harness drops it (`--reconnect-every`); loss and duplicates are then
//! counted against the offsets the publishers got acknowledged (see
//! [`crate::recover`]).
//!
//! # Layout
//! * `shared` — the state a run's publishers and subscribers share.
//! * `publisher` — open-loop publishing and its acknowledgements.
//! * `subscribers` — plain and recovering subscribers, and the dropper.
//! * here — parameters, and the run itself: set-up, publishing, drain and
//!   the summary.

mod publisher;
mod shared;
mod subscribers;

// Churn's `--recover` publishers are fanout's.
pub(crate) use publisher::publisher;
pub(crate) use shared::{Redial, Shared};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::client;
use crate::env::{Env, Sampler};
use crate::recover::{self, Counts, RecoverStats, Tracker};
use crate::stats::{distribution, summarize, Delivery, SequenceTracker};
use crate::summary::{RecoveryFigures, Summary};
use crate::traces::TraceParams;
use shared::Recovering;
use subscribers::{recovering_subscriber, spawn_dropper, subscriber, Subscriber};

#[derive(Debug, Clone, serde::Serialize)]
pub struct FanoutParams {
    pub connections: usize,
    pub channels: usize,
    pub publishers: usize,
    /// Messages per second offered by all publishers together.
    pub rate: f64,
    pub duration_s: f64,
    /// Padding bytes per message.
    pub payload: usize,
    /// Longest wait for in-flight deliveries after publishing stops.
    pub drain_s: f64,
    /// Subscribers resume with `subscribe {since}` after a connection ends.
    pub recover: bool,
    /// With `recover`: drop subscriber connections during the publishing
    /// phase, `reconnect_fraction` of them per this many seconds, spread
    /// evenly (0: only connections that end by themselves reconnect).
    pub reconnect_every_s: f64,
    pub reconnect_fraction: f64,
    /// How long a dropped subscriber stays away before reconnecting, s
    /// (what it misses meanwhile is replayed by the recovery).
    pub reconnect_delay_s: f64,
    /// `--trace-fraction`, `--slowest`, `--jaeger-url`.
    pub trace: TraceParams,
}

pub async fn run(env: &Env, p: &FanoutParams) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        p.channels > 0 && p.publishers > 0 && p.rate > 0.0,
        "channels, publishers and rate must be positive"
    );
    anyhow::ensure!(
        p.recover || p.reconnect_every_s == 0.0,
        "reconnects (--reconnect-every) need --recover"
    );
    anyhow::ensure!(
        p.reconnect_every_s >= 0.0
            && p.reconnect_delay_s >= 0.0
            && (0.0..=1.0).contains(&p.reconnect_fraction),
        "--reconnect-every and --reconnect-delay must be at least 0, --reconnect-fraction within 0..=1"
    );
    p.trace.check()?;
    let t0 = Instant::now();
    let started_at_ms = crate::env::unix_ms();
    let mut shared = Shared::new(t0, p.channels, "lt", p.recover);
    shared.traces = p.trace.start();
    if p.recover {
        shared.recover = Some(Recovering {
            stats: RecoverStats::default(),
            nodes: env.nodes.clone(),
            sources: env.sources.clone(),
            last_seen: (0..p.connections)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
            drops: (0..p.connections).map(|_| Notify::new()).collect(),
            away: Duration::from_secs_f64(p.reconnect_delay_s),
        });
        shared.redial = Some(Redial {
            nodes: env.nodes.clone(),
            sources: env.sources.clone(),
            user: "pub",
        });
    }
    let shared = Arc::new(shared);

    env.log(format!(
        "connecting {} subscribers over {} node(s)",
        p.connections,
        env.nodes.len()
    ));
    let (subs, connect, mut errors) = env.connect_many(p.connections, |i| format!("sub{i}")).await;
    let mut per_channel = vec![0u64; p.channels];
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut subscribed = Vec::new();
    let mut subscribe_errors = 0;
    for (i, mut ws, node) in subs {
        let k = i % p.channels;
        let result = match &shared.recover {
            Some(rec) => {
                // Subscribed before anything is published: owed every message.
                let mut tracker = Tracker::new(shared.channel(k), true);
                let sub = recover::subscribe(&mut ws, 1, &mut tracker, None, &rec.stats, |f, s| {
                    shared.on_new(i, &node, f, s)
                });
                sub.await.map(|()| {
                    let at = tracker.ledger.position().map_or(0, |p| p.1);
                    rec.last_seen[i].store(at, Ordering::Relaxed);
                    let (shared, stop) = (shared.clone(), stop_rx.clone());
                    let task = recovering_subscriber(ws, i, node, tracker, shared, stop);
                    Subscriber::Recovering(k, tokio::spawn(task))
                })
            }
            None => {
                let frame =
                    serde_json::json!({"type": "subscribe", "id": 1, "channel": shared.channel(k)});
                client::request(&mut ws, frame).await.map(|_| {
                    let task = subscriber(ws, i, node, shared.clone(), stop_rx.clone());
                    Subscriber::Plain(tokio::spawn(task))
                })
            }
        };
        match result {
            Ok(task) => {
                per_channel[k] += 1;
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                subscribed.push(i);
                tasks.push(task);
            }
            Err(e) => {
                subscribe_errors += 1;
                if errors.len() < 20 {
                    errors.push(format!("subscribe: {e:#}"));
                }
            }
        }
    }
    env.log(format!(
        "{} subscribed ({} connect errors, {subscribe_errors} subscribe errors); connecting {} publishers",
        tasks.len(),
        connect.errors,
        p.publishers
    ));
    let (pubs, _, pub_errors) = env.connect_many(p.publishers, |j| format!("pub{j}")).await;
    errors.extend(pub_errors);
    anyhow::ensure!(!pubs.is_empty(), "no publisher could connect: {errors:?}");

    let before = crate::sampler::scrape(&env.metrics_urls).await;
    let sampler = Sampler::start(
        env,
        shared.counters.clone(),
        Some(shared.latencies.clone()),
        t0,
    );
    let start = Instant::now() + Duration::from_millis(200);
    let start_us = start.duration_since(t0).as_micros() as u64;
    let dropper = (p.recover && p.reconnect_every_s > 0.0).then(|| {
        spawn_dropper(
            shared.clone(),
            subscribed,
            Duration::from_secs_f64(p.reconnect_every_s),
            p.reconnect_fraction,
            start,
            start + Duration::from_secs_f64(p.duration_s),
        )
    });
    let publishers: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(j, (_, ws, _))| tokio::spawn(publisher(ws, j, p.clone(), shared.clone(), start)))
        .collect();
    let mut published = 0;
    for task in publishers {
        published += task.await.unwrap_or(0);
    }
    if let Some(dropper) = dropper {
        dropper.abort();
    }

    // Drain: wait for in-flight deliveries (with --recover: until every
    // subscriber has got to its channel's last acknowledged offset).
    let expected = |s: &Shared| -> u64 {
        s.accepted
            .iter()
            .zip(&per_channel)
            .map(|(a, n)| a.load(Ordering::Relaxed) * n)
            .sum()
    };
    let done = |s: &Shared| -> bool {
        match (&s.recover, &s.acked) {
            (Some(rec), Some(acked)) => rec.last_seen.iter().enumerate().all(|(i, seen)| {
                let seen = seen.load(Ordering::Relaxed);
                seen == u64::MAX || seen >= acked.top(i % p.channels)
            }),
            _ => s.counters.delivered.load(Ordering::Relaxed) >= expected(s),
        }
    };
    let drain_end = Instant::now() + Duration::from_secs_f64(p.drain_s);
    while !done(&shared) && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = crate::sampler::scrape(&env.metrics_urls).await;
    let _ = stop_tx.send(true);
    let mut tracker = SequenceTracker::default();
    let mut counts = Counts::default();
    let acked: Vec<_> = match &shared.acked {
        Some(acked) => (0..p.channels).map(|k| acked.of(k)).collect(),
        None => Vec::new(),
    };
    for task in tasks {
        match task {
            Subscriber::Plain(task) => {
                if let Ok(t) = task.await {
                    tracker.merge(&t);
                }
            }
            Subscriber::Recovering(k, task) => {
                if let Ok(t) = task.await {
                    counts.add(t.ledger.settle(&acked[k], false));
                }
            }
        }
    }
    let (samples, nodes, redis) = sampler.stop();

    let histogram = shared.latencies.total();
    let last = shared
        .last_delivery_us
        .load(Ordering::Relaxed)
        .max(start_us + 1);
    let window_s = (last - start_us) as f64 / 1e6;
    errors.extend(shared.errors.lock().unwrap().drain(..));
    let (delivery, recovery) = match &shared.recover {
        Some(rec) => (
            Delivery {
                expected: counts.expected,
                received: counts.received,
                duplicates: counts.duplicates,
                lost: counts.lost,
            },
            Some(RecoveryFigures {
                publisher_reconnects: shared.publisher_reconnects.load(Ordering::Relaxed),
                ..rec.stats.figures(&counts)
            }),
        ),
        None => (
            Delivery::new(expected(&shared), tracker.received, tracker.duplicates),
            None,
        ),
    };
    Ok(Summary {
        scenario: "fanout".into(),
        command: env.command.clone(),
        started_at_ms,
        duration_s: p.duration_s,
        params: serde_json::to_value(p)?,
        target_rate: Some(p.rate),
        published,
        publish_errors: shared.publish_errors.load(Ordering::Relaxed),
        deliveries_per_s: delivery.received as f64 / window_s.max(p.duration_s),
        delivery: Some(delivery),
        latency: (!histogram.is_empty()).then(|| summarize(&histogram)),
        latency_distribution: distribution(&histogram),
        connect: Some(connect),
        errors,
        samples,
        nodes,
        redis,
        metrics: (!env.metrics_urls.is_empty()).then(|| crate::sampler::deltas(&before, &after)),
        recovery,
        traces: shared.traces.as_ref().map(|t| t.figures()),
    })
}
