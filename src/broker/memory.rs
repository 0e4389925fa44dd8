//! The in-process broker: the single-node default and the reference the
//! Redis broker is tested against. Publishing dispatches straight into the
//! local hub.
//!
//! Offsets: each channel has a stream state (epoch, last offset) behind its
//! own mutex, held while the frame is dispatched so that local delivery order
//! equals offset order even with publishers on several worker threads. Lock
//! order is stream → hub; `unsubscribe` (called under the hub lock) only
//! touches the outer map, never a stream lock, so the two cannot deadlock.
//! A channel's state is dropped when its last subscriber leaves (or after a
//! publish nobody received): with no subscriber and no history there is
//! nothing to resume, and the next publish starts a new epoch, which tells
//! clients exactly that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytestring::ByteString;
use futures_util::future::{BoxFuture, FutureExt};

use super::{Broker, BrokerError, Notice, Publication, Published};
use crate::hub::Hub;
use crate::metrics;
use crate::protocol::new_epoch;
use crate::telemetry;
use crate::topic::Topic;

#[derive(Debug)]
struct Stream {
    epoch: String,
    offset: u64,
}

pub struct MemoryBroker {
    hub: Arc<Hub>,
    node_id: String,
    streams: Mutex<HashMap<String, Arc<Mutex<Stream>>>>,
    metrics: Arc<metrics::Metrics>,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>, metrics: Arc<metrics::Metrics>, node_id: String) -> Self {
        MemoryBroker {
            node_id,
            hub,
            streams: Mutex::default(),
            metrics,
        }
    }

    fn stream(&self, channel: &str) -> Arc<Mutex<Stream>> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .entry(channel.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Stream {
                    epoch: new_epoch(),
                    offset: 0,
                }))
            })
            .clone()
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(&'a self, p: Publication<'a>) -> BoxFuture<'a, Result<Published, BrokerError>> {
        let stream = self.stream(p.channel);
        let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
        s.offset += 1;
        let frame = ByteString::from(p.parts.assemble(s.offset, &s.epoch));
        metrics::inc(&self.metrics.broker_messages_in);
        let topic = Topic::Channel(p.channel.to_owned());
        let span = telemetry::deliver_span(p.channel, &self.node_id, frame.len(), p.traceparent);
        let recipients = span.in_scope(|| self.hub.dispatch(&topic, &frame));
        span.record("recipients", recipients);
        let published = Published {
            offset: s.offset,
            epoch: s.epoch.clone(),
        };
        drop(s);
        if !self.hub.has_members(&topic) {
            // Nobody listens: keep no state, or publishing to ever-new
            // channel names would grow this map without bound.
            self.unsubscribe(&topic);
        }
        futures_util::future::ready(Ok(published)).boxed()
    }

    fn notify<'a>(&'a self, notice: Notice<'a>) -> BoxFuture<'a, Result<(), BrokerError>> {
        match notice {
            Notice::Direct { user, frame } => {
                metrics::inc(&self.metrics.broker_messages_in);
                self.hub
                    .dispatch(&Topic::User(user.to_owned()), &ByteString::from(frame));
            }
            Notice::Event { channel, frame } => {
                self.hub.dispatch(
                    &Topic::Channel(channel.to_owned()),
                    &ByteString::from(frame),
                );
            }
            Notice::Disconnect { user, reason } => {
                self.hub.close_user(user, reason);
            }
        }
        futures_util::future::ready(Ok(())).boxed()
    }

    fn subscribe<'a>(&'a self, _topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn unsubscribe(&self, topic: &Topic) {
        if let Topic::Channel(channel) = topic {
            self.streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(channel);
        }
    }

    fn is_healthy(&self) -> bool {
        true
    }
}
