//! The broker seam: how a node hands a message to every node (itself
//! included) that has subscribers for it.
//!
//! Two implementations share one small trait, as in socketioxide's adapter
//! and centrifuge's Broker: [`memory::MemoryBroker`] is the single-node
//! default and [`redis::RedisBroker`] is the cluster mode. Both deliver by
//! calling [`Hub::dispatch`](crate::hub::Hub::dispatch) with a frame that is
//! already encoded, so fan-out never re-serialises.
//!
//! The hub decides *when* a topic is needed (first local subscriber) and
//! when it is not (last one gone, after a short delay); the broker only
//! follows: `subscribe` resolves once messages for the topic will arrive,
//! `unsubscribe` is a request that takes effect asynchronously.

pub mod envelope;
pub mod memory;
pub mod redis;

use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::BoxFuture;

use crate::config::HistoryLimits;
use crate::disconnect::Disconnect;
use crate::protocol::MessageParts;
use crate::topic::Topic;

/// Why the broker could not do something. The backend's own error is kept
/// as the source, for logs; clients see `broker_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// This node's subscriber connection is down or resubscribing: a
    /// publish now could be acknowledged and reach nobody here.
    #[error("broker unavailable: the subscriber connection to Redis is not (yet) resubscribed")]
    NotResubscribed,
    #[error("broker unavailable: the subscription was dropped")]
    SubscriptionDropped,
}

impl BrokerError {
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BrokerError::Unavailable(source.into())
    }
}

/// A place in a channel's stream: an offset within an epoch. Where a
/// published message landed, or the newest message of a channel (offset 0:
/// none yet in this epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// A message on its way to a channel.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    pub channel: &'a str,
    /// The `message` frame, split around the offset and epoch the broker assigns.
    pub parts: MessageParts,
    /// W3C trace context of the publish, carried to every delivering node.
    pub traceparent: Option<&'a str>,
    /// Keep the message in the channel's history, within these bounds.
    pub history: Option<HistoryLimits>,
    /// Publish at most once per key and channel within the window: a
    /// repeat gets the first publish's position and publishes nothing.
    pub idempotency: Option<Idempotency<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub window: Duration,
}

/// What to read from a channel's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages after this offset (None: from the oldest kept).
    pub since: Option<u64>,
    /// At most this many messages.
    pub limit: usize,
    /// Newest first (from the newest kept, down to `since`).
    pub reverse: bool,
}

/// A read of a channel's history: its current position and the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub top: Position,
    /// Encoded `message` frames with their offsets, in the query's order.
    pub messages: Vec<(u64, ByteString)>,
}

/// What travels between nodes besides a channel's numbered messages.
#[derive(Debug, Clone)]
pub enum Notice<'a> {
    /// An encoded `direct` frame for every connection of `user`.
    Direct { user: &'a str, frame: String },
    /// An encoded frame for a channel's subscribers that takes no offset
    /// (`join` / `leave` events).
    Event { channel: &'a str, frame: String },
    /// Close every connection of `user` with `reason`.
    Disconnect { user: &'a str, reason: Disconnect },
}

pub trait Broker: Send + Sync + 'static {
    /// Assign the next offset of the channel and deliver to every subscribed node.
    fn publish<'a>(
        &'a self,
        publication: Publication<'a>,
    ) -> BoxFuture<'a, Result<Position, BrokerError>>;

    /// A channel's position and the messages of its history the query
    /// asks for. A channel never published to gets a position (offset 0)
    /// in the epoch its first message will have.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>>;

    /// Deliver a notice, outside any channel's offset stream, to every
    /// node with local members of its topic.
    fn notify<'a>(&'a self, notice: Notice<'a>) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Resolve once messages for `topic` will reach this node's hub.
    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Stop receiving `topic`. Called by the hub under its lock, so it must
    /// not block and must not call back into the hub.
    fn unsubscribe(&self, topic: &Topic);

    /// Whether the broker can currently publish and deliver (for `/readyz`).
    fn is_healthy(&self) -> bool;

    /// Stop background tasks (used on shutdown).
    fn shutdown(&self) {}
}
