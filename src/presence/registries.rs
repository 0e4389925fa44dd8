//! The three registries — channel presence, users' connections, nodes —
//! written once over an [`ExpiringSets`] store: records are encoded to JSON
//! here and decoded on the way out, and a heartbeat (or a withdrawal)
//! groups every entry a node owns by set so the store can batch them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{Admission, ClientInfo, ExpiringSets, NodeInfo, PresenceError, SetName, Snapshot};

pub struct Presence {
    store: Arc<dyn ExpiringSets>,
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("presence records serialise")
}

impl Presence {
    pub fn new(store: Arc<dyn ExpiringSets>) -> Presence {
        Presence { store }
    }

    /// Add a subscriber to a channel's presence.
    pub async fn join(&self, channel: &str, client: &ClientInfo) -> Result<(), PresenceError> {
        let sets = [(
            SetName::Channel(channel),
            vec![(client.conn.as_str(), to_json(client))],
        )];
        self.store.add(&sets).await
    }

    /// Remove a connection from a channel's presence.
    pub async fn leave(&self, channel: &str, conn: &str) -> Result<(), PresenceError> {
        self.store
            .remove(&[(SetName::Channel(channel), vec![conn])])
            .await
    }

    /// Current members of a channel, sorted by conn id.
    pub async fn members(&self, channel: &str) -> Result<Vec<ClientInfo>, PresenceError> {
        self.list(SetName::Channel(channel)).await
    }

    /// Record a new connection in the registry if its user has fewer than
    /// `limit` live connections on every node — counted and added in one
    /// atomic step, so simultaneous connects cannot overshoot the limit.
    pub async fn admit(
        &self,
        client: &ClientInfo,
        limit: usize,
    ) -> Result<Admission, PresenceError> {
        self.store
            .add_within(
                SetName::User(&client.user),
                &client.conn,
                to_json(client),
                limit,
            )
            .await
    }

    /// Remove a closed connection from the registry.
    pub async fn unregister(&self, user: &str, conn: &str) -> Result<(), PresenceError> {
        self.store
            .remove(&[(SetName::User(user), vec![conn])])
            .await
    }

    /// Live connections of a user on every node, sorted by conn id.
    pub async fn connections(&self, user: &str) -> Result<Vec<ClientInfo>, PresenceError> {
        self.list(SetName::User(user)).await
    }

    /// Live nodes, sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, PresenceError> {
        self.list(SetName::Nodes).await
    }

    /// Refresh everything this node owns (its record, its connections, their presence).
    pub async fn heartbeat(&self, snapshot: &Snapshot) -> Result<(), PresenceError> {
        let sets: Vec<_> = grouped(snapshot, |id, record| (id, record()))
            .into_iter()
            .collect();
        self.store.add(&sets).await
    }

    /// Remove everything in the snapshot (its node record, connections and
    /// their presence): a node leaving the cluster on a graceful exit.
    pub async fn withdraw(&self, snapshot: &Snapshot) -> Result<(), PresenceError> {
        let sets: Vec<_> = grouped(snapshot, |id, _| id).into_iter().collect();
        self.store.remove(&sets).await
    }

    async fn list<T: DeserializeOwned>(&self, set: SetName<'_>) -> Result<Vec<T>, PresenceError> {
        let entries = self.store.list(set).await?;
        entries
            .into_iter()
            .map(|(member, value)| {
                serde_json::from_str(&value)
                    .map_err(|e| PresenceError::Malformed(format!("{set:?}[{member}]: {e}")))
            })
            .collect()
    }
}

/// Every entry of a snapshot, by set (so each set takes one store call),
/// each entry made by `entry(member, record)` from the member's id and a
/// closure that encodes its record.
fn grouped<'a, T>(
    snapshot: &'a Snapshot,
    entry: impl Fn(&'a str, &dyn Fn() -> String) -> T,
) -> BTreeMap<SetName<'a>, Vec<T>> {
    let mut sets: BTreeMap<SetName<'a>, Vec<T>> = BTreeMap::new();
    if let Some(node) = &snapshot.node {
        let record = || to_json(node);
        sets.entry(SetName::Nodes)
            .or_default()
            .push(entry(&node.id, &record));
    }
    for client in &snapshot.clients {
        let record = || to_json(&**client);
        sets.entry(SetName::User(&client.user))
            .or_default()
            .push(entry(&client.conn, &record));
    }
    for (channel, client) in &snapshot.presence {
        let record = || to_json(&**client);
        sets.entry(SetName::Channel(channel))
            .or_default()
            .push(entry(&client.conn, &record));
    }
    sets
}
