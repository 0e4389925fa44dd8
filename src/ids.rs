//! The names a client or a backend hands the gateway — channels and users —
//! parsed once, at the edge (a decoded frame, an API body or path, a token's
//! `sub`), into types that cannot hold an invalid name. Everything past the
//! edge takes these types and checks nothing again.
//!
//! The allowed characters keep names safe inside Redis hash tags (`{...}`,
//! see `keys`) and log lines. Connection ids are the hub's `ConnId`: the
//! node makes them, so they are never parsed.

use std::fmt;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;
/// Longest user name, in bytes.
pub const MAX_USER_LEN: usize = 255;

/// A name that failed to parse; the message says what is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("channel must be 1-{MAX_CHANNEL_LEN} characters of [A-Za-z0-9_-.:@/=]")]
    Channel,
    #[error("user must be 1-{MAX_USER_LEN} bytes without control characters or braces")]
    User,
}

/// A channel name: 1..=255 bytes of `[A-Za-z0-9_\-.:@/=]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn parse(name: impl AsRef<str> + Into<String>) -> Result<ChannelName, NameError> {
        let s = name.as_ref();
        let ok = !s.is_empty()
            && s.len() <= MAX_CHANNEL_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:@/=".contains(&b));
        if ok {
            Ok(ChannelName(name.into()))
        } else {
            Err(NameError::Channel)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user name: 1..=255 bytes, no control characters, no `{` or `}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn parse(name: impl AsRef<str> + Into<String>) -> Result<UserId, NameError> {
        let s = name.as_ref();
        let ok = !s.is_empty()
            && s.len() <= MAX_USER_LEN
            && !s.chars().any(|c| c.is_control() || c == '{' || c == '}');
        if ok {
            Ok(UserId(name.into()))
        } else {
            Err(NameError::User)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh name for a client that connects without one.
    pub fn anonymous() -> UserId {
        UserId(format!("anon-{:08x}", fastrand::u32(..)))
    }
}

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A publish's idempotency key: 1..=128 bytes of visible ASCII (no spaces).
/// Parsed by serde, so a bad key is a bad frame or a bad request body.
#[derive(Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct IdempotencyKey(String);

impl TryFrom<String> for IdempotencyKey {
    type Error = String;

    fn try_from(key: String) -> Result<Self, String> {
        let ok = !key.is_empty()
            && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(IdempotencyKey(key))
        } else {
            Err(format!(
                "idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters of visible ASCII"
            ))
        }
    }
}

macro_rules! name_traits {
    ($($name:ident),*) => {$(
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        /// Shown as the quoted name, like the string it is.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

name_traits!(ChannelName, UserId, IdempotencyKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for good in ["a", "chat:1", "user:ann", "x_y-z.w@v/u=t", &"c".repeat(255)] {
            assert_eq!(ChannelName::parse(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["", "a b", "a{b}", "é", "a\n", &"c".repeat(256)] {
            assert_eq!(ChannelName::parse(bad), Err(NameError::Channel), "{bad:?}");
        }
    }

    #[test]
    fn idempotency_keys() {
        for good in ["k", "order-42:retry", &"k".repeat(128)] {
            assert!(IdempotencyKey::try_from(good.to_owned()).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "tab\t", &"k".repeat(129)] {
            assert!(IdempotencyKey::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_names() {
        for good in ["ann", "Ann Smith", "é", "a:b", &"u".repeat(255)] {
            assert_eq!(UserId::parse(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["", "a{", "}", "a\u{0}", "tab\t", &"u".repeat(256)] {
            assert_eq!(UserId::parse(bad), Err(NameError::User), "{bad:?}");
        }
    }
}
