//! What a WebSocket reads: the client's frames as whole messages of a
//! bounded size (the frame guard below, actix-ws's aggregation above), and
//! the close code each read error earns. Shared by the gateway's
//! connections and `/echo`, so both close alike.

use std::io;

use actix_ws::{AggregatedMessageStream, ProtocolError};

use crate::disconnect::Disconnect;
use crate::frame_guard::GuardError;

/// The client's frames, whole messages of at most `max` bytes, in one
/// frame or fragmented; larger ones end the stream with an error that
/// `classify` turns into 1009.
pub fn limited(stream: actix_ws::MessageStream, max: usize) -> AggregatedMessageStream {
    stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max)
}

/// Map a read error to the close the client gets.
pub fn classify(e: &ProtocolError) -> Disconnect {
    if let ProtocolError::Io(io) = e {
        match GuardError::find(io) {
            Some(GuardError::TooLarge { .. }) => return Disconnect::MessageTooBig,
            Some(
                GuardError::ControlTooLong(_) | GuardError::Reserved | GuardError::BadFragment,
            ) => return Disconnect::ProtocolError,
            Some(GuardError::CloseReasonNotUtf8) => return Disconnect::InvalidPayload,
            None => {}
        }
    }
    match e {
        ProtocolError::Overflow => Disconnect::MessageTooBig,
        // actix-ws reports an oversized fragmented message as an I/O error.
        ProtocolError::Io(io) if io.to_string().contains("maximum continuation size") => {
            Disconnect::MessageTooBig
        }
        // actix-http reports reserved bits as InvalidData too; that is a
        // framing error (1002), not bad text (1007).
        ProtocolError::Io(io) if io.to_string().contains("reserved bits") => {
            Disconnect::ProtocolError
        }
        ProtocolError::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
            Disconnect::InvalidPayload
        }
        _ => Disconnect::ProtocolError,
    }
}
