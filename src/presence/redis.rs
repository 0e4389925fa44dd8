//! The cluster's expiring sets in Redis. Each set is a hash (member -> JSON) plus a
//! sorted set (member -> expiry in ms, Redis clock), changed only by the
//! Lua scripts below so the two never disagree. Reads drop expired members
//! first; writes extend both keys' TTL so a set nobody refreshes vanishes.
//! The Redis clock is used throughout, so node clock skew cannot make one
//! node's entries look expired to another.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::broker::redis::{connection, query_all, Pool};
use futures_util::future::{BoxFuture, FutureExt};

use super::{Additions, Admission, ExpiringSets, PresenceError, Removals, SetName};
use crate::keys::{ExpiringSet, Keys};

/// KEYS: hash, expiry zset. ARGV: ttl ms, then member, value pairs.
const ADD_LUA: &str = r#"
local t = redis.call('TIME')
local expires = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: hash, expiry zset. ARGV: members.
const REMOVE_LUA: &str = r#"
redis.call('HDEL', KEYS[1], unpack(ARGV))
redis.call('ZREM', KEYS[2], unpack(ARGV))
return 1
"#;

/// Lua that sets `now` (ms, Redis clock) and drops the expired members of
/// the set in KEYS[1] (hash) and KEYS[2] (expiry zset).
macro_rules! drop_expired_lua {
    () => {
        r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, #expired, 500 do
  redis.call('HDEL', KEYS[1], unpack(expired, i, math.min(i + 499, #expired)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
"#
    };
}

/// KEYS: hash, expiry zset. Drops expired members, returns the rest (HGETALL).
const LIST_LUA: &str = concat!(
    drop_expired_lua!(),
    "return redis.call('HGETALL', KEYS[1])\n"
);

/// KEYS: hash, expiry zset. ARGV: ttl ms, limit, member, value. Drops
/// expired members, then adds the member (as ADD_LUA does) only if fewer
/// than `limit` others are live: one atomic check-and-register. Returns
/// {1, others} when added, {0, live} when not.
const ADMIT_LUA: &str = concat!(
    drop_expired_lua!(),
    r#"
local live = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  live = live - 1
end
if live >= tonumber(ARGV[2]) then
  return {0, live}
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {1, live}
"#
);

/// Commands per pipelined round trip during a heartbeat (or a withdrawal).
const HEARTBEAT_BATCH: usize = 256;

/// Members per call of the removal script when a node withdraws.
const REMOVE_CHUNK: usize = 500;

pub struct RedisSets {
    pool: Pool,
    keys: Keys,
    /// How long an entry lives without a refresh.
    ttl: Duration,
    timeout: Duration,
    add: redis::Script,
    remove: redis::Script,
    list: redis::Script,
    admit: redis::Script,
}

fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PresenceError {
    PresenceError::Unavailable(e.into())
}

impl RedisSets {
    pub fn new(pool: Pool, keys: Keys, ttl: Duration, timeout: Duration) -> Self {
        RedisSets {
            pool,
            keys,
            ttl,
            timeout,
            add: redis::Script::new(ADD_LUA),
            remove: redis::Script::new(REMOVE_LUA),
            list: redis::Script::new(LIST_LUA),
            admit: redis::Script::new(ADMIT_LUA),
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, PresenceError>>,
    ) -> Result<T, PresenceError> {
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or(Err(PresenceError::Timeout(self.timeout)))
    }

    /// The Redis keys of a set.
    fn keys_of(&self, set: SetName<'_>) -> ExpiringSet {
        match set {
            SetName::Channel(channel) => self.keys.channel_presence(channel),
            SetName::User(user) => self.keys.user_connections(user),
            SetName::Nodes => self.keys.nodes(),
        }
    }

    /// Run `script` once on one set: the common single-entry case (a join,
    /// a leave), one round trip (EVALSHA, loading the script if needed).
    async fn on_set(
        &self,
        script: &redis::Script,
        set: &ExpiringSet,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<(), PresenceError> {
        self.bounded(async {
            let mut conn = connection(&self.pool).await.map_err(unavailable)?;
            let mut call = script.key(&set.hash);
            call.key(&set.expiry);
            args(&mut call);
            call.invoke_async::<i64>(&mut conn)
                .await
                .map_err(unavailable)
                .map(drop)
        })
        .await
    }
}

impl RedisSets {
    /// Run `script` (whose source is `source`) once per set, with the set's
    /// hash and expiry keys and the arguments `args` appends, pipelined in
    /// batches; each round trip is bounded by the timeout.
    async fn per_set<T>(
        &self,
        script: &redis::Script,
        source: &str,
        sets: &[(ExpiringSet, T)],
        args: impl Fn(&mut redis::Cmd, &T),
    ) -> Result<(), PresenceError> {
        let mut conn = self
            .bounded(async { connection(&self.pool).await.map_err(unavailable) })
            .await?;
        // EVALSHA in a pipeline needs the script loaded (Redis may have restarted).
        self.bounded(async {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(source)
                .query_async::<String>(&mut conn)
                .await
                .map_err(unavailable)
        })
        .await?;
        for batch in sets.chunks(HEARTBEAT_BATCH) {
            let calls = batch
                .iter()
                .map(|(set, set_args)| {
                    let mut call = redis::cmd("EVALSHA");
                    call.arg(script.get_hash())
                        .arg(2)
                        .arg(&set.hash)
                        .arg(&set.expiry);
                    args(&mut call, set_args);
                    call
                })
                .collect();
            self.bounded(async {
                query_all(&mut conn, calls)
                    .await
                    .map_err(unavailable)
                    .map(drop)
            })
            .await?;
        }
        Ok(())
    }
}

impl ExpiringSets for RedisSets {
    fn add<'a>(&'a self, sets: &'a [Additions<'a>]) -> BoxFuture<'a, Result<(), PresenceError>> {
        let ttl = self.ttl_ms();
        async move {
            if let [(set, members)] = sets {
                let set = self.keys_of(*set);
                return self
                    .on_set(&self.add, &set, |call| {
                        call.arg(ttl);
                        for (member, value) in members {
                            call.arg(*member).arg(value);
                        }
                    })
                    .await;
            }
            let calls: Vec<_> = sets
                .iter()
                .map(|(set, members)| (self.keys_of(*set), members))
                .collect();
            self.per_set(&self.add, ADD_LUA, &calls, |cmd, members| {
                cmd.arg(ttl);
                for (member, value) in *members {
                    cmd.arg(*member).arg(value);
                }
            })
            .await
        }
        .boxed()
    }

    fn remove<'a>(&'a self, sets: &'a [Removals<'a>]) -> BoxFuture<'a, Result<(), PresenceError>> {
        async move {
            if let [(set, members)] = sets {
                if members.len() <= REMOVE_CHUNK {
                    let set = self.keys_of(*set);
                    return self
                        .on_set(&self.remove, &set, |call| {
                            call.arg(members);
                        })
                        .await;
                }
            }
            // The removal script unpacks its members onto Lua's stack, which
            // is bounded: a set's members go in chunks.
            let calls: Vec<_> = sets
                .iter()
                .flat_map(|(set, members)| {
                    let keys = self.keys_of(*set);
                    members
                        .chunks(REMOVE_CHUNK)
                        .map(move |chunk| (keys.clone(), chunk))
                })
                .collect();
            self.per_set(&self.remove, REMOVE_LUA, &calls, |cmd, members| {
                cmd.arg(*members);
            })
            .await
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        set: SetName<'a>,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, PresenceError>> {
        async move {
            let set = self.keys_of(set);
            let flat: Vec<String> = self
                .bounded(async {
                    let mut conn = connection(&self.pool).await.map_err(unavailable)?;
                    self.list
                        .key(&set.hash)
                        .key(&set.expiry)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(unavailable)
                })
                .await?;
            let mut by_member = BTreeMap::new();
            let mut flat = flat.into_iter();
            while let (Some(member), Some(value)) = (flat.next(), flat.next()) {
                by_member.insert(member, value);
            }
            Ok(by_member.into_iter().collect())
        }
        .boxed()
    }

    fn add_within<'a>(
        &'a self,
        set: SetName<'a>,
        member: &'a str,
        value: String,
        limit: usize,
    ) -> BoxFuture<'a, Result<Admission, PresenceError>> {
        let set = self.keys_of(set);
        async move {
            let (added, live): (i64, u64) = self
                .bounded(async {
                    let mut conn = connection(&self.pool).await.map_err(unavailable)?;
                    self.admit
                        .key(&set.hash)
                        .key(&set.expiry)
                        .arg(self.ttl_ms())
                        .arg(limit)
                        .arg(member)
                        .arg(value)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(unavailable)
                })
                .await?;
            Ok(if added == 1 {
                Admission::Admitted
            } else {
                Admission::Full(live as usize)
            })
        }
        .boxed()
    }
}
