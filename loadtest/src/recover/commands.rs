//! The wire side of recovery: `subscribe` (with `since` when there is a
//! position), receiving and `unsubscribe` on one connection, every frame
//! read on the way going through the channel's [`Tracker`].

use std::time::Instant;

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::events::{inc, RecoverStats};
use super::tracker::{Seen, Tracker};
use crate::client::Ws;
use crate::env::Frame;

/// Subscribe `tracker`'s channel — with `since` when it has a position —
/// and read frames up to the reply. `reconnect` is when the connection
/// this replaces was lost (None for a first subscription). Messages that
/// arrive ahead of the reply go through `tracker` and `on_new` as usual.
pub async fn subscribe(
    ws: &mut Ws,
    id: u64,
    tracker: &mut Tracker,
    reconnect: Option<Instant>,
    stats: &RecoverStats,
    on_new: impl FnMut(&Frame, &Seen),
) -> anyhow::Result<()> {
    let since = tracker.ledger.position().cloned();
    let mut cmd = serde_json::json!({"type": "subscribe", "id": id, "channel": tracker.channel});
    match &since {
        Some((epoch, offset)) => {
            cmd["since"] = serde_json::json!({"offset": offset, "epoch": epoch});
            inc(&stats.with_since);
        }
        None if reconnect.is_some() => {
            inc(&stats.without_position);
            tracker.ledger.lost_track();
        }
        None => {}
    }
    if reconnect.is_some() {
        inc(&stats.reconnects);
    }
    let on_reply = |tracker: &mut Tracker, reply: &Frame| {
        tracker.on_subscribed(reply, since, reconnect, stats)
    };
    request(ws, id, cmd, tracker, stats, on_new, on_reply).await
}

/// Send `cmd` (a `subscribe` or `unsubscribe` of `tracker`'s channel) and
/// read frames up to its reply, which goes to `on_reply`; a refusal is an
/// error. Messages that arrive ahead of the reply go through `tracker` and
/// `on_new` as usual.
async fn request(
    ws: &mut Ws,
    id: u64,
    cmd: serde_json::Value,
    tracker: &mut Tracker,
    stats: &RecoverStats,
    mut on_new: impl FnMut(&Frame, &Seen),
    on_reply: impl FnOnce(&mut Tracker, &Frame),
) -> anyhow::Result<()> {
    ws.send(Message::text(cmd.to_string())).await?;
    loop {
        let text = next_text(ws).await?;
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        if frame.kind == "reply" && frame.id == Some(id) {
            if frame.ok != Some(true) {
                let kind = cmd["type"].as_str().unwrap_or_default();
                bail!("{kind} {}: {}", tracker.channel, text.as_str());
            }
            on_reply(tracker, &frame);
            return Ok(());
        }
        let seen = tracker.on_frame(&frame, stats);
        on_new(&frame, &seen);
    }
}

/// The next text frame, parsed; pings are answered while reading.
async fn next_text(ws: &mut Ws) -> anyhow::Result<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(frame))) => bail!("closed by server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Read `tracker`'s channel for at least `hold`, and on until a recovery's
/// replay is complete (at most `cap`); every frame read also goes to `on_new`.
pub async fn receive(
    ws: &mut Ws,
    tracker: &mut Tracker,
    stats: &RecoverStats,
    hold: std::time::Duration,
    cap: std::time::Duration,
    mut on_new: impl FnMut(&Frame, &Seen),
) -> anyhow::Result<()> {
    let now = Instant::now();
    let (until, cap) = (now + hold, now + cap.max(hold));
    loop {
        let deadline = if tracker.replaying() { cap } else { until };
        let Ok(text) = tokio::time::timeout_at(deadline.into(), next_text(ws)).await else {
            if Instant::now() >= deadline {
                return Ok(());
            }
            continue;
        };
        if let Ok(frame) = serde_json::from_str::<Frame>(text?.as_str()) {
            let seen = tracker.on_frame(&frame, stats);
            on_new(&frame, &seen);
        }
    }
}

/// Unsubscribe `tracker`'s channel, taking in the messages that arrive
/// before the reply.
pub async fn unsubscribe(
    ws: &mut Ws,
    id: u64,
    tracker: &mut Tracker,
    stats: &RecoverStats,
) -> anyhow::Result<()> {
    let cmd = serde_json::json!({"type": "unsubscribe", "id": id, "channel": tracker.channel});
    request(ws, id, cmd, tracker, stats, |_, _| {}, |_, _| {}).await
}
