//! WebSocket upgrades, taken over from actix-http before its dispatcher
//! would keep serving the connection.
//!
//! actix-http hands every request that asks for `Upgrade: websocket` to
//! this service together with the TCP stream (its upgrade hook); the App
//! never sees them. Here the request is routed (`/ws` and `/` to the
//! gateway, `/echo` when enabled, anything else 404), checked exactly as
//! before (admission, draining, origin, credentials, per-user limit),
//! answered — 101, or a refusal with its JSON body, after which the TCP
//! connection closes — and then the connection's task runs on the bare
//! stream (`socket`). Why: the dispatcher would otherwise stay in between
//! for the connection's whole life, with its two fixed 8 KiB buffers and a
//! response-body channel per connection and a second task hop per
//! delivery (see docs/architecture.md, "The WebSocket path").

use std::sync::Arc;
use std::time::Duration;

use actix_codec::{Encoder, Framed};
use actix_http::body::{BodySize, MessageBody};
use actix_http::h1::{self, Codec};
use actix_http::{ws, ConnectionType, Request, Response};
use actix_web::http::StatusCode;
use actix_web::web::BytesMut;
use actix_web::HttpResponse;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::auth::Identity;
use crate::connection;
use crate::echo;
use crate::gateway::Gateway;
use crate::handshake::{self, Permit};
use crate::presence::ClientInfo;
use crate::socket::Socket;

/// How long writing the handshake's answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What an accepted WebSocket is served by.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    /// `/ws` (and `/`): the gateway protocol.
    Gateway,
    /// `/echo`: every message sent back (conformance testing only).
    Echo,
}

/// An upgrade that passed every check.
enum Accepted {
    /// `/ws`, already in the registry; the connection leaves it at its end.
    /// The permit is held until the welcome is out: registering the
    /// connection is part of the handshake's cost.
    Gateway(Identity, Arc<ClientInfo>, Permit),
    Echo(Identity),
}

/// Answer one upgrade request; an accepted WebSocket then runs in a task
/// of its own on this worker, and the HTTP connection's task ends. (Its
/// future, the whole HTTP dispatcher, is about 12 KiB: kept for the life
/// of every WebSocket, it was most of an idle connection's memory.)
pub(crate) async fn serve(
    gw: Arc<Gateway>,
    echo_endpoint: bool,
    req: Request,
    framed: Framed<TcpStream, Codec>,
) {
    let endpoint = match req.path() {
        "/ws" | "/" => Some(Endpoint::Gateway),
        "/echo" if echo_endpoint => Some(Endpoint::Echo),
        _ => None,
    };
    let span = tracing::info_span!("upgrade", node = %gw.node_id(), status = tracing::field::Empty);
    let accepted = match endpoint {
        None => Err(HttpResponse::NotFound().finish()),
        Some(endpoint) => accept(&req, &gw, endpoint).instrument(span.clone()).await,
    };
    let mut parts = framed.into_parts();
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(refused) => {
            span.record("status", refused.status().as_u16());
            let _ = answer(&mut parts.io, &mut parts.codec, refused.into()).await;
            return;
        }
    };
    span.record("status", 101);
    let switching = ws::handshake_response(req.head())
        .finish()
        .map_into_boxed_body();
    if answer(&mut parts.io, &mut parts.codec, switching)
        .await
        .is_err()
    {
        if let Accepted::Gateway(_, client, _) = &accepted {
            gw.unadmit(client).await;
        }
        return;
    }
    // The HTTP codec and its buffers go with this task, which ends here.
    let socket = Socket::new(parts.io, &parts.read_buf, gw.settings().max_message_bytes);
    match accepted {
        Accepted::Gateway(identity, client, permit) => {
            actix_web::rt::spawn(connection::serve(gw, socket, identity, client, permit));
        }
        Accepted::Echo(identity) => {
            actix_web::rt::spawn(echo::serve(gw, socket, identity));
        }
    }
}

/// Check the request, resolve the user and admit the connection — or the
/// response that refuses it, before any WebSocket traffic.
async fn accept(
    req: &Request,
    gw: &Arc<Gateway>,
    endpoint: Endpoint,
) -> Result<Accepted, HttpResponse> {
    // Not a valid WebSocket handshake (method, version, key): refused
    // before it costs an admission.
    ws::verify_handshake(req.head()).map_err(HttpResponse::from_error)?;
    let (permit, identity) = handshake::admit(req.head(), gw).map_err(|r| r.response())?;
    match endpoint {
        // Counted and registered in one step, so a burst cannot overshoot;
        // fail-open if the registry is unreachable (see `Gateway::admit`).
        Endpoint::Gateway => {
            let limit = gw.settings().max_connections_per_user;
            let client = gw
                .admit(&connection::new_conn_id(), &identity.user)
                .await
                .map_err(|count| {
                    handshake::too_many_connections(&identity.user, count, limit).response()
                })?;
            Ok(Accepted::Gateway(identity, client, permit))
        }
        // The echo joins no registry: it is only checked against it.
        Endpoint::Echo => {
            handshake::user_limit(gw, &identity.user)
                .await
                .map_err(|r| r.response())?;
            Ok(Accepted::Echo(identity))
        }
    }
}

/// Write a response with its body. Anything but a 101 ends the connection
/// (this service cannot hand it back to the HTTP dispatcher), so it says
/// `Connection: close`.
async fn answer(
    io: &mut TcpStream,
    codec: &mut Codec,
    response: Response<actix_http::body::BoxBody>,
) -> std::io::Result<()> {
    let (mut head, body) = response.into_parts();
    let body = body
        .try_into_bytes()
        .unwrap_or_else(|_| actix_web::web::Bytes::new());
    let switching = head.status() == StatusCode::SWITCHING_PROTOCOLS;
    if !switching {
        head.head_mut().set_connection_type(ConnectionType::Close);
    }
    let size = if switching {
        BodySize::None
    } else {
        BodySize::Sized(body.len() as u64)
    };
    let mut out = BytesMut::with_capacity(256 + body.len());
    codec
        .encode(h1::Message::Item((head, size)), &mut out)
        .map_err(std::io::Error::other)?;
    out.extend_from_slice(&body);
    tokio::time::timeout(ANSWER_TIMEOUT, io.write_all(&out))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    if !switching {
        let _ = io.shutdown().await;
    }
    Ok(())
}
