//! HTTP routes: the operational endpoints and the server API. WebSocket
//! upgrades are served by `upgrade` before they reach these routes.
//!
//! * `GET /ws` (and an upgrade request on `/`): WebSocket, protocol v1; a
//!   plain GET is told what is missing (400).
//! * `GET /echo`: an echoing WebSocket for conformance tests, only with
//!   `echo_endpoint` set (see `echo`); 404 otherwise.
//! * `GET /healthz`: 200 while the process serves requests.
//! * `GET /readyz`: 200 when ready for traffic; 503 while draining or while
//!   the broker is unreachable, so a load balancer stops routing here.
//! * `GET /metrics`: OpenMetrics text (Prometheus scrapes it).
//! * `/api/...`: the server API (see `api`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::gateway::Gateway;

pub fn routes(cfg: &mut web::ServiceConfig, api_body_limit: usize, echo_endpoint: bool) {
    crate::api::routes(cfg, api_body_limit);
    cfg.route("/ws", web::get().to(not_upgraded))
        .route("/", web::get().to(root))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
    if echo_endpoint {
        cfg.route("/echo", web::get().to(not_upgraded));
    }
}

fn plain(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// A plain GET on a WebSocket path: what is missing for an upgrade.
/// (Upgrade requests never reach the App: see `upgrade`.)
async fn not_upgraded(req: HttpRequest) -> HttpResponse {
    match actix_http::ws::verify_handshake(req.head()) {
        Err(e) => HttpResponse::from_error(e),
        Ok(()) => plain(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade is expected here\n".into(),
        ),
    }
}

/// `/` says what this is (an upgrade on `/` is served like `/ws`).
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
