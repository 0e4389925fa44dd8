//! HTTP routes: the WebSocket upgrade and the operational endpoints.
//!
//! * `GET /ws` (and an upgrade request on `/`): WebSocket, protocol v1.
//! * `GET /echo`: an echoing WebSocket for conformance tests, only with
//!   `echo_endpoint` set (see `echo`); 404 otherwise.
//! * `GET /healthz`: 200 while the process serves requests.
//! * `GET /readyz`: 200 when ready for traffic; 503 while draining or while
//!   the broker is unreachable, so a load balancer stops routing here.
//! * `GET /metrics`: Prometheus text.
//! * `/api/...`: the server API (see `api`).

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use tracing::Instrument;

use crate::auth::{Access, Identity};
use crate::connection;
use crate::echo;
use crate::frame_guard::Guarded;
use crate::gateway::Gateway;
use crate::protocol::check_user;

pub fn routes(cfg: &mut web::ServiceConfig, api_body_limit: usize, echo_endpoint: bool) {
    crate::api::routes(cfg, api_body_limit);
    cfg.route("/ws", web::get().to(ws))
        .route("/", web::get().to(root))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
    if echo_endpoint {
        cfg.route("/echo", web::get().to(echo));
    }
}

/// What an accepted WebSocket is served by.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    /// `/ws`: the gateway protocol.
    Gateway,
    /// `/echo`: every message sent back (conformance testing only).
    Echo,
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    user: Option<String>,
    token: Option<String>,
}

fn plain(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

async fn ws(req: HttpRequest, body: web::Payload, gw: web::Data<Gateway>) -> HttpResponse {
    traced_upgrade(req, body, gw, Endpoint::Gateway).await
}

async fn echo(req: HttpRequest, body: web::Payload, gw: web::Data<Gateway>) -> HttpResponse {
    traced_upgrade(req, body, gw, Endpoint::Echo).await
}

async fn traced_upgrade(
    req: HttpRequest,
    body: web::Payload,
    gw: web::Data<Gateway>,
    endpoint: Endpoint,
) -> HttpResponse {
    let span = tracing::info_span!("upgrade", node = %gw.node_id(), status = tracing::field::Empty);
    let response = upgrade(&req, body, gw, endpoint)
        .instrument(span.clone())
        .await;
    span.record("status", response.status().as_u16());
    response
}

/// Check the request, resolve the user and accept the WebSocket — or
/// refuse it with a status before any WebSocket traffic.
async fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    gw: web::Data<Gateway>,
    endpoint: Endpoint,
) -> HttpResponse {
    if gw.is_draining() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is draining; connect to another node\n".into(),
        );
    }
    // Cross-site WebSocket hijacking: a browser sends the page's origin,
    // and a page from an origin not on the list may not connect.
    // (Non-browser clients send no Origin and are not affected.)
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !gw.settings.origin_allowed(origin) {
            return plain(
                StatusCode::FORBIDDEN,
                format!("origin {origin:?} is not allowed\n"),
            );
        }
    }
    let identity = match tracing::info_span!("authenticate").in_scope(|| identify(req, &gw)) {
        Ok(identity) => identity,
        Err((status, reason)) => return plain(status, reason),
    };
    let user = identity.user.clone();
    let limit = gw.settings.max_connections_per_user;
    let admitted = match endpoint {
        // Counted and registered in one step, so a burst cannot overshoot;
        // fail-open if the registry is unreachable (see `Gateway::admit`).
        Endpoint::Gateway => gw.admit(&connection::new_conn_id(), &user).await.map(Some),
        // The echo joins no registry: it is only checked against it.
        Endpoint::Echo => gw.check_user_limit(&user).await.map(|()| None),
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(count) => {
            return plain(
                StatusCode::TOO_MANY_REQUESTS,
                format!("user {user:?} already has {count} connections (limit {limit})\n"),
            );
        }
    };
    let body = guard_frames(req, body, gw.settings.max_message_bytes);
    let (response, session, stream) = match actix_ws::handle(req, body) {
        Ok(parts) => parts,
        Err(e) => {
            if let Some(client) = &admitted {
                gw.unadmit(client).await;
            }
            return HttpResponse::from_error(e);
        }
    };
    let gw: Arc<Gateway> = gw.into_inner();
    match admitted {
        // `/ws`, already in the registry; the connection leaves it at its end.
        Some(client) => {
            actix_web::rt::spawn(connection::serve(gw, session, stream, identity, client));
        }
        None => {
            actix_web::rt::spawn(echo::serve(gw, session, stream, identity));
        }
    }
    response
}

/// Put the frame-header guard in front of actix-ws's parser, so a frame
/// declaring more than `limit` fails the connection before its payload is
/// buffered (see `frame_guard`).
fn guard_frames(req: &HttpRequest, body: web::Payload, limit: usize) -> web::Payload {
    let mut payload: Payload = Payload::Stream {
        payload: Box::pin(Guarded::new(body.into_inner(), limit)),
    };
    // `web::Payload` has no public constructor; its extractor takes the
    // payload out of the one given and cannot fail.
    web::Payload::from_request(req, &mut payload)
        .into_inner()
        .expect("the Payload extractor is infallible")
}

/// Who is connecting, or the status and reason to refuse with. A token
/// (`Authorization: Bearer`, or `?token=` since browsers cannot set
/// headers on a WebSocket) must verify; without one, anonymous access —
/// if enabled — takes the user from `?user=` or makes one up.
fn identify(req: &HttpRequest, gw: &Gateway) -> Result<Identity, (StatusCode, String)> {
    let unauthorized = |reason: String| (StatusCode::UNAUTHORIZED, reason + "\n");
    let query = web::Query::<WsQuery>::from_query(req.query_string())
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad query string: {e}\n")))?
        .into_inner();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(token) = bearer.or(query.token.as_deref()) {
        let verifier = gw.auth.as_ref().ok_or_else(|| {
            unauthorized("token authentication is not configured on this node".into())
        })?;
        return verifier
            .verify(token)
            .map_err(|e| unauthorized(e.to_string()));
    }
    if !gw.settings.allow_anonymous {
        return Err(unauthorized(
            "a token is required (Authorization: Bearer, or ?token=)".into(),
        ));
    }
    let user = match query.user {
        Some(user) => {
            check_user(&user).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("bad `user`: {}\n", e.message),
                )
            })?;
            user
        }
        None => format!("anon-{:08x}", fastrand::u32(..)),
    };
    Ok(Identity {
        user,
        expires: None,
        access: Access::default(),
    })
}

/// `/` upgrades like `/ws` when asked to; otherwise it says what this is.
async fn root(req: HttpRequest, body: web::Payload, gw: web::Data<Gateway>) -> HttpResponse {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return ws(req, body, gw).await;
    }
    plain(
        StatusCode::OK,
        format!(
            "switchboard node {}: connect a WebSocket to /ws\n",
            gw.node_id()
        ),
    )
}

async fn healthz() -> HttpResponse {
    plain(StatusCode::OK, "ok\n".into())
}

async fn readyz(gw: web::Data<Gateway>) -> HttpResponse {
    if gw.is_draining() {
        plain(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    } else if !gw.broker.is_healthy() {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker unreachable\n".into(),
        )
    } else {
        plain(StatusCode::OK, "ready\n".into())
    }
}

async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(gw.metrics.render(gw.node_id(), &gw.gauges()))
}
