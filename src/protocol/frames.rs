//! Server frames: the typed [`ServerFrame`]s, encoded once, and the hot
//! `message` frame spliced around its offset and epoch ([`MessageParts`]).

use serde::Serialize;
use serde_json::value::RawValue;

use super::ErrorBody;
use crate::presence::ClientInfo;

/// Frames the server sends. `message` is normally built by [`MessageParts`];
/// the variant exists so that its shape is declared in one place and tested.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        conn: &'a str,
        node: &'a str,
        user: &'a str,
        heartbeat_ms: u64,
    },
    Reply {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ok: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
        /// Offset and epoch given to a published message.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        /// Members, in the answer to `presence`.
        #[serde(skip_serializing_if = "Option::is_none")]
        members: Option<&'a [ClientInfo]>,
        /// `subscribe {since}`: whether every missed message follows.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// `message` frames, in the answer to `history`.
        #[serde(skip_serializing_if = "Option::is_none")]
        messages: Option<&'a [&'a RawValue]>,
    },
    Error {
        error: ErrorBody,
    },
    /// Built by [`MessageParts`] on the hot path; declared for its shape and test.
    #[cfg_attr(not(test), allow(dead_code))]
    Message {
        channel: &'a str,
        offset: u64,
        epoch: &'a str,
        from: &'a str,
        data: &'a RawValue,
    },
    Direct {
        from: &'a str,
        data: &'a RawValue,
    },
    Join {
        channel: &'a str,
        user: &'a str,
        conn: &'a str,
    },
    Leave {
        channel: &'a str,
        user: &'a str,
        conn: &'a str,
    },
    /// Messages of `channel` may have been lost before the next one: the
    /// client must reload what it shows from its source of truth.
    Resync {
        channel: &'a str,
        reason: &'a str,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

impl<'a> ServerFrame<'a> {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }

    pub fn ok(id: Option<u64>) -> Self {
        Self::success(id)
    }

    /// The answer to a `publish`: where the message landed.
    pub fn published(id: Option<u64>, offset: u64, epoch: &'a str) -> Self {
        Self::success(id).at(Some((offset, epoch)))
    }

    /// The answer to a `subscribe`: the channel's position (on channels
    /// with history, or when asked to recover) and whether it recovered.
    pub fn subscribed(
        id: Option<u64>,
        position: Option<(u64, &'a str)>,
        recovered: Option<bool>,
    ) -> Self {
        let mut frame = Self::success(id).at(position);
        if let ServerFrame::Reply { recovered: r, .. } = &mut frame {
            *r = recovered;
        }
        frame
    }

    /// The answer to a `history` request: the channel's position and messages.
    pub fn history(
        id: Option<u64>,
        offset: u64,
        epoch: &'a str,
        messages: &'a [&'a RawValue],
    ) -> Self {
        let mut frame = Self::success(id).at(Some((offset, epoch)));
        if let ServerFrame::Reply { messages: m, .. } = &mut frame {
            *m = Some(messages);
        }
        frame
    }

    /// The answer to a `presence` request.
    pub fn members(id: Option<u64>, members: &'a [ClientInfo]) -> Self {
        let mut frame = Self::success(id);
        if let ServerFrame::Reply { members: m, .. } = &mut frame {
            *m = Some(members);
        }
        frame
    }

    fn success(id: Option<u64>) -> Self {
        ServerFrame::Reply {
            id,
            ok: Some(true),
            error: None,
            offset: None,
            epoch: None,
            members: None,
            recovered: None,
            messages: None,
        }
    }

    /// With a stream position.
    fn at(mut self, position: Option<(u64, &'a str)>) -> Self {
        if let ServerFrame::Reply { offset, epoch, .. } = &mut self {
            *offset = position.map(|(offset, _)| offset);
            *epoch = position.map(|(_, epoch)| epoch);
        }
        self
    }

    /// A failed command: a `reply` when the command had an id, an `error`
    /// frame otherwise (the contract's rule for frames without an id).
    pub fn failure(id: Option<u64>, error: ErrorBody) -> Self {
        match id {
            Some(_) => ServerFrame::Reply {
                id,
                ok: None,
                error: Some(error),
                offset: None,
                epoch: None,
                members: None,
                recovered: None,
                messages: None,
            },
            None => ServerFrame::Error { error },
        }
    }
}

/// A `message` frame split around its offset and epoch, which only the
/// broker knows (Redis allocates them atomically with the PUBLISH).
/// `head + offset + ",\"epoch\":\"" + epoch + "\"" + tail` is the frame.
#[derive(Debug, Clone)]
pub struct MessageParts {
    pub head: String,
    pub tail: String,
}

impl MessageParts {
    pub fn new(channel: &str, from: &str, data: &RawValue) -> Self {
        let mut head = String::with_capacity(40 + channel.len());
        head.push_str(r#"{"type":"message","channel":"#);
        head.push_str(&json_string(channel));
        head.push_str(r#","offset":"#);
        let mut tail = String::with_capacity(20 + from.len() + data.get().len());
        tail.push_str(r#","from":"#);
        tail.push_str(&json_string(from));
        tail.push_str(r#","data":"#);
        tail.push_str(data.get());
        tail.push('}');
        MessageParts { head, tail }
    }

    /// Epochs are generated by the gateway from `[0-9a-z]`, so they need no
    /// escaping here or in the Lua script that does the same splice.
    pub fn assemble(&self, offset: u64, epoch: &str) -> String {
        format!("{}{offset},\"epoch\":\"{epoch}\"{}", self.head, self.tail)
    }
}

pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialise")
}

/// A fresh epoch: names one incarnation of a channel's offset sequence.
pub fn new_epoch() -> String {
    (0..8)
        .map(|_| char::from_digit(fastrand::u32(0..36), 36).expect("digit below 36"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn spliced_message_equals_the_typed_frame() {
        let data = raw(r#"{"text":"hé \"quoted\""}"#);
        let parts = MessageParts::new("chat:room/1", "ann \"a\"", data);
        let spliced = parts.assemble(42, "abc123");
        let typed = ServerFrame::Message {
            channel: "chat:room/1",
            offset: 42,
            epoch: "abc123",
            from: "ann \"a\"",
            data,
        }
        .encode();
        assert_eq!(spliced, typed);
        let v: serde_json::Value = serde_json::from_str(&spliced).unwrap();
        assert_eq!(v["data"]["text"], "hé \"quoted\"");
    }

    #[test]
    fn replies_and_errors_follow_the_id_rule() {
        assert_eq!(
            ServerFrame::ok(Some(1)).encode(),
            r#"{"type":"reply","id":1,"ok":true}"#
        );
        let err = ErrorBody::new(ErrorCode::BadChannel, "x");
        assert_eq!(
            ServerFrame::failure(Some(2), err.clone()).encode(),
            r#"{"type":"reply","id":2,"error":{"code":"bad_channel","message":"x"}}"#
        );
        assert_eq!(
            ServerFrame::failure(None, err).encode(),
            r#"{"type":"error","error":{"code":"bad_channel","message":"x"}}"#
        );
    }

    #[test]
    fn epochs_are_eight_base36_characters() {
        let e = new_epoch();
        assert_eq!(e.len(), 8);
        assert!(e.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
