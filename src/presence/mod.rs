//! Who is where: channel presence, the connection registry and the node
//! registry.
//!
//! Three sets with one shape — members that expire unless refreshed — so a
//! node that dies (even `kill -9`) leaves nothing behind for long: every
//! node refreshes what it owns each `node_heartbeat_ms`, entries live for
//! 2.5 intervals, and readers drop what has expired. A node that is alive
//! but lost a removal (Redis was down when a client left) heals the same way.
//!
//! As with the broker, [`memory::MemoryPresence`] is the single-node
//! implementation and [`redis::RedisPresence`] the cluster one (hash of
//! members + sorted set of expiry times, updated atomically by Lua, as
//! Centrifugo does).

pub mod memory;
pub mod redis;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// One connection, as presence and the registry report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub conn: String,
    pub user: String,
    pub node: String,
    pub info: ConnInfo,
}

/// What is known about a connection besides its ids. Typed rather than a
/// JSON map: one of these lives per connection, so it stays a few words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnInfo {
    /// ms since the Unix epoch.
    pub connected_at: u64,
}

/// The registry's answer to a new connection (`Presence::admit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Registered.
    Admitted,
    /// Not registered: the user already holds this many live connections.
    Full(usize),
}

/// A node's record, refreshed by its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub connections: usize,
    pub subscriptions: usize,
    pub channels: usize,
    /// ms since the Unix epoch.
    pub started_at: u64,
    pub updated_at: u64,
}

/// Everything a node owns, for one heartbeat.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub node: Option<NodeInfo>,
    /// Every local connection.
    pub clients: Vec<Arc<ClientInfo>>,
    /// (channel, member) for local subscriptions of presence-enabled channels.
    pub presence: Vec<(String, Arc<ClientInfo>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("presence store timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("presence store returned a malformed entry: {0}")]
    Malformed(String),
}

pub trait Presence: Send + Sync + 'static {
    /// Add a subscriber to a channel's presence.
    fn join<'a>(
        &'a self,
        channel: &'a str,
        client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// Remove a connection from a channel's presence.
    fn leave<'a>(
        &'a self,
        channel: &'a str,
        conn: &'a str,
    ) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// Current members of a channel, sorted by conn id.
    fn members<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, PresenceError>>;

    /// Record a new connection in the registry if its user has fewer than
    /// `limit` live connections on every node — counted and added in one
    /// atomic step, so simultaneous connects cannot overshoot the limit.
    fn admit<'a>(
        &'a self,
        client: &'a Arc<ClientInfo>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Admission, PresenceError>>;
    /// Remove a closed connection from the registry.
    fn unregister<'a>(
        &'a self,
        user: &'a str,
        conn: &'a str,
    ) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// Live connections of a user on every node, sorted by conn id.
    fn connections<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, PresenceError>>;

    /// Refresh everything this node owns (its record, its connections, their presence).
    fn heartbeat<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// Remove everything in the snapshot (its node record, connections and
    /// their presence): a node leaving the cluster on a graceful exit.
    fn withdraw<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// Live nodes, sorted by id.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, PresenceError>>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
