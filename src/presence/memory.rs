//! Single-node presence: plain maps. Entries are removed when connections
//! leave, and the process is the only node, so nothing needs to expire.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::future::{ready, BoxFuture, FutureExt};

use super::{Admission, ClientInfo, NodeInfo, Presence, PresenceError, Snapshot};

#[derive(Debug, Default)]
struct State {
    /// channel -> conn -> member
    channels: BTreeMap<String, BTreeMap<String, Arc<ClientInfo>>>,
    /// user -> conn -> connection
    users: BTreeMap<String, BTreeMap<String, Arc<ClientInfo>>>,
    node: Option<NodeInfo>,
}

#[derive(Debug, Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
}

impl MemoryPresence {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn done<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, Result<T, PresenceError>> {
    ready(Ok(value)).boxed()
}

fn remove(map: &mut BTreeMap<String, BTreeMap<String, Arc<ClientInfo>>>, key: &str, conn: &str) {
    if let Some(members) = map.get_mut(key) {
        members.remove(conn);
        if members.is_empty() {
            map.remove(key);
        }
    }
}

impl Presence for MemoryPresence {
    fn join<'a>(
        &'a self,
        channel: &'a str,
        client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.with(|s| {
            s.channels
                .entry(channel.to_owned())
                .or_default()
                .insert(client.conn.clone(), client.clone())
        });
        done(())
    }

    fn leave<'a>(
        &'a self,
        channel: &'a str,
        conn: &'a str,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.with(|s| remove(&mut s.channels, channel, conn));
        done(())
    }

    fn members<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, PresenceError>> {
        let members = self.with(|s| {
            s.channels
                .get(channel)
                .map(|m| m.values().map(|c| (**c).clone()).collect())
        });
        done(members.unwrap_or_default())
    }

    fn admit<'a>(
        &'a self,
        client: &'a Arc<ClientInfo>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Admission, PresenceError>> {
        // Count and insert under one lock, as the Redis script does.
        let admission = self.with(|s| {
            let held = s.users.get(&client.user).map_or(0, |conns| {
                conns.len() - usize::from(conns.contains_key(&client.conn))
            });
            if held >= limit {
                return Admission::Full(held);
            }
            s.users
                .entry(client.user.clone())
                .or_default()
                .insert(client.conn.clone(), client.clone());
            Admission::Admitted
        });
        done(admission)
    }

    fn unregister<'a>(
        &'a self,
        user: &'a str,
        conn: &'a str,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.with(|s| remove(&mut s.users, user, conn));
        done(())
    }

    fn connections<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, PresenceError>> {
        let conns = self.with(|s| {
            s.users
                .get(user)
                .map(|m| m.values().map(|c| (**c).clone()).collect())
        });
        done(conns.unwrap_or_default())
    }

    fn heartbeat<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.with(|s| s.node = snapshot.node.clone());
        done(())
    }

    fn withdraw<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.with(|s| {
            if let Some(node) = &snapshot.node {
                s.node.take_if(|n| n.id == node.id);
            }
            for client in &snapshot.clients {
                remove(&mut s.users, &client.user, &client.conn);
            }
            for (channel, client) in &snapshot.presence {
                remove(&mut s.channels, channel, &client.conn);
            }
        });
        done(())
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, PresenceError>> {
        done(self.with(|s| s.node.iter().cloned().collect()))
    }
}
