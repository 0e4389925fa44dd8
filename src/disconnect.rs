//! Why the server closes a connection, and the one table that maps each
//! reason to a WebSocket close code.
//!
//! Application codes follow Centrifugo's split so that a client can decide
//! without a lookup table of its own: 3000–3499 means "reconnect (with
//! backoff)", 3500–3999 means "do not reconnect without changing something".
//! Standard codes (1000–1015) are used where RFC 6455 already has a meaning.
//! docs/protocol.md repeats this table; a test keeps the two in step.

use actix_http::ws::{CloseCode, CloseReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Variant names are the wire's reason names (`force_disconnect`, ...).
#[allow(clippy::enum_variant_names)]
pub enum Disconnect {
    /// The node is draining (SIGTERM, rolling update): reconnect elsewhere.
    Shutdown,
    /// The outbound queue filled up: the client does not read fast enough.
    SlowConsumer,
    /// No frame (not even a pong) within the heartbeat timeout.
    HeartbeatTimeout,
    /// A frame larger than `max_message_bytes`.
    MessageTooBig,
    /// A text message that is not valid UTF-8.
    InvalidPayload,
    /// The WebSocket framing itself was broken (bad opcode, unmasked frame, ...).
    ProtocolError,
    /// A server-side failure that the client cannot fix.
    InternalError,
    /// Closed through the server API, asking the client to reconnect.
    ForceReconnect,
    /// Closed through the server API; the client must not reconnect as is.
    ForceDisconnect,
    /// Kept sending far over `max_messages_per_second`.
    RateLimitExceeded,
    /// The token expired and was not refreshed: reconnect with a new one.
    TokenExpired,
}

/// One row of the close-code table.
pub struct CloseCodeRow {
    pub reason: Disconnect,
    pub code: u16,
    pub name: &'static str,
    pub reconnect: bool,
}

/// Every close the server initiates.
#[rustfmt::skip]
pub const CLOSE_CODES: &[CloseCodeRow] = &[
    CloseCodeRow { reason: Disconnect::Shutdown, code: 3001, name: "shutdown", reconnect: true },
    CloseCodeRow { reason: Disconnect::SlowConsumer, code: 3002, name: "slow_consumer", reconnect: true },
    CloseCodeRow { reason: Disconnect::HeartbeatTimeout, code: 3003, name: "heartbeat_timeout", reconnect: true },
    CloseCodeRow { reason: Disconnect::InternalError, code: 3004, name: "internal_error", reconnect: true },
    CloseCodeRow { reason: Disconnect::ForceReconnect, code: 3005, name: "force_reconnect", reconnect: true },
    CloseCodeRow { reason: Disconnect::TokenExpired, code: 3006, name: "token_expired", reconnect: true },
    CloseCodeRow { reason: Disconnect::ForceDisconnect, code: 3501, name: "force_disconnect", reconnect: false },
    CloseCodeRow { reason: Disconnect::RateLimitExceeded, code: 3502, name: "rate_limit_exceeded", reconnect: false },
    CloseCodeRow { reason: Disconnect::MessageTooBig, code: 1009, name: "message_too_big", reconnect: false },
    CloseCodeRow { reason: Disconnect::InvalidPayload, code: 1007, name: "invalid_payload", reconnect: false },
    CloseCodeRow { reason: Disconnect::ProtocolError, code: 1002, name: "protocol_error", reconnect: false },
];

impl Disconnect {
    pub fn row(self) -> &'static CloseCodeRow {
        CLOSE_CODES
            .iter()
            .find(|r| r.reason == self)
            .expect("every Disconnect has a row in CLOSE_CODES")
    }

    pub fn code(self) -> u16 {
        self.row().code
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// The reason with this table name (as carried between nodes).
    pub fn from_name(name: &str) -> Option<Disconnect> {
        CLOSE_CODES
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.reason)
    }

    pub fn close_reason(self) -> CloseReason {
        CloseReason {
            code: CloseCode::from(self.code()),
            description: Some(self.name().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_codes_follow_the_reconnect_ranges() {
        for row in CLOSE_CODES {
            if (3000..4000).contains(&row.code) {
                assert_eq!(row.reconnect, row.code < 3500, "{}", row.name);
            }
        }
    }

    #[test]
    fn docs_list_every_code() {
        let doc = include_str!("../docs/protocol.md");
        for row in CLOSE_CODES {
            let needle = format!("| {} | `{}` |", row.code, row.name);
            assert!(
                doc.contains(&needle),
                "docs/protocol.md lacks the row {needle:?}"
            );
        }
    }
}
