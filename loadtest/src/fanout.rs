//! `fanout`: C subscribers spread over the nodes, subscribed to K channels;
//! P publishers send at an open-loop rate R. Every message carries its
//! publisher, a per-(publisher, channel) sequence number and its *intended*
//! send time, so latency, loss and duplicates are exact.
//!
//! Open loop: publisher j sends its n-th message at t0 + n·P/R whatever
//! happened to earlier ones; if it falls behind it sends at once and the
//! lag shows up in the latency, instead of silently lowering the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::env::{micros_since, Counters, Env, Frame, Latencies, Sampler};
use crate::stats::{distribution, summarize, Delivery, SequenceTracker};
use crate::summary::Summary;

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
}

struct Shared {
    t0: Instant,
    latencies: Arc<Latencies>,
    counters: Arc<Counters>,
    /// Accepted publishes per channel.
    accepted: Vec<AtomicU64>,
    publish_errors: AtomicU64,
    last_delivery_us: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(e);
        }
    }
}

fn channel_name(k: usize) -> String {
    format!("lt{k}")
}

async fn subscriber(
    mut ws: Ws,
    shard: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SequenceTracker {
    let mut tracker = SequenceTracker::default();
    loop {
        let msg = tokio::select! {
            msg = ws.next() => msg,
            _ = stop.changed() => break,
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                let now = micros_since(shared.t0);
                let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                    continue;
                };
                if frame.kind != "message" {
                    continue;
                }
                let Some(stamp) = frame.data else { continue };
                shared.latencies.record(shard, now.saturating_sub(stamp.t));
                shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_delivery_us.fetch_max(now, Ordering::Relaxed);
                tracker.observe(stamp.p, stamp.s);
            }
            Some(Ok(Message::Close(frame))) => {
                shared.error(format!("subscriber closed by server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                shared.error(format!("subscriber: {e}"));
                break;
            }
            None => break,
        }
    }
    shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
    tracker
}

/// Publish on schedule; returns how many frames were sent.
async fn publisher(ws: Ws, j: usize, p: FanoutParams, shared: Arc<Shared>, start: Instant) -> u64 {
    let (mut sink, mut stream) = ws.split();
    let channels = p.channels;
    let (sent_tx, sent_rx) = watch::channel(u64::MAX);
    // Replies come in order; the id says which channel the publish went to.
    let reader = {
        let shared = shared.clone();
        let mut sent_rx = sent_rx.clone();
        tokio::spawn(async move {
            let mut replies = 0u64;
            loop {
                if replies >= *sent_rx.borrow() {
                    break;
                }
                let msg = tokio::select! {
                    msg = stream.next() => msg,
                    _ = sent_rx.changed() => continue,
                };
                let Some(Ok(Message::Text(text))) = msg else {
                    if msg.is_none() || matches!(msg, Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                        shared.error(format!("publisher {j} connection ended: {msg:?}"));
                        break;
                    }
                    continue;
                };
                let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if v["type"] != "reply" {
                    continue;
                }
                replies += 1;
                let id = v["id"].as_u64().unwrap_or(0) as usize;
                if v["ok"] == true {
                    shared.accepted[(id + j) % channels].fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.publish_errors.fetch_add(1, Ordering::Relaxed);
                    shared.error(format!("publish refused: {}", v["error"]));
                }
            }
        })
    };
    let period = Duration::from_secs_f64(p.publishers as f64 / p.rate);
    let end = start + Duration::from_secs_f64(p.duration_s);
    let pad = "x".repeat(p.payload);
    let mut seqs = vec![0u64; channels];
    let mut n = 0u64;
    loop {
        // Stagger publishers across the period so they do not fire together.
        let intended = start + period.mul_f64(n as f64 + j as f64 / p.publishers as f64);
        if intended >= end {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        let k = (n as usize + j) % channels;
        let t = intended.duration_since(shared.t0).as_micros();
        let frame = format!(
            r#"{{"type":"publish","id":{n},"channel":"{}","data":{{"p":{j},"s":{},"t":{t},"pad":"{pad}"}}}}"#,
            channel_name(k),
            seqs[k]
        );
        seqs[k] += 1;
        if let Err(e) = sink.send(Message::text(frame)).await {
            shared.error(format!("publisher {j}: {e}"));
            break;
        }
        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    let _ = sent_tx.send(n);
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    n
}

pub async fn run(env: &Env, p: &FanoutParams) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        p.channels > 0 && p.publishers > 0 && p.rate > 0.0,
        "channels, publishers and rate must be positive"
    );
    let t0 = Instant::now();
    let started_at_ms = crate::env::unix_ms();
    let shared = Arc::new(Shared {
        t0,
        latencies: Arc::new(Latencies::default()),
        counters: Arc::new(Counters::default()),
        accepted: (0..p.channels).map(|_| AtomicU64::new(0)).collect(),
        publish_errors: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });

    env.log(format!(
        "connecting {} subscribers over {} node(s)",
        p.connections,
        env.nodes.len()
    ));
    let (subs, connect, mut errors) = env.connect_many(p.connections, |i| format!("sub{i}")).await;
    let mut per_channel = vec![0u64; p.channels];
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut subscribe_errors = 0;
    for (i, mut ws) in subs {
        let k = i % p.channels;
        let frame = serde_json::json!({"type": "subscribe", "id": 1, "channel": channel_name(k)});
        match client::request(&mut ws, frame).await {
            Ok(_) => {
                per_channel[k] += 1;
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                tasks.push(tokio::spawn(subscriber(
                    ws,
                    i,
                    shared.clone(),
                    stop_rx.clone(),
                )));
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
    let publishers: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(j, (_, ws))| tokio::spawn(publisher(ws, j, p.clone(), shared.clone(), start)))
        .collect();
    let mut published = 0;
    for task in publishers {
        published += task.await.unwrap_or(0);
    }

    // Drain: wait for in-flight deliveries.
    let expected = |s: &Shared| -> u64 {
        s.accepted
            .iter()
            .zip(&per_channel)
            .map(|(a, n)| a.load(Ordering::Relaxed) * n)
            .sum()
    };
    let drain_end = Instant::now() + Duration::from_secs_f64(p.drain_s);
    while shared.counters.delivered.load(Ordering::Relaxed) < expected(&shared)
        && Instant::now() < drain_end
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = crate::sampler::scrape(&env.metrics_urls).await;
    let _ = stop_tx.send(true);
    let mut tracker = SequenceTracker::default();
    for task in tasks {
        if let Ok(t) = task.await {
            tracker.merge(&t);
        }
    }
    let (samples, nodes) = sampler.stop();

    let histogram = shared.latencies.total();
    let last = shared
        .last_delivery_us
        .load(Ordering::Relaxed)
        .max(start_us + 1);
    let window_s = (last - start_us) as f64 / 1e6;
    errors.extend(shared.errors.lock().unwrap().drain(..));
    Ok(Summary {
        scenario: "fanout".into(),
        command: env.command.clone(),
        started_at_ms,
        duration_s: p.duration_s,
        params: serde_json::to_value(p)?,
        target_rate: Some(p.rate),
        published,
        publish_errors: shared.publish_errors.load(Ordering::Relaxed),
        deliveries_per_s: tracker.received as f64 / window_s.max(p.duration_s),
        delivery: Some(Delivery::new(
            expected(&shared),
            tracker.received,
            tracker.duplicates,
        )),
        latency: (!histogram.is_empty()).then(|| summarize(&histogram)),
        latency_distribution: distribution(&histogram),
        connect: Some(connect),
        errors,
        samples,
        nodes,
        metrics: (!env.metrics_urls.is_empty()).then(|| crate::sampler::deltas(&before, &after)),
    })
}
