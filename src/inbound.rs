//! The close code each read failure earns (`socket::reader` reads).
//! Shared by the gateway's connections and `/echo`, so both close alike.

use actix_http::ws::ProtocolError;

use crate::disconnect::Disconnect;
use crate::frame_guard::GuardError;
use crate::socket::ReadError;

/// Map a read failure to the close the client gets; `None` when the socket
/// itself failed and no close frame can be sent.
pub(crate) fn classify(e: &ReadError) -> Option<Disconnect> {
    Some(match e {
        ReadError::Guard(GuardError::TooLarge { .. }) | ReadError::TooLarge(_) => {
            Disconnect::MessageTooBig
        }
        ReadError::Guard(
            GuardError::ControlTooLong(_) | GuardError::Reserved | GuardError::BadFragment,
        ) => Disconnect::ProtocolError,
        ReadError::Guard(GuardError::CloseReasonNotUtf8) | ReadError::NotUtf8 => {
            Disconnect::InvalidPayload
        }
        ReadError::Frame(ProtocolError::Overflow) => Disconnect::MessageTooBig,
        ReadError::Frame(_) => Disconnect::ProtocolError,
        ReadError::Io(_) => return None,
    })
}
