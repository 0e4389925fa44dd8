//! Channel verbs: look a channel's namespace up once ([`Route`]), check
//! what a connection may do there (`permissions`), subscribe and
//! unsubscribe, publish, send join/leave events and read presence.
//!
//! The subscription lifecycle joins hub and broker: the hub records a local
//! subscriber first, then the broker subscription is awaited (so the reply
//! is sent only once delivery is live); when the last local subscriber of a
//! topic leaves, the broker subscription is released after
//! `unsubscribe_delay`, which absorbs quick unsubscribe/resubscribe churn
//! without Redis round trips. Presence and join/leave events follow the
//! namespace's options.

use std::sync::Arc;

use serde_json::value::RawValue;
use tracing::Instrument;

use super::Gateway;
use crate::auth::Access;
use bytestring::ByteString;

use crate::broker::{History, HistoryQuery, Idempotency, Notice, Position, Publication};
use crate::config::NamespaceOptions;
use crate::error::Error;
use crate::hub::ConnId;
use crate::ids::{ChannelName, IdempotencyKey};
use crate::metrics;
use crate::permissions::{self, Action, Asker};
use crate::presence::ClientInfo;
use crate::protocol::{MessageParts, ServerFrame, StreamPosition};
use crate::telemetry;
use crate::topic::Topic;

/// A channel with its namespace's options, looked up once per operation.
pub struct Route<'a> {
    pub channel: &'a ChannelName,
    ns: &'a NamespaceOptions,
}

impl Route<'_> {
    fn topic(&self) -> Topic {
        Topic::Channel(self.channel.to_string())
    }
}

/// What a subscription starts with.
#[derive(Debug, Default)]
pub struct Subscribed {
    /// The channel's position when delivery went live (channels with
    /// history, or when `since` was given).
    pub top: Option<Position>,
    /// With `since`: whether every missed message is in `missed`.
    pub recovered: Option<bool>,
    /// The missed messages, oldest first, for the caller to send before
    /// releasing the hold.
    pub missed: Vec<(u64, ByteString)>,
    /// The position `missed` ends at: live frames up to it (held, or
    /// arriving late) are dropped as duplicates.
    pub after: Option<Position>,
}

/// Who asks, for the permission checks: a connection, its user and what
/// its token allows.
pub struct Caller<'a> {
    pub conn: &'a ConnId,
    pub user: &'a str,
    pub access: &'a Access,
}

impl Gateway {
    /// The namespace of a channel, or `unknown_channel`.
    pub(crate) fn route<'a>(&'a self, channel: &'a ChannelName) -> Result<Route<'a>, Error> {
        match self.settings.namespace(channel) {
            Some(ns) => Ok(Route { channel, ns }),
            None => Err(Error::UnknownChannel(channel.clone())),
        }
    }

    /// May `caller` do `action` on the route's channel? The namespace's
    /// rule decides, and a personal channel `user:ID[:...]` is its owner's
    /// alone (see `permissions`).
    pub(crate) fn authorize(
        &self,
        caller: &Caller<'_>,
        route: &Route<'_>,
        action: Action,
    ) -> Result<(), Error> {
        let asker = Asker {
            user: caller.user,
            access: caller.access,
            subscribed: || self.hub.is_subscribed(caller.conn, &route.topic()),
        };
        permissions::check(route.ns, route.channel, action, asker).map_err(|why| Error::Forbidden {
            action,
            channel: route.channel.clone(),
            why,
        })
    }

    /// Subscribe a connection to a channel; resolves when delivery is live.
    /// With `since`, the connection's live frames of the channel are held
    /// (see `Hub::add_held`) while the missed messages are read: the caller
    /// sends the reply and `Subscribed::missed`, then calls `release`.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        conn: &ConnId,
        route: &Route<'_>,
        since: Option<&StreamPosition>,
    ) -> Result<Subscribed, Error> {
        let limit = self.settings.max_subscriptions_per_connection;
        if self.hub.channels_of(conn) >= limit {
            return Err(Error::TooManySubscriptions(limit));
        }
        let topic = route.topic();
        if since.is_some() {
            self.hub.add_held(conn, &topic)?;
        } else {
            self.hub.add(conn, &topic)?;
        }
        let subscribed = match self.broker.subscribe(&topic).await {
            Ok(()) => self.position(route, since).await,
            Err(e) => Err(e.into()),
        };
        let subscribed = match subscribed {
            Ok(subscribed) => subscribed,
            Err(e) => {
                // Roll back so the client can simply retry.
                if let Ok(true) = self.hub.remove(conn, &topic) {
                    self.schedule_release(topic);
                }
                return Err(e);
            }
        };
        if let Some(client) = self.hub.client(conn) {
            self.on_joined(route, &client).await;
        }
        Ok(subscribed)
    }

    /// Where a new subscription starts, and what it missed since `since`:
    /// read once delivery is live, so every later message arrives live.
    async fn position(
        &self,
        route: &Route<'_>,
        since: Option<&StreamPosition>,
    ) -> Result<Subscribed, Error> {
        let history = route.ns.history();
        if since.is_none() && history.is_none() {
            // The common case: no history, no position, no round trip.
            return Ok(Subscribed::default());
        }
        let query = HistoryQuery {
            since: since.map(|p| p.offset),
            limit: if since.is_some() {
                history.map_or(0, |h| h.size)
            } else {
                0
            },
            reverse: false,
        };
        let read = self.broker.history(route.channel, query).await?;
        let top = read.top;
        let Some(since) = since else {
            return Ok(Subscribed {
                top: Some(top),
                ..Subscribed::default()
            });
        };
        // Recovered: same epoch, and every message after `since` up to the
        // top is in the history read (offsets are unique and increasing).
        let behind = top.offset.checked_sub(since.offset);
        let recovered = since.epoch == top.epoch
            && behind.is_some_and(|behind| read.messages.len() as u64 == behind);
        if recovered {
            metrics::inc(&self.metrics.recoveries);
        }
        Ok(Subscribed {
            recovered: Some(recovered),
            after: recovered.then(|| top.clone()),
            missed: if recovered { read.messages } else { Vec::new() },
            top: Some(top),
        })
    }

    /// End a recovering subscription's hold (see `subscribe`).
    pub(crate) fn release(&self, conn: &ConnId, channel: &ChannelName, after: Option<&Position>) {
        let after = after.map(|p| (p.epoch.as_str(), p.offset));
        self.hub
            .release(conn, &Topic::Channel(channel.to_string()), after);
    }

    /// A channel's history: its position and the messages `query` asks for
    /// (at most the namespace's `history_size`). A `since` from another
    /// epoch cannot be resumed.
    pub(crate) async fn history(
        &self,
        route: &Route<'_>,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<History, Error> {
        let Some(kept) = route.ns.history() else {
            return Err(Error::HistoryNotEnabled(route.channel.clone()));
        };
        let query = HistoryQuery {
            since: since.map(|p| p.offset),
            limit: limit.unwrap_or(kept.size).min(kept.size),
            reverse,
        };
        let read = self.broker.history(route.channel, query).await?;
        if let Some(since) = since {
            if since.epoch != read.top.epoch {
                return Err(Error::UnrecoverablePosition(route.channel.clone()));
            }
        }
        Ok(read)
    }

    pub(crate) async fn unsubscribe(
        self: &Arc<Self>,
        conn: &ConnId,
        route: &Route<'_>,
    ) -> Result<(), Error> {
        let topic = route.topic();
        if self.hub.remove(conn, &topic)? {
            self.schedule_release(topic);
        }
        if let Some(client) = self.hub.client(conn) {
            self.on_left(route.channel, route.ns, &client).await;
        }
        Ok(())
    }

    async fn on_joined(&self, route: &Route<'_>, client: &Arc<ClientInfo>) {
        let channel = route.channel.as_str();
        if route.ns.presence {
            self.presence_op(self.presence.join(channel, client)).await;
        }
        if route.ns.join_leave {
            let frame = ServerFrame::Join {
                channel,
                user: &client.user,
                conn: &client.conn,
            };
            self.event(channel, frame.encode()).await;
        }
    }

    /// A connection left `channel` (unsubscribed or closed).
    pub(super) async fn on_left(
        &self,
        channel: &str,
        ns: &NamespaceOptions,
        client: &Arc<ClientInfo>,
    ) {
        if ns.presence {
            self.presence_op(self.presence.leave(channel, &client.conn))
                .await;
        }
        if ns.join_leave {
            let frame = ServerFrame::Leave {
                channel,
                user: &client.user,
                conn: &client.conn,
            };
            self.event(channel, frame.encode()).await;
        }
    }

    async fn event(&self, channel: &str, frame: String) {
        if let Err(e) = self.broker.notify(Notice::Event { channel, frame }).await {
            tracing::warn!(error = %e, channel, "join/leave event not sent");
        }
    }

    /// Release the broker subscription of `topic` if it has no local
    /// subscriber left after `unsubscribe_delay`.
    pub(super) fn schedule_release(self: &Arc<Self>, topic: Topic) {
        let delay = self.settings.unsubscribe_delay;
        let release = |gw: &Gateway, topic: &Topic| {
            gw.hub
                .release_if_empty(topic, || gw.broker.unsubscribe(topic));
        };
        if delay.is_zero() {
            release(self, &topic);
            return;
        }
        let gw = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            release(&gw, &topic);
        });
    }

    pub(crate) async fn publish(
        &self,
        route: &Route<'_>,
        from: &str,
        data: &RawValue,
        traceparent: Option<&str>,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Position, Error> {
        let channel = route.channel.as_str();
        // The publish span (only when traces are exported) continues the
        // client's trace; its own context travels with the message.
        let (span, traceparent) = if telemetry::enabled() {
            // A root span (not a child of the long-lived connection span),
            // so each message is a trace of its own.
            let span = tracing::debug_span!(
                parent: None,
                "publish",
                otel.kind = "producer",
                channel,
                node = self.node_id(),
                bytes = data.get().len(),
                offset = tracing::field::Empty
            );
            telemetry::set_remote_parent(&span, traceparent);
            let own = telemetry::traceparent(&span);
            (span, own)
        } else {
            (tracing::Span::none(), traceparent.map(str::to_owned))
        };
        let publication = Publication {
            channel,
            parts: MessageParts::new(channel, from, data),
            traceparent: traceparent.as_deref(),
            history: route.ns.history(),
            idempotency: idempotency_key.map(|key| Idempotency {
                key,
                window: self.settings.idempotency_window,
            }),
        };
        let started = std::time::Instant::now();
        let published = self
            .broker
            .publish(publication)
            .instrument(span.clone())
            .await?;
        self.metrics.publish_duration.observe(started.elapsed());
        span.record("offset", published.offset);
        metrics::inc(&self.metrics.messages_published);
        Ok(published)
    }

    /// Members of a presence-enabled channel, on every node.
    pub(crate) async fn presence_members(
        &self,
        route: &Route<'_>,
    ) -> Result<Vec<ClientInfo>, Error> {
        if !route.ns.presence {
            return Err(Error::PresenceNotEnabled(route.channel.clone()));
        }
        metrics::inc(&self.metrics.presence_ops);
        Ok(self.presence.members(route.channel).await?)
    }
}
