//! A fanout publisher: sends on an open-loop schedule and reads the
//! `publish` replies on the side, counting accepted messages per channel
//! and recording the acknowledged offsets for `--recover`. With
//! `--recover` a publisher whose connection ends (a node drained in a
//! rolling update) connects again — to the next node — and carries on
//! with its schedule; what it sent without getting a reply is not
//! acknowledged, so it is owed to nobody.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{FanoutParams, Shared};
use crate::client::{self, Ws};
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
    let end = start + Duration::from_secs_f64(p.duration_s);
    let mut schedule = Schedule {
        period: Duration::from_secs_f64(p.publishers as f64 / p.rate),
        end,
        pad: "x".repeat(p.payload),
        trace_pad: "x".repeat(p.payload.saturating_sub(TRACE_FIELD_LEN)),
        rng: fastrand::Rng::new(),
        seqs: vec![0u64; p.channels],
        n: 0,
    };
    let mut ws = Some(ws);
    let mut attempts = 0usize;
    loop {
        let conn = match ws.take() {
            Some(ws) => ws,
            None => match redial(j, &shared, end, &mut attempts).await {
                Some(ws) => ws,
                None => break,
            },
        };
        if session(conn, j, &p, &shared, start, &mut schedule).await || shared.redial.is_none() {
            break;
        }
    }
    schedule.n
}

/// Where a publisher is in its schedule, across its connections.
struct Schedule {
    period: Duration,
    end: Instant,
    pad: String,
    /// The padding of a traced publish (its trace id takes the rest).
    trace_pad: String,
    rng: fastrand::Rng,
    /// Next sequence number per channel.
    seqs: Vec<u64>,
    /// Frames sent so far (the next publish's id).
    n: u64,
}

/// Publish on one connection until the schedule ends (true) or the
/// connection does (false).
async fn session(
    ws: Ws,
    j: usize,
    p: &FanoutParams,
    shared: &Arc<Shared>,
    start: Instant,
    s: &mut Schedule,
) -> bool {
    let (mut sink, mut stream) = ws.split();
    let channels = p.channels;
    let (sent_tx, sent_rx) = watch::channel(u64::MAX);
    // Replies come in order; the id says which channel the publish went to.
    let mut reader = {
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
    let mut sent = 0u64;
    let mut ended = false;
    let finished = loop {
        // Stagger publishers across the period so they do not fire together.
        let intended = start
            + s.period
                .mul_f64(s.n as f64 + j as f64 / p.publishers as f64);
        if intended >= s.end {
            break true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(intended.into()) => {}
            _ = &mut reader => {
                ended = true;
                break false;
            }
        }
        let k = (s.n as usize + j) % channels;
        let t = intended.duration_since(shared.t0).as_micros();
        let (n, channel, seq) = (s.n, shared.channel(k), s.seqs[k]);
        let traced = match &shared.traces {
            Some(t) if s.rng.f64() < t.fraction() => Some((t, traces::traceparent(&mut s.rng))),
            _ => None,
        };
        let frame = match &traced {
            Some((_, (id, tp))) => format!(
                r#"{{"type":"publish","id":{n},"channel":"{channel}","traceparent":"{tp}","data":{{"p":{j},"s":{seq},"t":{t},"tr":"{id}","pad":"{}"}}}}"#,
                s.trace_pad
            ),
            None => format!(
                r#"{{"type":"publish","id":{n},"channel":"{channel}","data":{{"p":{j},"s":{seq},"t":{t},"pad":"{}"}}}}"#,
                s.pad
            ),
        };
        if let Err(e) = sink.send(Message::text(frame)).await {
            shared.error(format!("publisher {j}: {e}"));
            break false;
        }
        s.seqs[k] += 1;
        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        if let Some((traces, _)) = traced {
            traces.published();
        }
        s.n += 1;
        sent += 1;
    };
    let _ = sent_tx.send(sent);
    if !ended {
        // The replies still due (a connection that ended gives up at once).
        let wait = if finished { 30 } else { 2 };
        let _ = tokio::time::timeout(Duration::from_secs(wait), &mut reader).await;
        reader.abort();
    }
    finished
}

/// Connect a publisher again (`--recover`), to the next node, retrying
/// every 100 ms until the schedule's end; None once it has passed.
async fn redial(j: usize, shared: &Shared, end: Instant, attempts: &mut usize) -> Option<Ws> {
    let redial = shared.redial.as_ref()?;
    let user = format!("{}{j}", redial.user);
    while Instant::now() < end {
        *attempts += 1;
        let node = &redial.nodes[(j + *attempts) % redial.nodes.len()];
        match client::connect(&client::with_query(node, "user", &user), &redial.sources).await {
            Ok((ws, _)) => {
                shared.publisher_reconnects.fetch_add(1, Ordering::Relaxed);
                return Some(ws);
            }
            Err(e) => {
                shared.error(format!("reconnect {user}: {e:#}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}
