//! Client frames: text in, a typed [`Request`] out, or the error to answer
//! with (and the frame's `id` when it can be read). Names are parsed here,
//! at the edge, into [`ChannelName`] and [`UserId`].

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ErrorBody, ErrorCode};
use crate::ids::{ChannelName, IdempotencyKey, UserId};

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
    /// `history`: newest first.
    reverse: Option<bool>,
    /// `publish`: publish at most once per key (see `idempotency_window_ms`).
    idempotency_key: Option<IdempotencyKey>,
    /// W3C trace context of the sender, for `publish`.
    traceparent: Option<String>,
    /// A new token, for `refresh`.
    token: Option<String>,
}

#[derive(Debug)]
pub enum Command<'a> {
    Subscribe {
        channel: ChannelName,
        since: Option<StreamPosition>,
    },
    Unsubscribe {
        channel: ChannelName,
    },
    Publish {
        channel: ChannelName,
        data: &'a RawValue,
        traceparent: Option<String>,
        idempotency_key: Option<IdempotencyKey>,
    },
    Send {
        user: UserId,
        data: &'a RawValue,
    },
    Presence {
        channel: ChannelName,
    },
    History {
        channel: ChannelName,
        since: Option<StreamPosition>,
        limit: Option<u32>,
        reverse: bool,
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

fn need<T>(field: Option<T>, kind: &str, name: &str) -> Result<T, ErrorBody> {
    field.ok_or_else(|| ErrorBody::new(ErrorCode::BadFrame, format!("`{kind}` needs `{name}`")))
}

/// The `data` of a frame that must carry one, checked by [`check_data`].
fn need_data<'a>(data: Option<&'a RawValue>, kind: &str) -> Result<&'a RawValue, ErrorBody> {
    let data = need(data, kind, "data")?;
    check_data(data).map_err(|message| ErrorBody::new(ErrorCode::BadFrame, message))?;
    Ok(data)
}

/// The channel of a frame that must name one, parsed (`bad_channel`).
fn need_channel(channel: Option<String>, kind: &str) -> Result<ChannelName, ErrorBody> {
    Ok(ChannelName::parse(need(channel, kind, "channel")?)?)
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
                channel: need_channel(raw.channel, kind)?,
                since: raw.since,
            },
            "unsubscribe" => Command::Unsubscribe {
                channel: need_channel(raw.channel, kind)?,
            },
            "publish" => Command::Publish {
                channel: need_channel(raw.channel, kind)?,
                data: need_data(raw.data, kind)?,
                traceparent: raw.traceparent,
                idempotency_key: raw.idempotency_key,
            },
            "send" => Command::Send {
                user: UserId::parse(need(raw.user, kind, "user")?)?,
                data: need_data(raw.data, kind)?,
            },
            "presence" => Command::Presence {
                channel: need_channel(raw.channel, kind)?,
            },
            "history" => Command::History {
                channel: need_channel(raw.channel, kind)?,
                since: raw.since,
                limit: raw.limit,
                reverse: raw.reverse.unwrap_or(false),
            },
            "ping" => Command::Ping,
            "refresh" => Command::Refresh {
                token: need(raw.token, kind, "token")?,
            },
            other => {
                return Err(ErrorBody::new(
                    ErrorCode::BadFrame,
                    format!("unknown frame type {other:?}"),
                ))
            }
        })
    })()
    .map_err(|error: ErrorBody| DecodeError { id, error })?;
    Ok(Request { id, command })
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
                assert_eq!(channel.as_str(), "c");
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        }
        let r = decode(r#"{"type":"subscribe","channel":"c","since":{"offset":3,"epoch":"e"}}"#)
            .unwrap();
        match r.command {
            Command::Subscribe { channel, since } => {
                assert_eq!(channel.as_str(), "c");
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
    fn names_are_parsed_at_the_edge() {
        let e = decode(r#"{"type":"subscribe","id":1,"channel":"a b"}"#).unwrap_err();
        assert_eq!((e.id, e.error.code), (Some(1), ErrorCode::BadChannel));
        let e = decode(r#"{"type":"send","id":2,"user":"{x}","data":1}"#).unwrap_err();
        assert_eq!((e.id, e.error.code), (Some(2), ErrorCode::BadUser));
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
}
