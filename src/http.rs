//! HTTP routes: the operational endpoints and the server API. WebSocket
//! upgrades are served by `upgrade` before they reach these routes.
//!
//! * `GET /ws` (and an upgrade request on `/`): WebSocket, protocol v1. A
//!   plain GET gets what an upgrade would get: its refusal, or 426 if it
//!   would be accepted. Browsers cannot read a refused upgrade's status
//!   (the page sees only close code 1006), so the JavaScript client asks
//!   this way to learn whether to retry, when (`Retry-After`) or not.
//! * `/` and `/client/v1/...`: the demo and the JavaScript client (`web`).
//! * `GET /echo`: an echoing WebSocket for conformance tests, only with
//!   `echo_endpoint` set (see `echo`); 404 otherwise.
//! * `GET /healthz`: 200 while the process serves requests.
//! * `GET /readyz`: 200 when ready for traffic; 503 while draining or while
//!   the broker is unreachable, so a load balancer stops routing here.
//! * `GET /metrics`: OpenMetrics text (Prometheus scrapes it).
//! * `/api/...`: the server API (see `api`).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::gateway::Gateway;
use crate::handshake::{self, Refusal};

pub fn routes(
    cfg: &mut web::ServiceConfig,
    api_body_limit: usize,
    echo_endpoint: bool,
    demo: bool,
) {
    crate::api::routes(cfg, api_body_limit);
    crate::web::routes(cfg, demo);
    if !demo {
        cfg.route("/", web::get().to(root));
    }
    cfg.route("/ws", web::get().to(probe))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
    if echo_endpoint {
        cfg.route("/echo", web::get().to(probe));
    }
}

fn plain(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// A plain GET on a WebSocket path (upgrade requests never reach the App:
/// see `upgrade`): the refusal an upgrade with the same query and headers
/// would get now, or 426 `upgrade_required` if it would be accepted.
/// Nothing is admitted or registered. A page of an allowed origin may read
/// the answer from another origin (CORS), `Retry-After` included.
async fn probe(req: HttpRequest, gw: web::Data<Gateway>) -> HttpResponse {
    let mut response = match handshake::probe(req.head(), &gw).await {
        Err(refusal) => refusal.response(),
        Ok(()) => {
            let mut r = Refusal::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "a WebSocket upgrade is expected here; one now would be accepted",
            )
            .response();
            r.headers_mut().insert(
                header::UPGRADE,
                header::HeaderValue::from_static("websocket"),
            );
            r
        }
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(origin) = origin.filter(|o| gw.settings().origin_allowed(o.to_str().unwrap_or("")))
    {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::HeaderValue::from_static("retry-after"),
        );
        headers.insert(header::VARY, header::HeaderValue::from_static("origin"));
    }
    response
}

/// `/` without the demo says what this is (an upgrade on `/` is served
/// like `/ws`).
async fn root(gw: web::Data<Gateway>) -> HttpResponse {
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
