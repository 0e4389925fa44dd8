//! Server-to-client frames, encoded once.
//!
//! A server's frames are not masked (RFC 6455 §5.1), so a message's whole
//! frame — header and payload — is the same bytes for every recipient. The
//! hub encodes a delivery once per node and every outbox holds a clone of
//! the same `Bytes` (a reference-count bump); the socket writes it as is.

use actix_http::ws::{CloseReason, OpCode, Parser};
use actix_web::web::{Bytes, BytesMut};

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// One complete WebSocket frame, ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame(Bytes);

impl WireFrame {
    pub fn text(payload: &str) -> WireFrame {
        WireFrame::encode(payload.as_bytes(), OpCode::Text)
    }

    pub fn binary(payload: &[u8]) -> WireFrame {
        WireFrame::encode(payload, OpCode::Binary)
    }

    pub fn ping(payload: &[u8]) -> WireFrame {
        WireFrame::encode(control(payload), OpCode::Ping)
    }

    pub fn pong(payload: &[u8]) -> WireFrame {
        WireFrame::encode(control(payload), OpCode::Pong)
    }

    /// A close frame; a reason longer than a control frame allows is cut
    /// at a character boundary (strict clients fail oversized ones).
    pub fn close(reason: Option<CloseReason>) -> WireFrame {
        let reason = reason.map(|mut reason| {
            if let Some(text) = reason.description.as_mut() {
                let mut end = text.len().min(MAX_CONTROL_PAYLOAD - 2);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            reason
        });
        let mut dst = BytesMut::with_capacity(2 + MAX_CONTROL_PAYLOAD);
        Parser::write_close(&mut dst, reason, false);
        WireFrame(dst.freeze())
    }

    fn encode(payload: &[u8], op: OpCode) -> WireFrame {
        // Header: 2 bytes, plus 2 or 8 for the length; never a mask.
        let mut dst = BytesMut::with_capacity(payload.len() + 10);
        Parser::write_message(&mut dst, payload, op, true, false);
        WireFrame(dst.freeze())
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The payload, after the header (tests read what was queued).
    #[cfg(test)]
    pub fn payload(&self) -> &[u8] {
        let header = match self.0[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &self.0[header..]
    }
}

fn control(payload: &[u8]) -> &[u8] {
    &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_unmasked_final_and_sized() {
        let small = WireFrame::text("hi");
        assert_eq!(&small.bytes()[..], b"\x81\x02hi");
        let medium = WireFrame::text(&"x".repeat(300));
        assert_eq!(&medium.bytes()[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.payload().len(), 300);
        let large = WireFrame::binary(&vec![0; 70_000]);
        assert_eq!(large.bytes()[0], 0x82);
        assert_eq!(large.bytes()[1], 127);
        assert_eq!(large.payload().len(), 70_000);
        assert_eq!(WireFrame::ping(&[1; 200]).payload().len(), 125);
    }

    #[test]
    fn a_close_reason_is_cut_to_fit_a_control_frame() {
        let reason = CloseReason {
            code: actix_http::ws::CloseCode::Normal,
            description: Some("é".repeat(100)),
        };
        let frame = WireFrame::close(Some(reason));
        assert_eq!(frame.bytes()[0], 0x88);
        let payload = frame.payload();
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
