//! HTTP routes: the WebSocket upgrade and the operational endpoints.
//!
//! * `GET /ws` (and an upgrade request on `/`): WebSocket, protocol v1.
//! * `GET /echo`: an echoing WebSocket for conformance tests, only with
//!   `echo_endpoint` set (see `echo`); 404 otherwise.
//! * `GET /healthz`: 200 while the process serves requests.
//! * `GET /readyz`: 200 when ready for traffic; 503 while draining or while
//!   the broker is unreachable, so a load balancer stops routing here.
//! * `GET /metrics`: OpenMetrics text (Prometheus scrapes it).
//! * `/api/...`: the server API (see `api`).

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use tracing::Instrument;

use crate::connection;
use crate::echo;
use crate::frame_guard::Guarded;
use crate::gateway::Gateway;
use crate::handshake::{self, Refusal};

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
    let permit = match gw.admit_handshake() {
        Ok(permit) => permit,
        Err(refusal) => return refusal.response(),
    };
    let identity = match handshake::check(req, &gw) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.response(),
    };
    let user = identity.user.clone();
    let limit = gw.settings().max_connections_per_user;
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
            return Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!("user {user:?} already has {count} connections (limit {limit})"),
            )
            .response();
        }
    };
    let body = guard_frames(req, body, gw.settings().max_message_bytes);
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
        // The permit is held until the welcome is out: registering the
        // connection is part of the handshake's cost.
        Some(client) => {
            actix_web::rt::spawn(connection::serve(
                gw, session, stream, identity, client, permit,
            ));
        }
        None => {
            drop(permit);
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
    } else if !gw.broker_healthy() {
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
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(gw.metrics().render(gw.node_id(), gw.scrape()))
}
