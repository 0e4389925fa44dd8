//! Every Redis key and pub/sub channel name, in one place.
//!
//! All names start with the configured prefix (default `sb`). Names that
//! belong to one channel (or one user) share a hash tag — `{c.NAME}` or
//! `{u.NAME}` — so that a Lua script touching several of them stays on one
//! slot of a Redis Cluster. Channel and user names cannot contain braces
//! (see `protocol::check_channel` / `check_user`), so a tag cannot be broken
//! open by a name.

use crate::topic::Topic;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// Pub/sub channel carrying a channel's messages.
    pub fn channel_pubsub(&self, channel: &str) -> String {
        format!("{}:{{c.{channel}}}:pub", self.prefix)
    }

    /// Hash with a channel's stream state: `o` (last offset), `e` (epoch).
    pub fn channel_meta(&self, channel: &str) -> String {
        format!("{}:{{c.{channel}}}:meta", self.prefix)
    }

    /// Stream of a channel's recent messages (history), id `<offset>-0`,
    /// field `f`: the `message` frame as clients receive it.
    pub fn channel_history(&self, channel: &str) -> String {
        format!("{}:{{c.{channel}}}:history", self.prefix)
    }

    /// A publish's idempotency key: its position, for the window.
    pub fn channel_idempotency(&self, channel: &str, key: &str) -> String {
        format!("{}:{{c.{channel}}}:idem:{key}", self.prefix)
    }

    /// Pub/sub channel carrying a user's direct messages.
    pub fn user_pubsub(&self, user: &str) -> String {
        format!("{}:{{u.{user}}}:direct", self.prefix)
    }

    /// Presence of a channel: hash conn -> member JSON, sorted set conn -> expiry.
    pub fn channel_presence(&self, channel: &str) -> ExpiringSet {
        ExpiringSet::new(format!("{}:{{c.{channel}}}:presence", self.prefix))
    }

    /// Registry of a user's connections on every node.
    pub fn user_connections(&self, user: &str) -> ExpiringSet {
        ExpiringSet::new(format!("{}:{{u.{user}}}:conns", self.prefix))
    }

    /// Node heartbeat records: hash node id -> record JSON, sorted set node id -> expiry.
    pub fn nodes(&self) -> ExpiringSet {
        ExpiringSet::new(format!("{}:{{nodes}}", self.prefix))
    }

    /// The channel whose pub/sub name this is, if it is a channel's.
    pub fn channel_of_pubsub<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{c.")?
            .strip_suffix("}:pub")
    }

    /// Pub/sub name of a topic.
    pub fn topic_pubsub(&self, topic: &Topic) -> String {
        match topic {
            Topic::Channel(c) => self.channel_pubsub(c),
            Topic::User(u) => self.user_pubsub(u),
        }
    }
}

/// A set whose members expire unless refreshed: a hash of member -> value
/// and a sorted set of member -> expiry time (ms), under one hash tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpiringSet {
    pub hash: String,
    pub expiry: String,
}

impl ExpiringSet {
    fn new(base: String) -> Self {
        ExpiringSet {
            expiry: format!("{base}:exp"),
            hash: base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_a_hash_tag_per_channel() {
        let k = Keys::new("sb");
        assert_eq!(k.channel_pubsub("chat:1"), "sb:{c.chat:1}:pub");
        assert_eq!(k.channel_meta("chat:1"), "sb:{c.chat:1}:meta");
        assert_eq!(k.user_pubsub("ann"), "sb:{u.ann}:direct");
        assert_eq!(k.channel_history("chat:1"), "sb:{c.chat:1}:history");
        assert_eq!(k.channel_of_pubsub("sb:{c.chat:1}:pub"), Some("chat:1"));
        assert_eq!(k.channel_of_pubsub("sb:{u.ann}:direct"), None);
        assert_eq!(k.channel_idempotency("chat:1", "k"), "sb:{c.chat:1}:idem:k");
        assert_eq!(
            k.topic_pubsub(&Topic::User("ann".into())),
            k.user_pubsub("ann")
        );
        let p = k.channel_presence("chat:1");
        assert_eq!(
            (p.hash.as_str(), p.expiry.as_str()),
            ("sb:{c.chat:1}:presence", "sb:{c.chat:1}:presence:exp")
        );
        assert_eq!(k.user_connections("ann").hash, "sb:{u.ann}:conns");
        assert_eq!(k.nodes().expiry, "sb:{nodes}:exp");
    }
}
