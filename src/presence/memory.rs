//! Single-node expiring sets: maps under one lock, with the same expiry as
//! the Redis store (entries live for the TTL unless refreshed, readers
//! drop what has expired), so both backends behave alike.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::{ready, BoxFuture, FutureExt};

use super::{Additions, Admission, ExpiringSets, PresenceError, Removals, SetName};

/// A set's owner: the owned form of a [`SetName`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SetKey {
    Channel(String),
    User(String),
    Nodes,
}

impl From<SetName<'_>> for SetKey {
    fn from(set: SetName<'_>) -> SetKey {
        match set {
            SetName::Channel(c) => SetKey::Channel(c.to_owned()),
            SetName::User(u) => SetKey::User(u.to_owned()),
            SetName::Nodes => SetKey::Nodes,
        }
    }
}

type Members = BTreeMap<String, (String, u64)>;

/// member -> (value, expiry in ms of the store's monotonic clock)
pub struct MemorySets {
    sets: Mutex<BTreeMap<SetKey, Members>>,
    ttl_ms: u64,
    /// The store's clock starts here (monotonic: a wall-clock jump cannot
    /// expire or revive entries).
    epoch: Instant,
}

fn done<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, Result<T, PresenceError>> {
    ready(Ok(value)).boxed()
}

impl MemorySets {
    pub fn new(ttl: Duration) -> MemorySets {
        MemorySets {
            sets: Mutex::new(BTreeMap::new()),
            ttl_ms: ttl.as_millis() as u64,
            epoch: Instant::now(),
        }
    }

    /// The live members of `set` after dropping the expired ones (and the
    /// set itself once empty), under the lock.
    fn with_live<T>(&self, set: SetName<'_>, f: impl FnOnce(&mut Members, u64) -> T) -> T {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let key = SetKey::from(set);
        let now = self.epoch.elapsed().as_millis() as u64;
        let members = sets.entry(key.clone()).or_default();
        members.retain(|_, (_, expires)| *expires > now);
        let result = f(members, now);
        if members.is_empty() {
            sets.remove(&key);
        }
        result
    }
}

impl ExpiringSets for MemorySets {
    fn add<'a>(&'a self, sets: &'a [Additions<'a>]) -> BoxFuture<'a, Result<(), PresenceError>> {
        for (set, entries) in sets {
            self.with_live(*set, |members, now| {
                for (member, value) in entries {
                    members.insert((*member).to_owned(), (value.clone(), now + self.ttl_ms));
                }
            });
        }
        done(())
    }

    fn remove<'a>(&'a self, sets: &'a [Removals<'a>]) -> BoxFuture<'a, Result<(), PresenceError>> {
        for (set, gone) in sets {
            self.with_live(*set, |members, _| {
                for member in gone {
                    members.remove(*member);
                }
            });
        }
        done(())
    }

    fn list<'a>(
        &'a self,
        set: SetName<'a>,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, PresenceError>> {
        done(self.with_live(set, |members, _| {
            members
                .iter()
                .map(|(member, (value, _))| (member.clone(), value.clone()))
                .collect()
        }))
    }

    fn add_within<'a>(
        &'a self,
        set: SetName<'a>,
        member: &'a str,
        value: String,
        limit: usize,
    ) -> BoxFuture<'a, Result<Admission, PresenceError>> {
        // Count and insert under one lock, as the Redis script does.
        done(self.with_live(set, |members, now| {
            let others = members.len() - usize::from(members.contains_key(member));
            if others >= limit {
                return Admission::Full(others);
            }
            members.insert(member.to_owned(), (value, now + self.ttl_ms));
            Admission::Admitted
        }))
    }
}
