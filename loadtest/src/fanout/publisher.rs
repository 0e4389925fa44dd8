//! A fanout publisher: sends on an open-loop schedule and reads the
//! `publish` replies on the side, counting accepted messages per channel
//! and recording the acknowledged offsets for `--recover`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{FanoutParams, Shared};
use crate::client::Ws;
use crate::traces::{self, TRACE_FIELD_LEN};

/// Publish on schedule; returns how many frames were sent. With
/// `--trace-fraction`, that share of them (at random) carries a fresh
/// sampled `traceparent`, and the trace id in `data` in place of as much
/// padding (see [`crate::traces`]).
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
    let mut tracing = shared.traces.as_ref().map(|t| {
        let pad = "x".repeat(p.payload.saturating_sub(TRACE_FIELD_LEN));
        (t, fastrand::Rng::new(), pad)
    });
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
        let (channel, s) = (shared.channel(k), seqs[k]);
        let traced = tracing.as_mut().and_then(|(traces, rng, pad)| {
            let traced = rng.f64() < traces.fraction();
            traced.then(|| (*traces, traces::traceparent(rng), pad.as_str()))
        });
        let frame = match &traced {
            Some((_, (id, tp), pad)) => format!(
                r#"{{"type":"publish","id":{n},"channel":"{channel}","traceparent":"{tp}","data":{{"p":{j},"s":{s},"t":{t},"tr":"{id}","pad":"{pad}"}}}}"#
            ),
            None => format!(
                r#"{{"type":"publish","id":{n},"channel":"{channel}","data":{{"p":{j},"s":{s},"t":{t},"pad":"{pad}"}}}}"#
            ),
        };
        seqs[k] += 1;
        if let Err(e) = sink.send(Message::text(frame)).await {
            shared.error(format!("publisher {j}: {e}"));
            break;
        }
        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        if let Some((traces, ..)) = traced {
            traces.published();
        }
        n += 1;
    }
    let _ = sent_tx.send(n);
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    n
}
