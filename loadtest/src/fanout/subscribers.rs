//! Fanout's subscribers: the plain one, which checks sequence numbers, and
//! the `--recover` one, which reconnects and resumes from its position;
//! plus the dropper that ends recovering subscribers' connections on purpose.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::Shared;
use crate::client::{self, Ws};
use crate::env::{micros_since, Frame};
use crate::recover::{self, Tracker};
use crate::stats::SequenceTracker;

pub(super) async fn subscriber(
    mut ws: Ws,
    shard: usize,
    node: String,
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
                let Some(stamp) = &frame.data else { continue };
                shared.latencies.record(shard, now.saturating_sub(stamp.t));
                shared.traced(&frame, now, &node);
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

/// A `--recover` subscriber, connected to `node`: reads its channel, and
/// when its connection ends (or it is told to drop it) connects again — to
/// the next node — and resumes with `subscribe {since}`, until stopped.
pub(super) async fn recovering_subscriber(
    mut ws: Ws,
    i: usize,
    mut node: String,
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
                    shared.on_new(i, &node, &frame, &seen);
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
                let (mut ws, welcome) = client::connect(&url, &rec.sources).await?;
                let at = client::node_of(&welcome, &url);
                recover::subscribe(
                    &mut ws,
                    1,
                    &mut tracker,
                    Some(lost_at),
                    &rec.stats,
                    |f, seen| shared.on_new(i, &at, f, seen),
                )
                .await?;
                anyhow::Ok((ws, at))
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.changed() => return tracker,
            };
            match result {
                Ok((ws, at)) => {
                    node = at;
                    break ws;
                }
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
pub(super) fn spawn_dropper(
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

pub(super) enum Subscriber {
    Plain(JoinHandle<SequenceTracker>),
    Recovering(usize, JoinHandle<Tracker>),
}
