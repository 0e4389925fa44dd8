//! The envelope a node publishes on Redis: one JSON header line, then the
//! server frame exactly as clients receive it.
//!
//! ```text
//! {"o":"node-a","c":"chat:1","tp":"00-…-01","off":7,"ep":"k3j9x0aa"}\n{"type":"message",…}
//! {"o":"node-a","u":"ann","tp":null}\n{"type":"direct",…}
//! {"o":"node-a","c":"chat:1","tp":null}\n{"type":"join",…}
//! {"o":"node-a","u":"ann","tp":null,"x":"force_disconnect"}\n
//! ```
//!
//! A header with `x` is a control message for the node itself (close every
//! local connection of the user, with that close reason), not a frame.
//!
//! The header tells the receiving node the origin, the topic, the stream
//! position and the trace context without parsing the frame; the frame is
//! forwarded byte for byte to every local subscriber.

use bytestring::ByteString;
use serde::Deserialize;

use crate::disconnect::Disconnect;
use crate::protocol::json_string;
use crate::topic::Topic;

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// Origin node id.
    pub o: String,
    /// Channel, for channel messages.
    #[serde(default)]
    pub c: Option<String>,
    /// User, for direct messages.
    #[serde(default)]
    pub u: Option<String>,
    /// W3C traceparent of the publish.
    #[serde(default)]
    pub tp: Option<String>,
    #[serde(default)]
    pub off: Option<u64>,
    #[serde(default)]
    pub ep: Option<String>,
    /// Control kind: a close reason name from the close-code table.
    #[serde(default)]
    pub x: Option<String>,
}

impl Header {
    pub fn topic(&self) -> Option<Topic> {
        match (&self.c, &self.u) {
            (Some(c), None) => Some(Topic::Channel(c.clone())),
            (None, Some(u)) => Some(Topic::User(u.clone())),
            _ => None,
        }
    }
}

fn traceparent_json(tp: Option<&str>) -> String {
    tp.map_or_else(|| "null".to_owned(), json_string)
}

/// The start of a channel envelope, up to the offset the broker fills in.
/// Completed by `<offset>,"ep":"<epoch>"}\n<frame>`.
pub fn channel_head(origin: &str, channel: &str, traceparent: Option<&str>) -> String {
    format!(
        "{{\"o\":{},\"c\":{},\"tp\":{},\"off\":",
        json_string(origin),
        json_string(channel),
        traceparent_json(traceparent)
    )
}

/// A complete direct-message envelope.
pub fn direct(origin: &str, user: &str, traceparent: Option<&str>, frame: &str) -> String {
    format!(
        "{{\"o\":{},\"u\":{},\"tp\":{}}}\n{frame}",
        json_string(origin),
        json_string(user),
        traceparent_json(traceparent)
    )
}

/// A channel event outside the offset stream (`join`, `leave`).
pub fn event(origin: &str, channel: &str, frame: &str) -> String {
    format!(
        "{{\"o\":{},\"c\":{},\"tp\":null}}\n{frame}",
        json_string(origin),
        json_string(channel)
    )
}

/// Close every connection of `user`, on whichever node holds it.
pub fn control(origin: &str, user: &str, reason: Disconnect) -> String {
    format!(
        "{{\"o\":{},\"u\":{},\"tp\":null,\"x\":{}}}\n",
        json_string(origin),
        json_string(user),
        json_string(reason.name())
    )
}

/// What a payload asks the receiving node to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Forward the frame to the topic's local subscribers.
    Frame { topic: Topic, frame: ByteString },
    /// Close the user's local connections.
    Disconnect { user: String, reason: Disconnect },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("no header line")]
    NoHeader,
    #[error("bad header: {0}")]
    BadHeader(String),
    #[error("header names neither a channel nor a user")]
    NoTopic,
    #[error("frame is not UTF-8")]
    NotUtf8,
    #[error("unknown control {0:?}")]
    UnknownControl(String),
}

/// Split a payload into its header and what to do with it.
pub fn decode(payload: &[u8]) -> Result<(Header, Delivery), EnvelopeError> {
    let newline = payload
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(EnvelopeError::NoHeader)?;
    let header: Header = serde_json::from_slice(&payload[..newline])
        .map_err(|e| EnvelopeError::BadHeader(e.to_string()))?;
    let topic = header.topic().ok_or(EnvelopeError::NoTopic)?;
    if let Some(kind) = &header.x {
        let reason = Disconnect::from_name(kind)
            .ok_or_else(|| EnvelopeError::UnknownControl(kind.clone()))?;
        let Topic::User(user) = topic else {
            return Err(EnvelopeError::UnknownControl(format!(
                "{kind} on a channel"
            )));
        };
        return Ok((header, Delivery::Disconnect { user, reason }));
    }
    let frame = std::str::from_utf8(&payload[newline + 1..]).map_err(|_| EnvelopeError::NotUtf8)?;
    let frame = ByteString::from(frame);
    Ok((header, Delivery::Frame { topic, frame }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_envelope_round_trips() {
        let mut payload = channel_head("n1", "chat:1", Some("00-abc-def-01"));
        payload.push_str("7,\"ep\":\"e1\"}\n{\"type\":\"message\"}");
        let (h, delivery) = decode(payload.as_bytes()).unwrap();
        let Delivery::Frame { topic, frame } = delivery else {
            panic!("{delivery:?}")
        };
        assert_eq!(h.o, "n1");
        assert_eq!(h.off, Some(7));
        assert_eq!(h.ep.as_deref(), Some("e1"));
        assert_eq!(h.tp.as_deref(), Some("00-abc-def-01"));
        assert_eq!(topic, Topic::Channel("chat:1".into()));
        assert_eq!(frame, "{\"type\":\"message\"}");
    }

    #[test]
    fn direct_envelope_round_trips() {
        let payload = direct("n1", "ann \"x\"", None, "{\"type\":\"direct\"}\n");
        let (h, delivery) = decode(payload.as_bytes()).unwrap();
        let Delivery::Frame { topic, frame } = delivery else {
            panic!("{delivery:?}")
        };
        assert_eq!(h.tp, None);
        assert_eq!(topic, Topic::User("ann \"x\"".into()));
        assert_eq!(frame, "{\"type\":\"direct\"}\n");
    }

    #[test]
    fn events_and_controls_round_trip() {
        let (_, d) = decode(event("n1", "c", "{\"type\":\"join\"}").as_bytes()).unwrap();
        assert_eq!(
            d,
            Delivery::Frame {
                topic: Topic::Channel("c".into()),
                frame: "{\"type\":\"join\"}".into()
            }
        );
        let (_, d) = decode(control("n1", "bob", Disconnect::ForceDisconnect).as_bytes()).unwrap();
        assert_eq!(
            d,
            Delivery::Disconnect {
                user: "bob".into(),
                reason: Disconnect::ForceDisconnect
            }
        );
        let bad = "{\"o\":\"n\",\"u\":\"bob\",\"x\":\"explode\"}\n";
        assert!(matches!(
            decode(bad.as_bytes()).unwrap_err(),
            EnvelopeError::UnknownControl(_)
        ));
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(decode(b"no newline").unwrap_err(), EnvelopeError::NoHeader);
        assert!(matches!(
            decode(b"{]\n{}").unwrap_err(),
            EnvelopeError::BadHeader(_)
        ));
        assert_eq!(
            decode(b"{\"o\":\"n\"}\n{}").unwrap_err(),
            EnvelopeError::NoTopic
        );
        assert_eq!(
            decode(b"{\"o\":\"n\",\"u\":\"a\"}\n\xff").unwrap_err(),
            EnvelopeError::NotUtf8
        );
    }
}
