//! The node's services, shared by every connection and HTTP handler: hub,
//! broker, presence, settings, metrics and the draining flag; and the
//! operations of the wire protocol and the server API, executed on them.
//!
//! The subscription lifecycle lives here because it joins hub and broker:
//! the hub records a local subscriber first, then the broker subscription
//! is awaited (so the reply is sent only once delivery is live); when the
//! last local subscriber of a topic leaves, the broker subscription is
//! released after `unsubscribe_delay`, which absorbs quick
//! unsubscribe/resubscribe churn without Redis round trips. Presence and
//! join/leave events follow the namespace's options.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::value::RawValue;
use tracing::Instrument;

use crate::auth::{Access, Verifier};
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{self as redis_broker, RedisBroker};
use crate::broker::{Broker, BrokerError, Notice, Publication, Published};
use crate::config::{NamespaceOptions, Settings};
use crate::disconnect::Disconnect;
use crate::handshake::{Handshakes, Permit, Refusal};
use crate::hub::{ConnId, Hub, HubError, Member};
use crate::keys::Keys;
use crate::metrics::{self, Gauges, Metrics};
use crate::permissions::{self, Action, Asker};
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::presence::{now_ms, Admission, ClientInfo, ConnInfo, NodeInfo, Presence, PresenceError};
use crate::protocol::{check_channel, check_user, ErrorBody, ErrorCode, MessageParts, ServerFrame};
use crate::telemetry;
use crate::topic::Topic;

/// The node's services behind one façade: callers use its verbs, and read
/// its settings and metrics, but do not reach into the hub, broker or
/// presence (crate-private accessors exist for the heartbeat).
pub struct Gateway {
    settings: Settings,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn Presence>,
    metrics: Arc<Metrics>,
    /// Verifies client tokens; None when no JWT key is configured.
    auth: Option<Verifier>,
    started_at: u64,
    draining: AtomicBool,
    handshakes: Arc<Handshakes>,
    /// Detaches still writing to the registry (see `settled`).
    detaching: AtomicUsize,
}

/// Counts a detach from its start to its end (or cancellation).
struct Detaching<'a>(&'a AtomicUsize);

impl<'a> Detaching<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Detaching(count)
    }
}

impl Drop for Detaching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn broker_error(e: BrokerError) -> ErrorBody {
    ErrorBody::new(ErrorCode::BrokerUnavailable, e.to_string())
}

fn presence_error(e: PresenceError) -> ErrorBody {
    ErrorBody::new(ErrorCode::BrokerUnavailable, e.to_string())
}

fn hub_error(e: HubError) -> ErrorBody {
    let code = match e {
        HubError::AlreadySubscribed => ErrorCode::AlreadySubscribed,
        HubError::NotSubscribed => ErrorCode::NotSubscribed,
        HubError::UnknownConn => ErrorCode::Internal,
    };
    ErrorBody::new(code, e.to_string())
}

impl Gateway {
    /// Wire the hub to the broker and presence the settings ask for. Must
    /// run inside a Tokio runtime (the Redis broker spawns its subscriber).
    pub fn new(settings: Settings, auth: Option<Verifier>) -> Result<Arc<Gateway>, BrokerError> {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let (broker, presence): (Arc<dyn Broker>, Arc<dyn Presence>) = match &settings.redis_url {
            None => (
                Arc::new(MemoryBroker::new(
                    hub.clone(),
                    metrics.clone(),
                    settings.node_id.clone(),
                )),
                Arc::new(MemoryPresence::default()),
            ),
            Some(url) => {
                let keys = Keys::new(settings.key_prefix.clone());
                let pool =
                    redis_broker::pool(url, settings.redis_pool_size, settings.redis_timeout)?;
                let broker = RedisBroker::start(
                    url,
                    pool.clone(),
                    keys.clone(),
                    settings.node_id.clone(),
                    settings.redis_timeout,
                    hub.clone(),
                    metrics.clone(),
                )?;
                // Entries live 2.5 heartbeats: a live node refreshes them with
                // room for a late tick, and a dead node's are gone within 2.5
                // intervals of its last refresh (under 3 after it died).
                let ttl = settings.node_heartbeat * 5 / 2;
                let presence = RedisPresence::new(pool, keys, ttl, settings.redis_timeout);
                (Arc::new(broker), Arc::new(presence))
            }
        };
        Ok(Arc::new(Gateway {
            hub,
            broker,
            presence,
            metrics,
            auth,
            started_at: now_ms(),
            draining: AtomicBool::new(false),
            detaching: AtomicUsize::new(0),
            handshakes: Handshakes::new(settings.max_pending_handshakes),
            settings,
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The token verifier; None when no JWT key is configured.
    pub fn auth(&self) -> Option<&Verifier> {
        self.auth.as_ref()
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn presence(&self) -> &dyn Presence {
        &*self.presence
    }

    /// Local connections.
    pub fn connection_count(&self) -> usize {
        self.hub.connection_count()
    }

    /// Ask every local connection to close with `reason` (drain).
    pub fn close_all(&self, reason: Disconnect) {
        self.hub.close_all(reason);
    }

    /// Whether the broker can publish and deliver right now.
    pub fn broker_healthy(&self) -> bool {
        self.broker.is_healthy()
    }

    /// Stop the broker's background tasks (shutdown).
    pub fn shutdown_broker(&self) {
        self.broker.shutdown();
    }

    /// When this node started (ms since the epoch), for its node record.
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// Take a handshake slot, or the 503 to answer (see `handshake::Handshakes`).
    pub fn admit_handshake(&self) -> Result<Permit, Refusal> {
        self.handshakes.try_admit().inspect_err(|_| {
            metrics::inc(&self.metrics.handshakes_refused);
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready for traffic: not draining and the broker is reachable.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.broker.is_healthy()
    }

    pub fn gauges(&self) -> Gauges {
        let (subscriptions, channels) = self.hub.channel_counts();
        Gauges {
            connections: self.hub.connection_count(),
            subscriptions,
            channels,
            broker_up: self.broker.is_healthy(),
            draining: self.is_draining(),
        }
    }

    /// A channel name is valid and its namespace is configured.
    pub fn check_channel(&self, channel: &str) -> Result<(), ErrorBody> {
        self.namespace_of(channel).map(drop)
    }

    /// The options of a valid channel's namespace, or why there are none.
    fn namespace_of(&self, channel: &str) -> Result<&NamespaceOptions, ErrorBody> {
        check_channel(channel)?;
        self.settings.namespace(channel).ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::UnknownChannel,
                format!("channel {channel:?} is in a namespace this gateway does not define"),
            )
        })
    }

    /// The client info of a connection that is about to be attached.
    pub fn client_info(&self, conn: &ConnId, user: &str) -> ClientInfo {
        ClientInfo {
            conn: conn.to_string(),
            user: user.to_owned(),
            node: self.node_id().to_owned(),
            info: ConnInfo {
                connected_at: now_ms(),
            },
        }
    }

    /// May this connection do `action` on `channel`? The namespace's rule
    /// decides, and a personal channel `user:ID[:...]` is its owner's alone
    /// (see `permissions`).
    pub fn authorize(
        &self,
        conn: &ConnId,
        user: &str,
        access: &Access,
        channel: &str,
        action: Action,
    ) -> Result<(), ErrorBody> {
        let ns = self.namespace_of(channel)?;
        let asker = Asker {
            user,
            access,
            subscribed: || {
                self.hub
                    .is_subscribed(conn, &Topic::Channel(channel.to_owned()))
            },
        };
        permissions::check(ns, channel, action, asker).map_err(|why| {
            ErrorBody::new(
                ErrorCode::Forbidden,
                format!("not allowed to {} on {channel:?}: {why}", action.verb()),
            )
        })
    }

    /// Admit a new connection of `user` under `max_connections_per_user`,
    /// cluster-wide, before the upgrade: the registry counts the user's
    /// live connections and registers this one in one atomic step, so a
    /// burst of simultaneous connects cannot overshoot. `Err(count)`
    /// refuses. With the registry unreachable it admits with a warning
    /// (fail-open, so an outage does not lock everyone out); the connection
    /// is then registered by the next heartbeat after Redis returns.
    pub async fn admit(&self, conn: &ConnId, user: &str) -> Result<Arc<ClientInfo>, usize> {
        let client = Arc::new(self.client_info(conn, user));
        let limit = self.settings.max_connections_per_user;
        metrics::inc(&self.metrics.presence_ops);
        match self.presence.admit(&client, limit).await {
            Ok(Admission::Admitted) => Ok(client),
            Ok(Admission::Full(count)) => Err(count),
            Err(e) => {
                metrics::inc(&self.metrics.presence_errors);
                tracing::warn!(error = %e, "connection limit not checked; admitted");
                Ok(client)
            }
        }
    }

    /// Is `user` under `max_connections_per_user`? Only a read, for
    /// connections that join no registry (`/echo`); fail-open like `admit`.
    pub async fn check_user_limit(&self, user: &str) -> Result<(), usize> {
        match self.user_connections(user).await {
            Ok(conns) if conns.len() >= self.settings.max_connections_per_user => Err(conns.len()),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e.message, "connection limit not checked");
                Ok(())
            }
        }
    }

    /// Undo `admit` for a connection that was not opened after all.
    pub async fn unadmit(&self, client: &ClientInfo) {
        self.presence_op(self.presence.unregister(&client.user, &client.conn))
            .await;
    }

    /// A new connection, already in the cluster registry (`admit`): local
    /// registry, direct inbox. If the broker is down this logs and goes on:
    /// the inbox stays wanted and is subscribed when Redis returns.
    pub async fn attach(self: &Arc<Self>, conn: &ConnId, client: Arc<ClientInfo>, member: Member) {
        self.hub.register(conn.clone(), client.clone(), member);
        metrics::inc(&self.metrics.connections_opened);
        let inbox = Topic::User(client.user.clone());
        if self.hub.add(conn, &inbox).is_ok() {
            if let Err(e) = self.broker.subscribe(&inbox).await {
                tracing::warn!(error = %e, "direct inbox not subscribed yet");
            }
        }
    }

    /// Forget a closed connection: leave its channels (presence, `leave`
    /// events), release topics it was the last on, drop it from the registry.
    pub async fn detach(self: &Arc<Self>, conn: &ConnId) {
        let _detaching = Detaching::start(&self.detaching);
        let gone = self.hub.unregister(conn);
        metrics::inc(&self.metrics.connections_closed);
        for topic in gone.emptied {
            self.schedule_release(topic);
        }
        if let Some(client) = gone.client {
            for channel in &gone.channels {
                self.on_left(channel, &client).await;
            }
            self.presence_op(self.presence.unregister(&client.user, &client.conn))
                .await;
        }
    }

    /// No connection is attached or still being detached: every closed
    /// connection has left presence and the registry (or tried to).
    pub fn settled(&self) -> bool {
        self.hub.connection_count() == 0 && self.detaching.load(Ordering::SeqCst) == 0
    }

    /// Count and log a failed presence write; the heartbeat repairs it.
    async fn presence_op(&self, op: impl std::future::Future<Output = Result<(), PresenceError>>) {
        metrics::inc(&self.metrics.presence_ops);
        if let Err(e) = op.await {
            metrics::inc(&self.metrics.presence_errors);
            tracing::warn!(error = %e, "presence update failed");
        }
    }

    /// Subscribe a connection to a channel; resolves when delivery is live.
    pub async fn subscribe(
        self: &Arc<Self>,
        conn: &ConnId,
        channel: &str,
    ) -> Result<(), ErrorBody> {
        self.check_channel(channel)?;
        let limit = self.settings.max_subscriptions_per_connection;
        if self.hub.channels_of(conn) >= limit {
            return Err(ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!("a connection may subscribe to at most {limit} channels"),
            ));
        }
        let topic = Topic::Channel(channel.to_owned());
        self.hub.add(conn, &topic).map_err(hub_error)?;
        if let Err(e) = self.broker.subscribe(&topic).await {
            // Roll back so the client can simply retry.
            if let Ok(true) = self.hub.remove(conn, &topic) {
                self.schedule_release(topic);
            }
            return Err(broker_error(e));
        }
        if let Some(client) = self.hub.client(conn) {
            self.on_joined(channel, &client).await;
        }
        Ok(())
    }

    pub async fn unsubscribe(
        self: &Arc<Self>,
        conn: &ConnId,
        channel: &str,
    ) -> Result<(), ErrorBody> {
        self.check_channel(channel)?;
        let topic = Topic::Channel(channel.to_owned());
        if self.hub.remove(conn, &topic).map_err(hub_error)? {
            self.schedule_release(topic);
        }
        if let Some(client) = self.hub.client(conn) {
            self.on_left(channel, &client).await;
        }
        Ok(())
    }

    async fn on_joined(&self, channel: &str, client: &Arc<ClientInfo>) {
        let Some(ns) = self.settings.namespace(channel) else {
            return;
        };
        if ns.presence {
            self.presence_op(self.presence.join(channel, client)).await;
        }
        if ns.join_leave {
            let frame = ServerFrame::Join {
                channel,
                user: &client.user,
                conn: &client.conn,
            };
            self.event(channel, frame.encode()).await;
        }
    }

    async fn on_left(&self, channel: &str, client: &Arc<ClientInfo>) {
        let Some(ns) = self.settings.namespace(channel) else {
            return;
        };
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

    fn schedule_release(self: &Arc<Self>, topic: Topic) {
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

    pub async fn publish(
        &self,
        channel: &str,
        from: &str,
        data: &RawValue,
        traceparent: Option<&str>,
    ) -> Result<Published, ErrorBody> {
        self.check_channel(channel)?;
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
        };
        let started = std::time::Instant::now();
        let published = self
            .broker
            .publish(publication)
            .instrument(span.clone())
            .await
            .map_err(broker_error)?;
        self.metrics.publish_duration.observe(started.elapsed());
        span.record("offset", published.offset);
        metrics::inc(&self.metrics.messages_published);
        Ok(published)
    }

    pub async fn send_direct(
        &self,
        to: &str,
        from: &str,
        data: &RawValue,
    ) -> Result<(), ErrorBody> {
        check_user(to)?;
        let frame = ServerFrame::Direct { from, data }.encode();
        self.broker
            .notify(Notice::Direct { user: to, frame })
            .await
            .map_err(broker_error)?;
        metrics::inc(&self.metrics.direct_sent);
        Ok(())
    }

    /// Members of a presence-enabled channel, on every node.
    pub async fn presence_members(&self, channel: &str) -> Result<Vec<ClientInfo>, ErrorBody> {
        self.check_channel(channel)?;
        if !self
            .settings
            .namespace(channel)
            .is_some_and(|ns| ns.presence)
        {
            return Err(ErrorBody::new(
                ErrorCode::NotEnabled,
                format!("presence is not enabled for the namespace of {channel:?}"),
            ));
        }
        metrics::inc(&self.metrics.presence_ops);
        self.presence.members(channel).await.map_err(presence_error)
    }

    /// Live connections of a user, on every node.
    pub async fn user_connections(&self, user: &str) -> Result<Vec<ClientInfo>, ErrorBody> {
        check_user(user)?;
        self.presence
            .connections(user)
            .await
            .map_err(presence_error)
    }

    /// Close every connection of a user on every node.
    pub async fn disconnect_user(&self, user: &str, reconnect: bool) -> Result<(), ErrorBody> {
        check_user(user)?;
        let reason = if reconnect {
            Disconnect::ForceReconnect
        } else {
            Disconnect::ForceDisconnect
        };
        self.broker
            .notify(Notice::Disconnect { user, reason })
            .await
            .map_err(broker_error)
    }

    /// Live nodes of the cluster (this one alone in memory mode).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ErrorBody> {
        self.presence.nodes().await.map_err(presence_error)
    }
}
