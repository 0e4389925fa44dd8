//! What a WebSocket reads: the client's frames as whole messages of a
//! bounded size.
//!
//! Bytes from the socket pass the frame-header guard (`frame_guard`: a
//! frame declaring more than the limit fails the connection before its
//! payload is buffered), then actix-http's frame codec, then the joining
//! of fragmented messages. Messages decoded before a bad frame are handed
//! out first, so a client's good requests are still answered; the failure
//! follows them.
//!
//! The buffer exists only while a frame is incomplete: an idle connection
//! holds none (the socket is read through a per-thread scratch buffer).

use std::collections::VecDeque;

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::frame_guard::{GuardError, Scanner};

pub(crate) use actix_http::ws::CloseReason;

/// One message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// Why reading failed; `inbound::classify` gives each its close code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("bad frame: {0}")]
    Frame(#[from] ProtocolError),
    #[error("a fragmented message grew past {0} bytes")]
    TooLarge(usize),
    #[error("a text message is not valid UTF-8")]
    NotUtf8,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// What the reader has for the connection next.
#[derive(Debug)]
pub(crate) enum Read {
    Message(Inbound),
    Failed(ReadError),
    /// The client closed TCP.
    Closed,
}

/// A fragmented message being joined.
#[derive(Debug)]
struct Parts {
    text: bool,
    size: usize,
    chunks: Vec<Bytes>,
}

#[derive(Debug)]
pub(crate) struct Reader {
    /// Bytes of an incomplete frame (empty, unallocated, between frames).
    buf: BytesMut,
    scanner: Scanner,
    codec: Codec,
    parts: Option<Parts>,
    limit: usize,
    decoded: VecDeque<Inbound>,
    /// After the decoded messages: the failure or the end.
    end: Option<Read>,
}

impl Reader {
    pub(crate) fn new(limit: usize) -> Reader {
        Reader {
            buf: BytesMut::new(),
            scanner: Scanner::new(limit),
            codec: Codec::new().max_size(limit),
            parts: None,
            limit,
            decoded: VecDeque::new(),
            end: None,
        }
    }

    /// Whether `next` has something.
    pub(crate) fn has_next(&self) -> bool {
        !self.decoded.is_empty() || self.end.is_some()
    }

    /// Whether more bytes are still wanted (nothing failed or ended).
    pub(crate) fn open(&self) -> bool {
        self.end.is_none()
    }

    pub(crate) fn next(&mut self) -> Option<Read> {
        match self.decoded.pop_front() {
            Some(message) => {
                if self.decoded.is_empty() {
                    // Idle connections keep no queue.
                    self.decoded = VecDeque::new();
                }
                Some(Read::Message(message))
            }
            None => self.end.take(),
        }
    }

    /// The client closed its side.
    pub(crate) fn eof(&mut self) {
        self.end.get_or_insert(Read::Closed);
    }

    pub(crate) fn fail(&mut self, error: ReadError) {
        self.end.get_or_insert(Read::Failed(error));
    }

    /// Take bytes read from the socket and decode what they complete.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if !self.open() {
            return;
        }
        let (good, refused) = match self.scanner.scan(chunk) {
            Ok(()) => (chunk, None),
            Err((before, error)) => (&chunk[..before], Some(error)),
        };
        self.buf.extend_from_slice(good);
        if let Err(error) = self.decode() {
            self.fail(error);
        }
        if let Some(error) = refused {
            self.fail(error.into());
        }
        if self.buf.is_empty() {
            // Release the allocation (the decoded payloads keep their part).
            self.buf = BytesMut::new();
        }
    }

    fn decode(&mut self) -> Result<(), ReadError> {
        while let Some(frame) = self.codec.decode(&mut self.buf)? {
            let message = match frame {
                Frame::Text(bytes) => Inbound::Text(text(bytes)?),
                Frame::Binary(bytes) => Inbound::Binary(bytes),
                Frame::Ping(bytes) => Inbound::Ping(bytes),
                Frame::Pong(bytes) => Inbound::Pong(bytes),
                Frame::Close(reason) => Inbound::Close(reason),
                Frame::Continuation(item) => match self.join(item)? {
                    Some(message) => message,
                    None => continue,
                },
            };
            self.decoded.push_back(message);
        }
        Ok(())
    }

    /// Add a fragment; the whole message once its last one came. (The
    /// codec has already checked the order of first, middle and last.)
    fn join(&mut self, item: Item) -> Result<Option<Inbound>, ReadError> {
        let is_text = matches!(item, Item::FirstText(_));
        let (bytes, last) = match item {
            Item::FirstText(bytes) | Item::FirstBinary(bytes) => {
                self.parts = Some(Parts {
                    text: is_text,
                    size: 0,
                    chunks: Vec::new(),
                });
                (bytes, false)
            }
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        let parts = self
            .parts
            .as_mut()
            .ok_or(ProtocolError::ContinuationNotStarted)?;
        parts.size += bytes.len();
        if parts.size > self.limit {
            return Err(ReadError::TooLarge(self.limit));
        }
        // Empty fragments are not kept: a stream of them cannot grow memory.
        if !bytes.is_empty() {
            parts.chunks.push(bytes);
        }
        if !last {
            return Ok(None);
        }
        let parts = self.parts.take().expect("checked above");
        let mut whole = BytesMut::with_capacity(parts.size);
        for chunk in &parts.chunks {
            whole.extend_from_slice(chunk);
        }
        let whole = whole.freeze();
        Ok(Some(if parts.text {
            Inbound::Text(text(whole)?)
        } else {
            Inbound::Binary(whole)
        }))
    }
}

fn text(bytes: Bytes) -> Result<ByteString, ReadError> {
    ByteString::try_from(bytes).map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        assert!(payload.len() < 126);
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn all(reader: &mut Reader) -> Vec<String> {
        std::iter::from_fn(|| reader.next())
            .map(|read| match read {
                Read::Message(Inbound::Text(text)) => format!("text {text}"),
                Read::Message(other) => format!("{other:?}"),
                Read::Failed(e) => format!("failed {e}"),
                Read::Closed => "closed".into(),
            })
            .collect()
    }

    #[test]
    fn messages_arrive_whole_in_any_split() {
        let mut bytes = frame(0x81, b"hello");
        bytes.extend(frame(0x01, b"frag"));
        bytes.extend(frame(0x00, b"men"));
        bytes.extend(frame(0x80, b"ted"));
        for split in 0..bytes.len() {
            let mut reader = Reader::new(64);
            reader.feed(&bytes[..split]);
            reader.feed(&bytes[split..]);
            assert_eq!(all(&mut reader), ["text hello", "text fragmented"]);
            assert!(reader.buf.capacity() == 0, "no buffer kept between frames");
        }
    }

    #[test]
    fn good_messages_come_before_the_failure() {
        let mut bytes = frame(0x81, b"first");
        bytes.extend(frame(0xC1, b"reserved bit"));
        let mut reader = Reader::new(64);
        reader.feed(&bytes);
        let read = all(&mut reader);
        assert_eq!(read[0], "text first");
        assert!(read[1].starts_with("failed"), "{read:?}");
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn a_fragmented_message_past_the_limit_fails() {
        let mut reader = Reader::new(8);
        let mut bytes = frame(0x01, b"12345");
        bytes.extend(frame(0x80, b"6789"));
        reader.feed(&bytes);
        assert!(matches!(
            reader.next(),
            Some(Read::Failed(ReadError::TooLarge(8)))
        ));
    }

    #[test]
    fn text_must_be_utf8() {
        let mut reader = Reader::new(64);
        reader.feed(&frame(0x81, &[0xff, 0xfe]));
        assert!(matches!(
            reader.next(),
            Some(Read::Failed(ReadError::NotUtf8))
        ));
    }
}
