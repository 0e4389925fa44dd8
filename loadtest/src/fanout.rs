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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Sources, Ws};
use crate::env::{micros_since, Counters, Env, Frame, Latencies, Sampler};
use crate::recover::{self, Acked, Counts, RecoverStats, Seen, Tracker};
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
}

/// State shared by the publishers and subscribers of a run (the churn
/// scenario's `--recover` publishers use it too).
pub(crate) struct Shared {
    t0: Instant,
    latencies: Arc<Latencies>,
    counters: Arc<Counters>,
    /// Channel k is `{prefix}{k}`.
    prefix: &'static str,
    /// Accepted publishes per channel.
    accepted: Vec<AtomicU64>,
    pub(crate) publish_errors: AtomicU64,
    last_delivery_us: AtomicU64,
    pub(crate) errors: Mutex<Vec<String>>,
    /// The acknowledged offsets (`--recover`).
    pub(crate) acked: Option<Acked>,
    recover: Option<Recovering>,
}

/// What recovering subscribers share.
struct Recovering {
    stats: RecoverStats,
    nodes: Vec<String>,
    sources: Arc<Sources>,
    /// Per subscriber: the offset it has got to (u64::MAX: not subscribed).
    last_seen: Vec<AtomicU64>,
    /// Per subscriber: drop your connection now.
    drops: Vec<Notify>,
    /// Time away after a drop.
    away: Duration,
}

impl Shared {
    pub(crate) fn new(t0: Instant, channels: usize, prefix: &'static str, acked: bool) -> Shared {
        Shared {
            t0,
            latencies: Arc::new(Latencies::default()),
            counters: Arc::new(Counters::default()),
            prefix,
            accepted: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            publish_errors: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            acked: acked.then(|| Acked::new(channels)),
            recover: None,
        }
    }

    pub(crate) fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(e);
        }
    }

    pub(crate) fn channel(&self, k: usize) -> String {
        format!("{}{k}", self.prefix)
    }

    /// A recovering subscriber got a new message (live or replayed).
    fn on_new(&self, i: usize, frame: &Frame, seen: &Seen) {
        let (Seen::Live(offset) | Seen::Replayed(offset)) = *seen else {
            return;
        };
        let now = micros_since(self.t0);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        self.last_delivery_us.fetch_max(now, Ordering::Relaxed);
        if let Some(rec) = &self.recover {
            rec.last_seen[i].store(offset, Ordering::Relaxed);
        }
        // Replayed messages were late by design: their latency is the
        // recovery's, measured separately.
        if let (Seen::Live(_), Some(stamp)) = (seen, &frame.data) {
            self.latencies.record(i, now.saturating_sub(stamp.t));
        }
    }
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
pub(crate) async fn publisher(
    ws: Ws,
    j: usize,
    p: FanoutParams,
    shared: Arc<Shared>,
    start: Instant,
) -> u64 {
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
                    let k = (id + j) % channels;
                    shared.accepted[k].fetch_add(1, Ordering::Relaxed);
                    if let Some(acked) = &shared.acked {
                        match (v["offset"].as_u64(), v["epoch"].as_str()) {
                            (Some(offset), Some(epoch)) => acked.record(k, epoch, offset),
                            _ => shared.error(format!("publish reply without a position: {v}")),
                        }
                    }
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
            shared.channel(k),
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

/// A `--recover` subscriber: reads its channel, and when its connection
/// ends (or it is told to drop it) connects again — to the next node —
/// and resumes with `subscribe {since}`, until stopped.
async fn recovering_subscriber(
    mut ws: Ws,
    i: usize,
    mut tracker: Tracker,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Tracker {
    let rec = shared.recover.as_ref().expect("recovering run");
    let user = format!("sub{i}");
    let mut attempts = 0usize;
    loop {
        let dropped = loop {
            let msg = tokio::select! {
                msg = ws.next() => msg,
                _ = rec.drops[i].notified() => break true,
                _ = stop.changed() => {
                    shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
                    return tracker;
                }
            };
            match msg {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                        continue;
                    };
                    let seen = tracker.on_frame(&frame, &rec.stats);
                    shared.on_new(i, &frame, &seen);
                }
                Some(Ok(Message::Close(frame))) => {
                    shared.error(format!("subscriber closed by server: {frame:?}"));
                    break false;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.error(format!("subscriber: {e}"));
                    break false;
                }
                None => break false,
            }
        };
        drop(ws);
        shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
        let counter = if dropped {
            &rec.stats.dropped
        } else {
            &rec.stats.connection_ends
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if dropped && !rec.away.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(rec.away) => {}
                _ = stop.changed() => return tracker,
            }
        }
        // The recovery time runs from here.
        let lost_at = Instant::now();
        ws = loop {
            attempts += 1;
            let url =
                client::with_query(&rec.nodes[(i + attempts) % rec.nodes.len()], "user", &user);
            let attempt = async {
                let (mut ws, _) = client::connect(&url, &rec.sources).await?;
                recover::subscribe(
                    &mut ws,
                    1,
                    &mut tracker,
                    Some(lost_at),
                    &rec.stats,
                    |f, seen| shared.on_new(i, f, seen),
                )
                .await?;
                anyhow::Ok(ws)
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.changed() => return tracker,
            };
            match result {
                Ok(ws) => break ws,
                Err(e) => {
                    rec.stats.reconnect_errors.fetch_add(1, Ordering::Relaxed);
                    shared.error(format!("reconnect {user}: {e:#}"));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.changed() => return tracker,
                    }
                }
            }
        };
        if let Some((_, offset)) = tracker.ledger.position() {
            rec.last_seen[i].store(*offset, Ordering::Relaxed);
        }
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    }
}

/// Drop `fraction` of the subscribers' connections every `every`, one at a
/// time at even intervals, round-robin, from `start` until `end`.
fn spawn_dropper(
    shared: Arc<Shared>,
    ids: Vec<usize>,
    every: Duration,
    fraction: f64,
    start: Instant,
    end: Instant,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(rec) = shared.recover.as_ref().filter(|_| !ids.is_empty()) else {
            return;
        };
        let per_round = ((fraction * ids.len() as f64).ceil() as usize).clamp(1, ids.len());
        let gap = every.div_f64(per_round as f64);
        let mut n = 0usize;
        loop {
            let at = start + gap * (n as u32 + 1);
            if at >= end {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            rec.drops[ids[n % ids.len()]].notify_one();
            n += 1;
        }
    })
}

enum Subscriber {
    Plain(JoinHandle<SequenceTracker>),
    Recovering(usize, JoinHandle<Tracker>),
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
    let t0 = Instant::now();
    let started_at_ms = crate::env::unix_ms();
    let mut shared = Shared::new(t0, p.channels, "lt", p.recover);
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
    for (i, mut ws) in subs {
        let k = i % p.channels;
        let result = match &shared.recover {
            Some(rec) => {
                // Subscribed before anything is published: owed every message.
                let mut tracker = Tracker::new(shared.channel(k), true);
                let sub = recover::subscribe(&mut ws, 1, &mut tracker, None, &rec.stats, |f, s| {
                    shared.on_new(i, f, s)
                });
                sub.await.map(|()| {
                    let at = tracker.ledger.position().map_or(0, |p| p.1);
                    rec.last_seen[i].store(at, Ordering::Relaxed);
                    let task =
                        recovering_subscriber(ws, i, tracker, shared.clone(), stop_rx.clone());
                    Subscriber::Recovering(k, tokio::spawn(task))
                })
            }
            None => {
                let frame =
                    serde_json::json!({"type": "subscribe", "id": 1, "channel": shared.channel(k)});
                client::request(&mut ws, frame).await.map(|_| {
                    let task = subscriber(ws, i, shared.clone(), stop_rx.clone());
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
        .map(|(j, (_, ws))| tokio::spawn(publisher(ws, j, p.clone(), shared.clone(), start)))
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
    let (samples, nodes) = sampler.stop();

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
            Some(rec.stats.figures(&counts)),
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
        metrics: (!env.metrics_urls.is_empty()).then(|| crate::sampler::deltas(&before, &after)),
        recovery,
    })
}
