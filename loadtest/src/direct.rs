//! `direct`: U users, one connection each, spread over the nodes; senders
//! `send` to random other users at an open-loop rate R. Each delivery is
//! checked against a per-(sender, recipient) sequence, so cross-node
//! direct delivery is measured for latency, loss and duplicates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::env::{micros_since, Counters, Env, Frame, Latencies, Sampler};
use crate::stats::{distribution, summarize, Delivery, SequenceTracker};
use crate::summary::Summary;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DirectParams {
    pub users: usize,
    /// Sends per second, all senders together.
    pub rate: f64,
    pub duration_s: f64,
    pub drain_s: f64,
}

struct Shared {
    t0: Instant,
    latencies: Arc<Latencies>,
    counters: Arc<Counters>,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// One user's connection: sends on its schedule and receives its directs.
async fn user(
    ws: Ws,
    me: usize,
    p: DirectParams,
    shared: Arc<Shared>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> SequenceTracker {
    let (mut sink, mut stream) = ws.split();
    let mut tracker = SequenceTracker::default();
    let period = Duration::from_secs_f64(p.users as f64 / p.rate);
    let end = start + Duration::from_secs_f64(p.duration_s);
    let mut seqs: HashMap<usize, u64> = HashMap::new();
    let mut n = 0u64;
    let mut next = start + period.mul_f64(me as f64 / p.users as f64);
    let mut rng = fastrand::Rng::with_seed(me as u64);
    loop {
        let sending = next < end;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()), if sending => {
                let mut to = rng.usize(..p.users - 1);
                if to >= me { to += 1; }
                let seq = seqs.entry(to).or_insert(0);
                let t = next.duration_since(shared.t0).as_micros();
                let frame = format!(r#"{{"type":"send","user":"d{to}","data":{{"p":{me},"s":{seq},"t":{t}}}}}"#);
                *seq += 1;
                n += 1;
                next = start + period.mul_f64(n as f64 + me as f64 / p.users as f64);
                if sink.send(Message::text(frame)).await.is_err() { break; }
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let now = micros_since(shared.t0);
                    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else { continue };
                    match (frame.kind, frame.data) {
                        ("direct", Some(stamp)) => {
                            shared.latencies.record(me, now.saturating_sub(stamp.t));
                            shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                            tracker.observe(stamp.p, stamp.s);
                        }
                        ("reply", _) if frame.ok == Some(true) => { shared.accepted.fetch_add(1, Ordering::Relaxed); }
                        ("reply" | "error", _) => {
                            shared.refused.fetch_add(1, Ordering::Relaxed);
                            let mut errors = shared.errors.lock().unwrap();
                            if errors.len() < 20 { errors.push(format!("send refused: {text}")); }
                        }
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = stop.changed() => break,
        }
    }
    tracker
}

pub async fn run(env: &Env, p: &DirectParams) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        p.users >= 2 && p.rate > 0.0,
        "direct needs at least 2 users and a positive rate"
    );
    let t0 = Instant::now();
    let started_at_ms = crate::env::unix_ms();
    let shared = Arc::new(Shared {
        t0,
        latencies: Arc::new(Latencies::default()),
        counters: Arc::new(Counters::default()),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    env.log(format!(
        "connecting {} users over {} node(s)",
        p.users,
        env.nodes.len()
    ));
    let (conns, connect, mut errors) = env.connect_many(p.users, |i| format!("d{i}")).await;
    anyhow::ensure!(
        conns.len() == p.users,
        "only {} of {} users connected: {errors:?}",
        conns.len(),
        p.users
    );
    shared
        .counters
        .connections
        .store(conns.len() as u64, Ordering::Relaxed);
    let sampler = Sampler::start(
        env,
        shared.counters.clone(),
        Some(shared.latencies.clone()),
        t0,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now() + Duration::from_millis(200);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(i, ws, _)| {
            tokio::spawn(user(
                ws,
                i,
                p.clone(),
                shared.clone(),
                start,
                stop_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep_until((start + Duration::from_secs_f64(p.duration_s)).into()).await;
    // Every send is answered; every accepted send is one delivery.
    let drain_end = Instant::now() + Duration::from_secs_f64(p.drain_s);
    while Instant::now() < drain_end {
        let answered =
            shared.accepted.load(Ordering::Relaxed) + shared.refused.load(Ordering::Relaxed);
        let delivered = shared.counters.delivered.load(Ordering::Relaxed);
        if answered >= shared.counters.sent.load(Ordering::Relaxed)
            && delivered >= shared.accepted.load(Ordering::Relaxed)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut tracker = SequenceTracker::default();
    for task in tasks {
        if let Ok(t) = task.await {
            tracker.merge(&t);
        }
    }
    let (samples, nodes, redis) = sampler.stop();
    let histogram = shared.latencies.total();
    errors.extend(shared.errors.lock().unwrap().drain(..));
    Ok(Summary {
        scenario: "direct".into(),
        command: env.command.clone(),
        started_at_ms,
        duration_s: p.duration_s,
        params: serde_json::to_value(p)?,
        target_rate: Some(p.rate),
        published: shared.counters.sent.load(Ordering::Relaxed),
        publish_errors: shared.refused.load(Ordering::Relaxed),
        deliveries_per_s: tracker.received as f64 / p.duration_s,
        delivery: Some(Delivery::new(
            shared.accepted.load(Ordering::Relaxed),
            tracker.received,
            tracker.duplicates,
        )),
        latency: (!histogram.is_empty()).then(|| summarize(&histogram)),
        latency_distribution: distribution(&histogram),
        connect: Some(connect),
        errors,
        samples,
        nodes,
        redis,
        ..Summary::default()
    })
}
