//! Wire protocol v1: JSON text frames, one object per frame, tagged by `type`.
//!
//! Inbound frames are decoded in two steps: first into a flat `RawFrame`
//! with every field optional (so that `id` survives a frame that is otherwise
//! wrong and the error can be echoed to it), then into a typed [`Command`]
//! with a precise message for what is missing. `data` stays a borrowed
//! `RawValue`: the gateway never re-serialises a payload it only forwards.
//!
//! Outbound frames are `ServerFrame`s, except the hot `message` frame,
//! which is spliced around its offset and epoch by `MessageParts` so that a
//! broker can fill them in (the Redis broker does it inside a Lua script).

mod decode;
mod frames;

use serde::Serialize;

pub use decode::{decode, Command, DecodeError, Request, StreamPosition, MAX_DATA_DEPTH};

pub(crate) use decode::{check_data, peek_id};
pub(crate) use frames::{json_string, new_epoch, MessageParts, ServerFrame};

/// Error codes carried in `reply.error.code` and `error.error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, or a missing/mistyped field.
    BadFrame,
    /// Channel name empty, too long or with characters outside the allowed set.
    BadChannel,
    /// The channel's namespace is not configured on this gateway.
    UnknownChannel,
    /// User name empty, too long or with control characters.
    BadUser,
    AlreadySubscribed,
    NotSubscribed,
    /// A per-connection limit was reached (e.g. subscriptions).
    LimitExceeded,
    /// Too many frames per second: this frame was not processed.
    RateLimited,
    /// `refresh`: the token does not verify, or is for another user.
    BadToken,
    /// The namespace's rules do not allow this connection to do that.
    Forbidden,
    /// The broker (Redis) did not answer in time; nothing was published.
    BrokerUnavailable,
    /// `history {since}`: the position is from another epoch of the channel
    /// (its history was reset); read without `since`.
    UnrecoverablePosition,
    /// The channel's namespace does not enable this feature (e.g. presence).
    NotEnabled,
    /// Server API: missing or wrong API key.
    Unauthorized,
    /// Server API: the body is not the JSON the endpoint takes.
    BadRequest,
    /// Server API: the body is larger than the limit.
    PayloadTooLarge,
    /// Server API: no such endpoint (or not with this method).
    NotFound,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
