//! What a node's hub and broker route by: a channel, or a user's direct
//! inbox. Kept apart from `keys` (how Redis names them) so that the hub,
//! which knows nothing of Redis, does not depend on Redis naming.

/// A subscription target on the broker: a channel, or a user's direct inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Channel(String),
    User(String),
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topic::Channel(c) => write!(f, "channel {c}"),
            Topic::User(u) => write!(f, "user {u}"),
        }
    }
}
