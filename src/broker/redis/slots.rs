//! Redis Cluster's key space: the slot of a key or shard channel, and
//! which master serves each slot (`CLUSTER SLOTS`). The command connection
//! keeps its own map inside redis-rs; the shard subscribers need one of
//! their own to know which master to SSUBSCRIBE on.

use std::time::Duration;

use redis::Value;

use super::target::{client, ClusterSpec};
use crate::config::RedisTls;

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The slot of `key`: CRC16 (XMODEM) of its hash tag — the part between
/// the first `{` and the next `}`, if not empty — else of the whole key.
pub fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

/// Which master (`host:port`) serves each slot range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// (first slot, last slot, master), sorted by first slot.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    /// The master serving `slot`, if the map has one.
    pub fn master(&self, slot: u16) -> Option<&str> {
        let i = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, master) = self.ranges.get(i.checked_sub(1)?)?;
        (slot <= *last).then_some(master.as_str())
    }

    /// Whether `node` masters any slot.
    pub fn is_master(&self, node: &str) -> bool {
        self.ranges.iter().any(|(_, _, master)| master == node)
    }

    /// Ask the nodes in `known`, then the seeds, in turn for the map; the
    /// first answer wins. Each ask is bounded by `timeout`.
    pub async fn load(
        spec: &ClusterSpec,
        tls: &RedisTls,
        known: impl IntoIterator<Item = String>,
        timeout: Duration,
    ) -> Result<SlotMap, String> {
        let mut last = "no node to ask".to_owned();
        for node in known.into_iter().chain(spec.seeds.iter().cloned()) {
            let ask = async {
                let mut conn = client(&spec.node_url(&node), tls)?
                    .get_multiplexed_async_connection()
                    .await?;
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Value>(&mut conn)
                    .await
            };
            match tokio::time::timeout(timeout, ask).await {
                Ok(Ok(answer)) => match SlotMap::parse(&answer, &node) {
                    Some(map) => return Ok(map),
                    None => last = format!("{node}: CLUSTER SLOTS not understood"),
                },
                Ok(Err(e)) => last = format!("{node}: {e}"),
                Err(_) => last = format!("{node}: timed out"),
            }
        }
        Err(last)
    }

    /// A `CLUSTER SLOTS` answer from `asked`: entries of
    /// `[first, last, [host, port, id, ...], replicas...]`. A master with
    /// no known host is at `asked`'s host. None if it assigns no slot.
    fn parse(answer: &Value, asked: &str) -> Option<SlotMap> {
        let Value::Array(entries) = answer else {
            return None;
        };
        let asked_host = asked.rsplit_once(':').map_or(asked, |(host, _)| host);
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                return None;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) if !host.is_empty() && host != b"?" => {
                    String::from_utf8_lossy(host).into_owned()
                }
                _ => asked_host.to_owned(),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            ranges.push((*first as u16, *last as u16, format!("{host}:{port}")));
        }
        ranges.sort();
        (!ranges.is_empty()).then_some(SlotMap { ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_keyslots() {
        // Values from `CLUSTER KEYSLOT` of Redis 7.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("sb:{c.chat:1}:pub"), slot("c.chat:1"));
        assert_eq!(slot("sb:{c.chat:1}:meta"), slot("sb:{c.chat:1}:history"));
        // An empty tag is no tag.
        assert_eq!(slot("a{}b"), crc16(b"a{}b") % SLOTS);
        assert_eq!(slot("123456789"), 0x31C3 % SLOTS);
    }

    #[test]
    fn the_map_finds_each_slots_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("10.0.0.2", 7001),
                node("10.0.0.5", 7004),
            ]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("", 7000)]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("10.0.0.3", 7002),
            ]),
        ]);
        let map = SlotMap::parse(&answer, "seed:7000").unwrap();
        assert_eq!(map.master(0), Some("seed:7000"));
        assert_eq!(map.master(5461), Some("10.0.0.2:7001"));
        assert_eq!(map.master(16383), Some("10.0.0.3:7002"));
        let partial = SlotMap::parse(
            &Value::Array(vec![Value::Array(vec![
                Value::Int(100),
                Value::Int(200),
                node("h", 1),
            ])]),
            "h:1",
        )
        .unwrap();
        assert_eq!((partial.master(99), partial.master(201)), (None, None));
        assert_eq!(SlotMap::parse(&Value::Array(vec![]), "h:1"), None);
    }
}
