//! Wire protocol v1: JSON text frames, one object per frame, tagged by `type`.
//!
//! Inbound frames are decoded in two steps: first into a flat [`RawFrame`]
//! with every field optional (so that `id` survives a frame that is otherwise
//! wrong and the error can be echoed to it), then into a typed [`Command`]
//! with a precise message for what is missing. `data` stays a borrowed
//! [`RawValue`]: the gateway never re-serialises a payload it only forwards.
//!
//! Outbound frames are [`ServerFrame`]s, except the hot `message` frame,
//! which is spliced around its offset and epoch by [`MessageParts`] so that a
//! broker can fill them in (the Redis broker does it inside a Lua script).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::presence::ClientInfo;

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
    /// A command this build does not offer yet (named in the message).
    NotSupported,
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

/// Channel names: 1..=255 bytes of `[A-Za-z0-9_\-.:@/=]`. The set keeps
/// names safe inside Redis hash tags (`{...}`) and log lines.
pub const MAX_CHANNEL_LEN: usize = 255;
/// User names: 1..=255 bytes, no control characters, no `{` or `}`.
pub const MAX_USER_LEN: usize = 255;

/// Deepest nesting of arrays and objects `data` may have (a scalar is 0,
/// `[1]` is 1, `{"a":[1]}` is 2). The gateway itself never parses `data`
/// (it stays a `RawValue`, whose parsing has no depth limit), but every
/// subscriber does, and recursive parsers fail well before 10 000 levels:
/// Ruby's `JSON.parse` stops at 100 by default, serde_json at 128, Python
/// raises `RecursionError` near 1 000. 64 is far above real documents
/// (rarely over 10-20 levels), and with the frame around `data` (one more
/// level) plus room for a client's own envelope it stays under all of them.
pub const MAX_DATA_DEPTH: usize = 64;

/// How deeply arrays and objects nest in `json`: the most `[`/`{` open at
/// once, outside strings (whose escapes are honoured). One pass over the
/// bytes, no allocation. Meant for valid JSON (a `RawValue`); on anything
/// else it still terminates with some number.
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The check every `data` passes before it is published or sent, over the
/// WebSocket (`decode`, refused as `bad_frame`) and the server API (the
/// bodies' `data` fields, refused with 400): at most [`MAX_DATA_DEPTH`]
/// levels of nesting. The size is bounded earlier, by the frame or body limit.
pub fn check_data(data: &RawValue) -> Result<(), String> {
    let depth = nesting_depth(data.get());
    if depth > MAX_DATA_DEPTH {
        return Err(format!(
            "`data` is nested {depth} levels deep; at most {MAX_DATA_DEPTH} are allowed"
        ));
    }
    Ok(())
}

pub fn check_channel(channel: &str) -> Result<(), ErrorBody> {
    let ok = !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_LEN
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@/=".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::BadChannel,
            format!("channel must be 1-{MAX_CHANNEL_LEN} characters of [A-Za-z0-9_-.:@/=]"),
        ))
    }
}

pub fn check_user(user: &str) -> Result<(), ErrorBody> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && !user.chars().any(|c| c.is_control() || c == '{' || c == '}');
    if ok {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::BadUser,
            format!("user must be 1-{MAX_USER_LEN} bytes without control characters or braces"),
        ))
    }
}

/// A position in a channel's stream, for recovery after reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// Every field any client frame may carry. Unknown fields are refused so
/// that a typo (`chanel`) is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame<'a> {
    #[serde(rename = "type")]
    kind: String,
    id: Option<u64>,
    channel: Option<String>,
    user: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    since: Option<StreamPosition>,
    limit: Option<u32>,
    /// W3C trace context of the sender, for `publish`.
    traceparent: Option<String>,
    /// A new token, for `refresh`.
    token: Option<String>,
}

#[derive(Debug)]
pub enum Command<'a> {
    Subscribe {
        channel: String,
        since: Option<StreamPosition>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: &'a RawValue,
        traceparent: Option<String>,
    },
    Send {
        user: String,
        data: &'a RawValue,
    },
    Presence {
        channel: String,
    },
    History {
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<u32>,
    },
    Ping,
    /// A new token before the current one expires.
    Refresh {
        token: String,
    },
}

/// A decoded client frame.
#[derive(Debug)]
pub struct Request<'a> {
    pub id: Option<u64>,
    pub command: Command<'a>,
}

/// A frame that could not be decoded, with the `id` if one could be read.
#[derive(Debug)]
pub struct DecodeError {
    pub id: Option<u64>,
    pub error: ErrorBody,
}

fn need<T>(field: Option<T>, kind: &str, name: &str) -> Result<T, String> {
    field.ok_or_else(|| format!("`{kind}` needs `{name}`"))
}

/// The `data` of a frame that must carry one, checked by [`check_data`].
fn need_data<'a>(data: Option<&'a RawValue>, kind: &str) -> Result<&'a RawValue, String> {
    let data = need(data, kind, "data")?;
    check_data(data)?;
    Ok(data)
}

/// The `id` of a frame, if it has a readable one, without decoding the rest.
pub fn peek_id(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id)
}

/// Decode one text frame.
pub fn decode(text: &str) -> Result<Request<'_>, DecodeError> {
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| {
        // Recover the id, if any, so the client can match the error.
        DecodeError {
            id: peek_id(text),
            error: ErrorBody::new(ErrorCode::BadFrame, format!("invalid frame: {e}")),
        }
    })?;
    let id = raw.id;
    let kind = raw.kind.as_str();
    let command = (|| {
        Ok(match kind {
            "subscribe" => Command::Subscribe {
                channel: need(raw.channel, kind, "channel")?,
                since: raw.since,
            },
            "unsubscribe" => Command::Unsubscribe {
                channel: need(raw.channel, kind, "channel")?,
            },
            "publish" => Command::Publish {
                channel: need(raw.channel, kind, "channel")?,
                data: need_data(raw.data, kind)?,
                traceparent: raw.traceparent,
            },
            "send" => Command::Send {
                user: need(raw.user, kind, "user")?,
                data: need_data(raw.data, kind)?,
            },
            "presence" => Command::Presence {
                channel: need(raw.channel, kind, "channel")?,
            },
            "history" => Command::History {
                channel: need(raw.channel, kind, "channel")?,
                since: raw.since,
                limit: raw.limit,
            },
            "ping" => Command::Ping,
            "refresh" => Command::Refresh {
                token: need(raw.token, kind, "token")?,
            },
            other => return Err(format!("unknown frame type {other:?}")),
        })
    })()
    .map_err(|message: String| DecodeError {
        id,
        error: ErrorBody::new(ErrorCode::BadFrame, message),
    })?;
    Ok(Request { id, command })
}

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
    },
    Error {
        error: ErrorBody,
    },
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
        Self::success(id, None, None)
    }

    /// The answer to a `publish`: where the message landed.
    pub fn published(id: Option<u64>, offset: u64, epoch: &'a str) -> Self {
        Self::success(id, Some((offset, epoch)), None)
    }

    /// The answer to a `presence` request.
    pub fn members(id: Option<u64>, members: &'a [ClientInfo]) -> Self {
        Self::success(id, None, Some(members))
    }

    fn success(
        id: Option<u64>,
        position: Option<(u64, &'a str)>,
        members: Option<&'a [ClientInfo]>,
    ) -> Self {
        ServerFrame::Reply {
            id,
            ok: Some(true),
            error: None,
            offset: position.map(|(offset, _)| offset),
            epoch: position.map(|(_, epoch)| epoch),
            members,
        }
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

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn decodes_each_command() {
        let r = decode(r#"{"type":"publish","id":7,"channel":"c","data":{"a":[1,2]}}"#).unwrap();
        assert_eq!(r.id, Some(7));
        match r.command {
            Command::Publish { channel, data, .. } => {
                assert_eq!(channel, "c");
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        }
        let r = decode(r#"{"type":"subscribe","channel":"c","since":{"offset":3,"epoch":"e"}}"#)
            .unwrap();
        match r.command {
            Command::Subscribe { channel, since } => {
                assert_eq!(channel, "c");
                assert_eq!(
                    since,
                    Some(StreamPosition {
                        offset: 3,
                        epoch: "e".into()
                    })
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(r#"{"type":"ping"}"#).unwrap().command,
            Command::Ping
        ));
        assert!(matches!(
            decode(r#"{"type":"send","user":"u","data":"hi"}"#)
                .unwrap()
                .command,
            Command::Send { .. }
        ));
    }

    #[test]
    fn errors_keep_the_id_when_they_can() {
        let e = decode(r#"{"type":"publish","id":9,"channel":"c"}"#).unwrap_err();
        assert_eq!(e.id, Some(9));
        assert_eq!(e.error.code, ErrorCode::BadFrame);
        assert!(
            e.error.message.contains("needs `data`"),
            "{}",
            e.error.message
        );

        let e = decode(r#"{"type":"publish","id":4,"chanel":"c"}"#).unwrap_err();
        assert_eq!(e.id, Some(4));
        assert!(e.error.message.contains("chanel"), "{}", e.error.message);

        let e = decode(r#"{"type":"fly","id":5}"#).unwrap_err();
        assert_eq!(e.id, Some(5));
        assert!(e.error.message.contains("unknown frame type"));

        for bad in ["Hello, World!", "", "[1,2]", "{\"id\":1}", "{\"type\":3}"] {
            let e = decode(bad).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::BadFrame, "{bad}");
        }
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
    fn nesting_depth_counts_brackets_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        let cases: Vec<(String, usize)> = vec![
            ("1".into(), 0),
            (r#""text""#.into(), 0),
            ("[]".into(), 1),
            ("{}".into(), 1),
            ("[1,[2,[3]],[4]]".into(), 3),
            (r#"{"a":[{"b":null}],"c":{}}"#.into(), 3),
            // Brackets inside strings do not count, in values or keys.
            (r#""[[[{{{""#.into(), 0),
            (r#"{"[[[":"{{{"}"#.into(), 1),
            // Escaped quotes do not end a string; an escaped backslash does not escape the quote after it.
            (r#"["\"[[[\"",1]"#.into(), 1),
            (r#"["\\",[2]]"#.into(), 2),
            (r#"["\\\"[",[[3]]]"#.into(), 3),
            (r#"["\u005b\/"]"#.into(), 1),
            // Multi-byte UTF-8 is never mistaken for a bracket.
            (r#"["é[ü{",["ß"]]"#.into(), 2),
            (" [ [ ] , { } ] ".into(), 2),
            (deep(MAX_DATA_DEPTH), MAX_DATA_DEPTH),
            (deep(MAX_DATA_DEPTH + 1), MAX_DATA_DEPTH + 1),
            (objects(MAX_DATA_DEPTH), MAX_DATA_DEPTH),
            (deep(10_000), 10_000),
        ];
        for (json, want) in &cases {
            // Every case is valid JSON, as `data` always is.
            let value = raw(json);
            assert_eq!(nesting_depth(value.get()), *want, "{json:.80}");
            let allowed = *want <= MAX_DATA_DEPTH;
            assert_eq!(check_data(value).is_ok(), allowed, "{json:.80}");
        }
    }

    #[test]
    fn deep_data_is_a_bad_frame_with_its_id() {
        let at_limit = format!(
            "{}{}",
            "[".repeat(MAX_DATA_DEPTH),
            "]".repeat(MAX_DATA_DEPTH)
        );
        let over = format!("[{at_limit}]");
        for kind in [
            r#""type":"publish","channel":"c""#,
            r#""type":"send","user":"u""#,
        ] {
            let ok = format!(r#"{{{kind},"id":3,"data":{at_limit}}}"#);
            assert!(decode(&ok).is_ok(), "{ok:.60}");
            let e = decode(&format!(r#"{{{kind},"id":4,"data":{over}}}"#)).unwrap_err();
            assert_eq!(e.id, Some(4));
            assert_eq!(e.error.code, ErrorCode::BadFrame);
            assert!(e.error.message.contains("nested"), "{}", e.error.message);
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_channel("chat:room-1/a@b=c.d_e").is_ok());
        for bad in ["", "a b", "a{b}", "é", &"x".repeat(256)] {
            assert!(check_channel(bad).is_err(), "{bad}");
        }
        assert!(check_user("ann").is_ok());
        assert!(check_user("a\nb").is_err());
        assert!(check_user("{x}").is_err());
        let e = new_epoch();
        assert_eq!(e.len(), 8);
        assert!(e.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
