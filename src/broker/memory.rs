//! The in-process broker: the single-node default and the reference the
//! Redis broker is tested against. Publishing dispatches straight into the
//! local hub.
//!
//! Each channel has a stream — epoch, last offset, the history ring, the
//! idempotency keys — behind its own mutex, held while the frame is
//! dispatched so that local delivery order equals offset order even with
//! publishers on several worker threads, and so that a history read sees
//! exactly the messages delivered before it. Lock order is stream → hub;
//! `unsubscribe` (called under the hub lock) touches no stream.
//!
//! A stream is dropped once nobody listens and it keeps nothing (its
//! history expired or was never kept, no idempotency key is live): at the
//! publish that finds it so, or by a sweep every [`SWEEP_EVERY`] operations.
//! The next publish then starts a new epoch, which tells clients exactly that.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytestring::ByteString;
use futures_util::future::{ready, BoxFuture, FutureExt};

use super::{Broker, BrokerError, History, HistoryQuery, Notice, Position, Publication};
use crate::hub::Hub;
use crate::metrics;
use crate::protocol::new_epoch;
use crate::telemetry;
use crate::topic::Topic;

/// Publishes and history reads between two sweeps of idle streams.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug)]
struct Stream {
    epoch: String,
    offset: u64,
    /// The newest messages, oldest first, at most the namespace's `history_size`.
    history: VecDeque<(u64, ByteString)>,
    /// When the history goes (`history_ttl` after the last publish).
    history_expires: Option<Instant>,
    /// Idempotency key -> (the position it got, when it is forgotten).
    keys: HashMap<String, (Position, Instant)>,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            epoch: new_epoch(),
            offset: 0,
            history: VecDeque::new(),
            history_expires: None,
            keys: HashMap::new(),
        }
    }

    /// Drop what has expired; true if nothing is left worth keeping.
    fn expire(&mut self, now: Instant) -> bool {
        if self.history_expires.is_some_and(|at| at <= now) {
            self.history.clear();
            self.history_expires = None;
        }
        self.keys.retain(|_, (_, until)| *until > now);
        self.history.is_empty() && self.keys.is_empty()
    }

    fn top(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

pub struct MemoryBroker {
    hub: Arc<Hub>,
    node_id: String,
    streams: Mutex<HashMap<String, Arc<Mutex<Stream>>>>,
    metrics: Arc<metrics::Metrics>,
    operations: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>, metrics: Arc<metrics::Metrics>, node_id: String) -> Self {
        MemoryBroker {
            node_id,
            hub,
            streams: Mutex::default(),
            metrics,
            operations: AtomicU64::new(0),
        }
    }

    fn stream(&self, channel: &str) -> Arc<Mutex<Stream>> {
        if self.operations.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        lock(&self.streams)
            .entry(channel.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Stream::new())))
            .clone()
    }

    /// Drop the streams nobody listens to that keep nothing.
    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.streams).retain(|channel, stream| !self.idle(channel, stream, now));
    }

    /// Forget a stream that nobody listens to and that keeps nothing, or
    /// publishing to ever-new channel names would grow the map without bound.
    fn forget_if_idle(&self, channel: &str) {
        let mut streams = lock(&self.streams);
        if streams
            .get(channel)
            .is_some_and(|stream| self.idle(channel, stream, Instant::now()))
        {
            streams.remove(channel);
        }
    }

    /// Nobody listens to the channel and its stream keeps nothing (once its
    /// expired history and keys are dropped). A stream busy right now is
    /// not idle: the next sweep looks again.
    fn idle(&self, channel: &str, stream: &Mutex<Stream>, now: Instant) -> bool {
        stream.try_lock().is_ok_and(|mut s| s.expire(now))
            && !self.hub.has_members(&Topic::Channel(channel.to_owned()))
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(&'a self, p: Publication<'a>) -> BoxFuture<'a, Result<Position, BrokerError>> {
        let stream = self.stream(p.channel);
        let mut s = lock(&stream);
        let now = Instant::now();
        s.expire(now);
        if let Some(first) = p.idempotency.and_then(|i| s.keys.get(i.key)) {
            return ready(Ok(first.0.clone())).boxed();
        }
        s.offset += 1;
        let offset = s.offset;
        let frame = ByteString::from(p.parts.assemble(offset, &s.epoch));
        metrics::inc(&self.metrics.broker_messages_in);
        let topic = Topic::Channel(p.channel.to_owned());
        let span = telemetry::deliver_span(p.channel, &self.node_id, frame.len(), p.traceparent);
        let recipients =
            span.in_scope(|| self.hub.dispatch(&topic, &frame, Some((&s.epoch, offset))));
        span.record("recipients", recipients);
        if let Some(limits) = p.history {
            if s.history.len() >= limits.size {
                s.history.pop_front();
            }
            s.history.push_back((offset, frame));
            s.history_expires = Some(now + limits.ttl);
        }
        let position = s.top();
        if let Some(i) = p.idempotency {
            s.keys
                .insert(i.key.to_owned(), (position.clone(), now + i.window));
        }
        drop(s);
        if recipients == 0 {
            self.forget_if_idle(p.channel);
        }
        ready(Ok(position)).boxed()
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        let stream = self.stream(channel);
        let mut s = lock(&stream);
        s.expire(Instant::now());
        let after = query.since.unwrap_or(0);
        let newer = s.history.iter().filter(|(offset, _)| *offset > after);
        let messages: Vec<_> = if query.reverse {
            newer.rev().take(query.limit).cloned().collect()
        } else {
            newer.take(query.limit).cloned().collect()
        };
        let history = History {
            top: s.top(),
            messages,
        };
        ready(Ok(history)).boxed()
    }

    fn notify<'a>(&'a self, notice: Notice<'a>) -> BoxFuture<'a, Result<(), BrokerError>> {
        match notice {
            Notice::Direct { user, frame } => {
                metrics::inc(&self.metrics.broker_messages_in);
                self.hub.dispatch(
                    &Topic::User(user.to_owned()),
                    &ByteString::from(frame),
                    None,
                );
            }
            Notice::Event { channel, frame } => {
                self.hub.dispatch(
                    &Topic::Channel(channel.to_owned()),
                    &ByteString::from(frame),
                    None,
                );
            }
            Notice::Disconnect { user, reason } => {
                self.hub.close_user(user, reason);
            }
        }
        ready(Ok(())).boxed()
    }

    fn subscribe<'a>(&'a self, _topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>> {
        ready(Ok(())).boxed()
    }

    /// Nothing to do: the stream outlives its subscribers while it keeps
    /// history (see the sweep).
    fn unsubscribe(&self, _topic: &Topic) {}

    fn is_healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Forever" within a test: nothing expires.
    const LONG: std::time::Duration = std::time::Duration::from_secs(3600);
    use crate::config::HistoryLimits;
    use crate::metrics::Metrics;
    use crate::protocol::MessageParts;

    fn broker() -> MemoryBroker {
        let metrics = Arc::new(Metrics::default());
        MemoryBroker::new(Arc::new(Hub::new(metrics.clone())), metrics, "n".into())
    }

    fn publication<'a>(
        channel: &'a str,
        n: u32,
        size: usize,
        key: Option<&'a str>,
    ) -> Publication<'a> {
        let data = serde_json::value::to_raw_value(&n).unwrap();
        Publication {
            channel,
            parts: MessageParts::new(channel, "u", &data),
            traceparent: None,
            history: (size > 0).then_some(HistoryLimits { size, ttl: LONG }),
            idempotency: key.map(|key| super::super::Idempotency { key, window: LONG }),
        }
    }

    fn offsets(h: &History) -> Vec<u64> {
        h.messages.iter().map(|(o, _)| *o).collect()
    }

    #[tokio::test]
    async fn history_keeps_the_newest_and_reads_both_ways() {
        let b = broker();
        for n in 1..=5 {
            b.publish(publication("c", n, 3, None)).await.unwrap();
        }
        let q = |since, limit, reverse| HistoryQuery {
            since,
            limit,
            reverse,
        };
        let all = b.history("c", q(None, 10, false)).await.unwrap();
        assert_eq!((all.top.offset, offsets(&all)), (5, vec![3, 4, 5]));
        assert_eq!(
            offsets(&b.history("c", q(Some(3), 10, false)).await.unwrap()),
            vec![4, 5]
        );
        assert_eq!(
            offsets(&b.history("c", q(None, 2, true)).await.unwrap()),
            vec![5, 4]
        );
        assert_eq!(
            offsets(&b.history("c", q(None, 1, false)).await.unwrap()),
            vec![3]
        );
        // The top is kept though nobody listens, so positions stay valid.
        let again = b.history("c", q(Some(5), 10, false)).await.unwrap();
        assert_eq!((again.top, again.messages.len()), (all.top, 0));
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_publishes_nothing() {
        let b = broker();
        let first = b.publish(publication("c", 1, 10, Some("k"))).await.unwrap();
        let again = b.publish(publication("c", 2, 10, Some("k"))).await.unwrap();
        let other = b
            .publish(publication("c", 3, 10, Some("k2")))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(other.offset, first.offset + 1);
        let h = b
            .history(
                "c",
                HistoryQuery {
                    since: None,
                    limit: 10,
                    reverse: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(offsets(&h), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_channel_without_history_or_listeners_is_forgotten() {
        let b = broker();
        let first = b.publish(publication("c", 1, 0, None)).await.unwrap();
        let second = b.publish(publication("c", 2, 0, None)).await.unwrap();
        assert_ne!(
            first.epoch, second.epoch,
            "a new epoch tells clients positions reset"
        );
        assert!(lock(&b.streams).is_empty());
    }
}
