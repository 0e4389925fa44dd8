//! Who is where: channel presence, the connection registry and the node
//! registry.
//!
//! Three registries with one shape — sets of members that expire unless
//! refreshed — so a node that dies (even `kill -9`) leaves nothing behind
//! for long: every node refreshes what it owns each `node_heartbeat_ms`,
//! entries live for 2.5 intervals, and readers drop what has expired. A node
//! that is alive but lost a removal (Redis was down when a client left)
//! heals the same way.
//!
//! So the registries ([`Presence`], in `registries`) are written once, over
//! one small store of expiring sets ([`ExpiringSets`]): as with the broker,
//! [`memory::MemorySets`] is the single-node store and [`redis::RedisSets`]
//! the cluster one (hash of members + sorted set of expiry times, updated
//! atomically by Lua, as Centrifugo does).

pub mod memory;
pub mod redis;
mod registries;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use registries::Presence;

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

/// One set of a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetName<'a> {
    /// Presence of a channel: conn -> [`ClientInfo`].
    Channel(&'a str),
    /// A user's connections on every node: conn -> [`ClientInfo`].
    User(&'a str),
    /// The live nodes: node id -> [`NodeInfo`].
    Nodes,
}

/// Members to add to (or refresh in) one set: (member, JSON value).
pub type Additions<'a> = (SetName<'a>, Vec<(&'a str, String)>);
/// Members to remove from one set.
pub type Removals<'a> = (SetName<'a>, Vec<&'a str>);

/// Sets of members (each with a JSON value) that expire unless refreshed:
/// the whole storage seam of the registries.
pub trait ExpiringSets: Send + Sync + 'static {
    /// Add or refresh members, each to live for the store's TTL from now.
    fn add<'a>(&'a self, sets: &'a [Additions<'a>]) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// Remove members.
    fn remove<'a>(&'a self, sets: &'a [Removals<'a>]) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// The live members and their values, sorted by member.
    fn list<'a>(
        &'a self,
        set: SetName<'a>,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, PresenceError>>;
    /// Add `member` only if fewer than `limit` other members are live —
    /// counted and added in one atomic step.
    fn add_within<'a>(
        &'a self,
        set: SetName<'a>,
        member: &'a str,
        value: String,
        limit: usize,
    ) -> BoxFuture<'a, Result<Admission, PresenceError>>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
