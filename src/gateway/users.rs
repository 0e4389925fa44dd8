//! User and connection verbs: admission under the per-user limit, a
//! connection's attach and detach, direct messages, disconnects, and the
//! registry reads of the server API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::value::RawValue;

use super::Gateway;
use crate::broker::Notice;
use crate::disconnect::Disconnect;
use crate::error::Error;
use crate::hub::{ConnId, Member};
use crate::ids::UserId;
use crate::metrics;
use crate::presence::{now_ms, Admission, ClientInfo, ConnInfo, NodeInfo};
use crate::protocol::ServerFrame;
use crate::topic::Topic;

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

impl Gateway {
    /// The client info of a connection that is about to be attached.
    fn client_info(&self, conn: &ConnId, user: &UserId) -> ClientInfo {
        ClientInfo {
            conn: conn.to_string(),
            user: user.to_string(),
            node: self.node_id().to_owned(),
            info: ConnInfo {
                connected_at: now_ms(),
            },
        }
    }

    /// Admit a new connection of `user` under `max_connections_per_user`,
    /// cluster-wide, before the upgrade: the registry counts the user's
    /// live connections and registers this one in one atomic step, so a
    /// burst of simultaneous connects cannot overshoot. `Err(count)`
    /// refuses. With the registry unreachable it admits with a warning
    /// (fail-open, so an outage does not lock everyone out); the connection
    /// is then registered by the next heartbeat after Redis returns.
    pub(crate) async fn admit(
        &self,
        conn: &ConnId,
        user: &UserId,
    ) -> Result<Arc<ClientInfo>, usize> {
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
    pub(crate) async fn check_user_limit(&self, user: &UserId) -> Result<(), usize> {
        match self.user_connections(user).await {
            Ok(conns) if conns.len() >= self.settings.max_connections_per_user => Err(conns.len()),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "connection limit not checked");
                Ok(())
            }
        }
    }

    /// Undo `admit` for a connection that was not opened after all.
    pub(crate) async fn unadmit(&self, client: &ClientInfo) {
        self.presence_op(self.presence.unregister(&client.user, &client.conn))
            .await;
    }

    /// A new connection, already in the cluster registry (`admit`): local
    /// registry, direct inbox. If the broker is down this logs and goes on:
    /// the inbox stays wanted and is subscribed when Redis returns.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        conn: &ConnId,
        client: Arc<ClientInfo>,
        member: Member,
    ) {
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
    pub(crate) async fn detach(self: &Arc<Self>, conn: &ConnId) {
        let _detaching = Detaching::start(&self.detaching);
        let gone = self.hub.unregister(conn);
        metrics::inc(&self.metrics.connections_closed);
        for topic in gone.emptied {
            self.schedule_release(topic);
        }
        if let Some(client) = gone.client {
            for channel in &gone.channels {
                if let Some(ns) = self.settings.namespace(channel) {
                    self.on_left(channel, ns, &client).await;
                }
            }
            self.presence_op(self.presence.unregister(&client.user, &client.conn))
                .await;
        }
    }

    pub(crate) async fn send_direct(
        &self,
        to: &UserId,
        from: &str,
        data: &RawValue,
    ) -> Result<(), Error> {
        let frame = ServerFrame::Direct { from, data }.encode();
        self.broker
            .notify(Notice::Direct { user: to, frame })
            .await?;
        metrics::inc(&self.metrics.direct_sent);
        Ok(())
    }

    /// Live connections of a user, on every node.
    pub async fn user_connections(&self, user: &UserId) -> Result<Vec<ClientInfo>, Error> {
        Ok(self.presence.connections(user).await?)
    }

    /// Close every connection of a user on every node.
    pub(crate) async fn disconnect_user(
        &self,
        user: &UserId,
        reconnect: bool,
    ) -> Result<(), Error> {
        let reason = if reconnect {
            Disconnect::ForceReconnect
        } else {
            Disconnect::ForceDisconnect
        };
        Ok(self
            .broker
            .notify(Notice::Disconnect { user, reason })
            .await?)
    }

    /// Live nodes of the cluster (this one alone in memory mode).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        Ok(self.presence.nodes().await?)
    }
}
