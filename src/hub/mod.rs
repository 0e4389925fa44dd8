//! The node-local registry: which local connections listen to which topic,
//! and the bounded outbox of each.
//!
//! Nothing here awaits or does I/O, and no lock is held across an `.await`:
//! fan-out is a `try_send` of a shared, already-encoded frame (`WireFrame`:
//! the whole WebSocket frame, encoded once per message per node; clones are
//! reference-count bumps) into every member's outbox. A full
//! outbox is the slow-consumer policy: that connection is told to close and
//! the fan-out carries on, so one stuck client never stalls the others or
//! the broker reader that called us.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};

use bytestring::ByteString;
use futures_util::task::AtomicWaker;

use crate::disconnect::Disconnect;
use crate::metrics::{self, Metrics};
use crate::outbox::{Offer, Outbox};
use crate::presence::ClientInfo;
use crate::socket::WireFrame;
use crate::topic::Topic;

mod slot;

pub use slot::At;
use slot::{Catch, Slot};

pub type ConnId = Arc<str>;

/// A one-shot "close this connection" signal that any thread can raise
/// without knowing the connection task. The first reason wins.
#[derive(Debug, Default)]
pub struct Closer {
    reason: OnceLock<Disconnect>,
    waker: AtomicWaker,
}

impl Closer {
    pub fn close(&self, reason: Disconnect) {
        if self.reason.set(reason).is_ok() {
            self.waker.wake();
        }
    }

    /// The reason, once `close` was called. (Polled by the connection on
    /// every turn of its loop: no future to create, unlike a `Notify`.)
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        if let Some(reason) = self.reason.get() {
            return Poll::Ready(*reason);
        }
        self.waker.register(cx.waker());
        match self.reason.get() {
            Some(reason) => Poll::Ready(*reason),
            None => Poll::Pending,
        }
    }

    #[cfg(test)]
    pub async fn closed(&self) -> Disconnect {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }
}

/// What the hub needs to reach one connection.
#[derive(Debug, Clone)]
pub struct Member {
    pub outbox: Arc<Outbox>,
    pub closer: Arc<Closer>,
}

impl Member {
    /// Queue a frame; a full queue closes the connection as a slow consumer.
    /// Returns whether the frame was queued.
    pub fn offer(&self, frame: WireFrame, metrics: &Metrics) -> bool {
        match self.outbox.offer(frame) {
            Offer::Queued => true,
            Offer::Full => {
                if self.closer.reason.get().is_none() {
                    metrics::inc(&metrics.slow_consumer_closes);
                }
                self.closer.close(Disconnect::SlowConsumer);
                false
            }
            // The connection is already going away.
            Offer::Closed => false,
        }
    }
}

#[derive(Debug)]
struct ConnEntry {
    client: Arc<ClientInfo>,
    member: Member,
    topics: HashSet<Topic>,
}

/// What `unregister` leaves behind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unregistered {
    /// The connection's client info, if it was registered.
    pub client: Option<Arc<ClientInfo>>,
    /// Channels the connection was subscribed to.
    pub channels: Vec<String>,
    /// Topics no local connection listens to any more.
    pub emptied: Vec<Topic>,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<ConnId, ConnEntry>,
    topics: HashMap<Topic, HashMap<ConnId, Slot>>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("already subscribed")]
    AlreadySubscribed,
    #[error("not subscribed")]
    NotSubscribed,
    #[error("connection is gone")]
    UnknownConn,
}

#[derive(Debug)]
pub struct Hub {
    inner: RwLock<Inner>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Hub {
            inner: RwLock::default(),
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, conn: ConnId, client: Arc<ClientInfo>, member: Member) {
        self.write().conns.insert(
            conn,
            ConnEntry {
                client,
                member,
                topics: HashSet::new(),
            },
        );
    }

    /// Remove a connection and all its subscriptions.
    pub fn unregister(&self, conn: &ConnId) -> Unregistered {
        let mut inner = self.write();
        let Some(entry) = inner.conns.remove(conn) else {
            return Unregistered::default();
        };
        let mut out = Unregistered {
            client: Some(entry.client),
            ..Unregistered::default()
        };
        for topic in entry.topics {
            if let Some(members) = inner.topics.get_mut(&topic) {
                members.remove(conn);
                if members.is_empty() {
                    out.emptied.push(topic.clone());
                }
            }
            if let Topic::Channel(channel) = topic {
                out.channels.push(channel);
            }
        }
        out
    }

    /// Add a connection to a topic. Returns true if it is the first local member.
    pub fn add(&self, conn: &ConnId, topic: &Topic) -> Result<bool, HubError> {
        self.join(conn, topic, false)
    }

    /// Add a connection to a topic with its live frames held back until
    /// `release` (a subscription that recovers missed messages first).
    pub fn add_held(&self, conn: &ConnId, topic: &Topic) -> Result<bool, HubError> {
        self.join(conn, topic, true)
    }

    fn join(&self, conn: &ConnId, topic: &Topic, held: bool) -> Result<bool, HubError> {
        let mut inner = self.write();
        let inner = &mut *inner;
        let entry = inner.conns.get_mut(conn).ok_or(HubError::UnknownConn)?;
        if !entry.topics.insert(topic.clone()) {
            return Err(HubError::AlreadySubscribed);
        }
        let members = inner.topics.entry(topic.clone()).or_default();
        let slot = Slot {
            member: entry.member.clone(),
            catch: held.then(|| Mutex::new(Catch::Held(Vec::new()))),
        };
        members.insert(conn.clone(), slot);
        Ok(members.len() == 1)
    }

    /// End the hold of `add_held`: queue the held frames — those without a
    /// position, and those past `after` (the last message the client
    /// already has; None: all) — in order, and deliver live from now on,
    /// but for messages up to `after` that arrive late. One step under the
    /// lock, so no frame can slip between the held ones and the next live one.
    pub fn release(&self, conn: &ConnId, topic: &Topic, after: Option<At<'_>>) {
        let mut inner = self.write();
        let Some(slot) = inner.topics.get_mut(topic).and_then(|m| m.get_mut(conn)) else {
            return;
        };
        let delivered = slot.release(after, &self.metrics);
        metrics::add(&self.metrics.deliveries, delivered);
    }

    /// Remove a connection from a topic. Returns true if it was the last local member.
    pub fn remove(&self, conn: &ConnId, topic: &Topic) -> Result<bool, HubError> {
        let mut inner = self.write();
        let inner = &mut *inner;
        let entry = inner.conns.get_mut(conn).ok_or(HubError::UnknownConn)?;
        if !entry.topics.remove(topic) {
            return Err(HubError::NotSubscribed);
        }
        let members = inner.topics.get_mut(topic).ok_or(HubError::NotSubscribed)?;
        members.remove(conn);
        Ok(members.is_empty())
    }

    /// Drop the topic's entry if it still has no members, calling `on_release`
    /// under the lock so that a concurrent `add` cannot slip in between the
    /// check and the broker's unsubscribe request. `on_release` must not block
    /// or take the hub lock.
    pub fn release_if_empty(&self, topic: &Topic, on_release: impl FnOnce()) -> bool {
        let mut inner = self.write();
        match inner.topics.get(topic) {
            Some(members) if members.is_empty() => {
                inner.topics.remove(topic);
                on_release();
                true
            }
            _ => false,
        }
    }

    /// Queue a frame to every local member of a topic (held for a member
    /// that is recovering; `at` is the message's position, if it has one).
    /// Returns how many got it.
    pub fn dispatch(&self, topic: &Topic, frame: &ByteString, at: Option<At<'_>>) -> usize {
        let inner = self.read();
        let Some(members) = inner.topics.get(topic) else {
            return 0;
        };
        if members.is_empty() {
            return 0;
        }
        // The WebSocket frame is encoded here, once for every recipient.
        let frame = WireFrame::text(frame);
        let delivered = members
            .values()
            .filter(|slot| slot.offer(&frame, at, &self.metrics))
            .count();
        metrics::add(&self.metrics.deliveries, delivered as u64);
        delivered
    }

    /// Ask every connection to close (shutdown).
    pub fn close_all(&self, reason: Disconnect) {
        for entry in self.read().conns.values() {
            entry.member.closer.close(reason);
        }
    }

    /// The close signals of every local connection, to close them in
    /// batches without holding the lock in between.
    pub fn closers(&self) -> Vec<Arc<Closer>> {
        self.read()
            .conns
            .values()
            .map(|e| e.member.closer.clone())
            .collect()
    }

    /// Ask every local connection of a user to close. Returns how many.
    pub fn close_user(&self, user: &str, reason: Disconnect) -> usize {
        let inner = self.read();
        let Some(members) = inner.topics.get(&Topic::User(user.to_owned())) else {
            return 0;
        };
        for slot in members.values() {
            slot.member.closer.close(reason);
        }
        members.len()
    }

    pub fn is_subscribed(&self, conn: &ConnId, topic: &Topic) -> bool {
        self.read()
            .conns
            .get(conn)
            .is_some_and(|e| e.topics.contains(topic))
    }

    /// How many channels a connection is subscribed to.
    pub fn channels_of(&self, conn: &ConnId) -> usize {
        self.read().conns.get(conn).map_or(0, |e| {
            e.topics
                .iter()
                .filter(|t| matches!(t, Topic::Channel(_)))
                .count()
        })
    }

    pub fn has_members(&self, topic: &Topic) -> bool {
        self.read().topics.get(topic).is_some_and(|m| !m.is_empty())
    }

    pub fn client(&self, conn: &ConnId) -> Option<Arc<ClientInfo>> {
        self.read().conns.get(conn).map(|e| e.client.clone())
    }

    /// Every local connection with the channels it is subscribed to.
    pub fn snapshot(&self) -> Vec<(Arc<ClientInfo>, Vec<String>)> {
        self.read()
            .conns
            .values()
            .map(|e| {
                let channels = e
                    .topics
                    .iter()
                    .filter_map(|t| match t {
                        Topic::Channel(c) => Some(c.clone()),
                        Topic::User(_) => None,
                    })
                    .collect();
                (e.client.clone(), channels)
            })
            .collect()
    }

    pub fn connection_count(&self) -> usize {
        self.read().conns.len()
    }

    /// (channel subscriptions, channels with members) per namespace: the
    /// part of the channel name before its first `:` (`""` without one).
    pub fn namespace_counts(&self) -> BTreeMap<String, (usize, usize)> {
        let inner = self.read();
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (topic, members) in &inner.topics {
            if let Topic::Channel(channel) = topic {
                if !members.is_empty() {
                    let ns = channel.split_once(':').map_or("", |(ns, _)| ns);
                    let entry = counts.entry(ns.to_owned()).or_default();
                    entry.0 += members.len();
                    entry.1 += 1;
                }
            }
        }
        counts
    }

    /// (channel subscriptions, channels with members)
    pub fn channel_counts(&self) -> (usize, usize) {
        let inner = self.read();
        let mut subs = 0;
        let mut channels = 0;
        for (topic, members) in &inner.topics {
            if matches!(topic, Topic::Channel(_)) && !members.is_empty() {
                channels += 1;
                subs += members.len();
            }
        }
        (subs, channels)
    }
}

#[cfg(test)]
mod tests;
