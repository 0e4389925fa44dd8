//! Channel streams in Redis: the meta hash (`o` last offset, `e` epoch)
//! and the history stream (entry id `<offset>-0`, field `f` the frame).
//!
//! Both are written by the publish script, in the same step that assigns
//! the offset, so history never disagrees with what was delivered; and both
//! are read by one script, so a read's position and messages agree. A
//! channel whose meta is gone (never published, expired, Redis restarted
//! without persistence) gets a new epoch and an empty stream: positions
//! from before cannot be resumed, and clients are told so.

use std::time::Duration;

use bytestring::ByteString;

use super::pool::{self, Pool};

use crate::broker::{BrokerError, History, HistoryQuery, Position};
use crate::keys::Keys;
use crate::protocol::new_epoch;

/// How long a channel's offset/epoch survive without a publish (at least;
/// never less than its history's TTL). After that the next publish starts
/// a new epoch, which clients read as "positions reset".
pub(super) const CHANNEL_META_TTL: Duration = Duration::from_secs(86_400);

/// KEYS: meta, pub/sub channel, history stream, idempotency key.
/// ARGV: envelope head, frame head, frame tail, new epoch, meta TTL (s),
/// history size (0: none), history TTL (ms), idempotency window (ms, 0: none).
/// Returns {offset, epoch}.
const PUBLISH_LUA: &str = r#"
if ARGV[8] ~= '0' then
  local first = redis.call('GET', KEYS[4])
  if first then
    local at = string.find(first, ':', 1, true)
    return {tonumber(string.sub(first, 1, at - 1)), string.sub(first, at + 1)}
  end
end
local ep = redis.call('HGET', KEYS[1], 'e')
if not ep then
  ep = ARGV[4]
  redis.call('HSET', KEYS[1], 'e', ep)
  redis.call('DEL', KEYS[3])
end
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
local frame = ARGV[2] .. off .. ',"epoch":"' .. ep .. '"' .. ARGV[3]
if ARGV[6] ~= '0' then
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[6], off .. '-0', 'f', frame)
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
redis.call('PUBLISH', KEYS[2], ARGV[1] .. off .. ',"ep":"' .. ep .. '"}\n' .. frame)
if ARGV[8] ~= '0' then
  redis.call('SET', KEYS[4], off .. ':' .. ep, 'PX', ARGV[8])
end
return {off, ep}
"#;

/// The publish script; on a Redis Cluster it SPUBLISHes (sharded pub/sub:
/// the message stays on its channel's shard, which holds its keys too).
pub(super) fn publish_lua(sharded: bool) -> String {
    match sharded {
        true => PUBLISH_LUA.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"),
        false => PUBLISH_LUA.to_owned(),
    }
}

/// KEYS: meta, history stream. ARGV: first id (`-`: the oldest), count,
/// reverse (1/0), new epoch, meta TTL (s). Returns {epoch, offset, entries}
/// (no entries for a count of 0: only the position is asked for).
const HISTORY_LUA: &str = r#"
local ep = redis.call('HGET', KEYS[1], 'e')
if not ep then
  ep = ARGV[4]
  redis.call('HSET', KEYS[1], 'e', ep)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('DEL', KEYS[2])
end
local off = redis.call('HGET', KEYS[1], 'o') or '0'
local entries = {}
if ARGV[2] == '0' then
  -- only the position
elseif ARGV[3] == '1' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', ARGV[1], 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {ep, off, entries}
"#;

/// Reads channel streams; shared by the broker and its subscriber's gap repair.
pub(super) struct Streams {
    pool: Pool,
    keys: Keys,
    timeout: Duration,
    script: redis::Script,
}

type Entry = (String, Vec<(String, String)>);

impl Streams {
    pub(super) fn new(pool: Pool, keys: Keys, timeout: Duration) -> Streams {
        Streams {
            pool,
            keys,
            timeout,
            script: redis::Script::new(HISTORY_LUA),
        }
    }

    /// A channel's position and the messages the query asks for.
    pub(super) async fn read(
        &self,
        channel: &str,
        q: HistoryQuery,
    ) -> Result<History, BrokerError> {
        let first = match q.since {
            Some(offset) => format!("{}-0", offset + 1),
            None => "-".to_owned(),
        };
        let read = async {
            let mut conn = pool::get(&self.pool).await?;
            self.script
                .key(self.keys.channel_meta(channel))
                .key(self.keys.channel_history(channel))
                .arg(first)
                .arg(q.limit)
                .arg(if q.reverse { "1" } else { "0" })
                .arg(new_epoch())
                .arg(CHANNEL_META_TTL.as_secs())
                .invoke_async::<(String, u64, Vec<Entry>)>(&mut conn)
                .await
                .map_err(BrokerError::unavailable)
        };
        let (epoch, offset, entries) = tokio::time::timeout(self.timeout, read)
            .await
            .unwrap_or(Err(BrokerError::Timeout(self.timeout)))?;
        let mut messages = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let offset = id
                .split_once('-')
                .and_then(|(offset, _)| offset.parse::<u64>().ok());
            let frame = fields.into_iter().find(|(name, _)| name == "f");
            if let (Some(offset), Some((_, frame))) = (offset, frame) {
                messages.push((offset, ByteString::from(frame)));
            }
        }
        Ok(History {
            top: Position { offset, epoch },
            messages,
        })
    }
}

impl Streams {
    /// The current positions of `channels` — (epoch, offset), the epoch
    /// empty for a channel never published to — in one pipelined round trip
    /// (per node, on a cluster).
    pub(super) async fn positions(
        &self,
        channels: &[&str],
    ) -> Result<Vec<(String, u64)>, BrokerError> {
        let read = async {
            let mut conn = pool::get(&self.pool).await?;
            let reads = channels
                .iter()
                .map(|channel| {
                    let mut read = redis::cmd("HMGET");
                    read.arg(self.keys.channel_meta(channel)).arg("e").arg("o");
                    read
                })
                .collect();
            let found = pool::query_all(&mut conn, reads)
                .await
                .map_err(BrokerError::unavailable)?;
            redis::from_redis_value::<Vec<(Option<String>, Option<u64>)>>(redis::Value::Array(
                found,
            ))
            .map_err(BrokerError::unavailable)
        };
        let found = tokio::time::timeout(self.timeout, read)
            .await
            .unwrap_or(Err(BrokerError::Timeout(self.timeout)))?;
        Ok(found
            .into_iter()
            .map(|(epoch, offset)| (epoch.unwrap_or_default(), offset.unwrap_or(0)))
            .collect())
    }
}
