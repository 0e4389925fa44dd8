//! `GET /echo`: a WebSocket that sends every text and binary message back.
//!
//! It exists for conformance testing only. The Autobahn TestSuite's cases
//! (run through kosoku by `tests/it/autobahn.rs`, see docs/conformance.md)
//! expect a server that echoes, which the gateway protocol on `/ws` is not.
//! So that what they test is the gateway's WebSocket stack, the echo shares
//! everything below the protocol with `/ws`: the admission in `http`
//! (draining, origin check, authentication, per-user limit), the actix-ws
//! stream with the `max_message_bytes` limits (`connection::limited`), and
//! the close codes (`inbound::classify`).
//!
//! Off unless `echo_endpoint` is set; `/echo` is then not routed (404). It
//! joins no hub: no channels, no server pings or heartbeat timeout, no
//! frame-rate limit (its refusals are protocol frames an echo cannot
//! speak), and a drain does not close it (the HTTP server's stop does).

use std::sync::Arc;

use actix_ws::{AggregatedMessage, Session};
use tracing::Instrument;

use crate::auth::Identity;
use crate::connection::{new_conn_id, CLOSE_TIMEOUT};
use crate::gateway::Gateway;
use crate::inbound::{classify, limited};

/// Echo one upgraded WebSocket until it closes.
pub async fn serve(
    gw: Arc<Gateway>,
    session: Session,
    stream: actix_ws::MessageStream,
    identity: Identity,
) {
    let span = tracing::info_span!("echo", conn = %new_conn_id(), user = %identity.user, node = %gw.node_id());
    let stream = limited(stream, gw.settings().max_message_bytes);
    run(session, stream).instrument(span).await;
}

async fn run(mut session: Session, mut stream: actix_ws::AggregatedMessageStream) {
    let reason = loop {
        let msg = match stream.recv().await {
            // The socket is gone: nothing to close.
            None => return,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                let d = classify(&e);
                tracing::debug!(code = d.code(), reason = d.name(), error = %e, "closing");
                break Some(d.close_reason());
            }
        };
        let sent = match msg {
            AggregatedMessage::Text(text) => session.text(text).await,
            AggregatedMessage::Binary(bytes) => session.binary(bytes).await,
            AggregatedMessage::Ping(payload) => session.pong(&payload).await,
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(reason) => {
                tracing::debug!(?reason, "client closed");
                break reason;
            }
        };
        if sent.is_err() {
            return;
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(reason)).await;
}
