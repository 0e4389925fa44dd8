//! `GET /echo`: a WebSocket that sends every text and binary message back.
//!
//! It exists for conformance testing only. The Autobahn TestSuite's cases
//! (run through kosoku by `tests/it/autobahn.rs`, see docs/conformance.md)
//! expect a server that echoes, which the gateway protocol on `/ws` is not.
//! So that what they test is the gateway's WebSocket stack, the echo shares
//! everything below the protocol with `/ws`: the admission in `upgrade`
//! (draining, origin check, authentication, per-user limit), the socket
//! with the `max_message_bytes` limits (`socket`), and the close codes
//! (`inbound::classify`).
//!
//! Off unless `echo_endpoint` is set; `/echo` is then not routed (404). It
//! joins no hub: no channels, no server pings or heartbeat timeout, no
//! frame-rate limit (its refusals are protocol frames an echo cannot
//! speak), and a drain does not close it (the HTTP server's stop does).

use std::sync::Arc;

use tracing::Instrument;

use crate::auth::Identity;
use crate::connection::{new_conn_id, CLOSE_TIMEOUT};
use crate::gateway::Gateway;
use crate::inbound::classify;
use crate::socket::{Inbound, Read, Socket, WireFrame};

/// Echo one upgraded WebSocket until it closes.
pub(crate) async fn serve(gw: Arc<Gateway>, socket: Socket, identity: Identity) {
    let span = tracing::info_span!("echo", conn = %new_conn_id(), user = %identity.user, node = %gw.node_id());
    run(socket).instrument(span).await;
}

async fn run(mut socket: Socket) {
    let reason = loop {
        // What the client does not read is not answered further: its next
        // frames wait until the socket takes the echoes.
        if socket.backlogged() {
            if socket.writable().await.is_err() || socket.flush().is_err() {
                return;
            }
            continue;
        }
        let msg = match socket.next() {
            None => {
                if socket.readable().await.is_err() {
                    return;
                }
                socket.read();
                continue;
            }
            // The socket is gone: nothing to close.
            Some(Read::Closed) => return,
            Some(Read::Failed(e)) => match classify(&e) {
                Some(d) => {
                    tracing::debug!(code = d.code(), reason = d.name(), error = %e, "closing");
                    break Some(d.close_reason());
                }
                None => return,
            },
            Some(Read::Message(msg)) => msg,
        };
        let frame = match msg {
            Inbound::Text(text) => WireFrame::text(&text),
            Inbound::Binary(bytes) => WireFrame::binary(&bytes),
            Inbound::Ping(payload) => WireFrame::pong(&payload),
            Inbound::Pong(_) => continue,
            Inbound::Close(reason) => {
                tracing::debug!(?reason, "client closed");
                break reason;
            }
        };
        socket.queue(&frame);
        if socket.flush().is_err() {
            return;
        }
    };
    socket.queue(&WireFrame::close(reason));
    socket.close(CLOSE_TIMEOUT).await;
}
