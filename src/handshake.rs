//! What a WebSocket upgrade must pass before the 101: admission, draining,
//! origin, credentials. Every refusal is an HTTP status with a short
//! documented code (docs/protocol.md, "Refused upgrades"); details that
//! would help an attacker more than a client — parser errors, algorithm
//! lists — go to the node's log only.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::dev::RequestHead;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Access, Identity};
use crate::gateway::Gateway;
use crate::ids::UserId;

/// Seconds a client is asked to wait after a 503 (overload, draining).
pub const RETRY_AFTER_SECS: u32 = 1;

/// A refused upgrade: status, documented code, a message without internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
}

impl Refusal {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthorized(code: &'static str, message: &'static str) -> Self {
        Refusal::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// The same JSON error shape as the server API.
    pub fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        response.json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

/// Handshakes in flight, bounded: past the limit an upgrade is answered
/// 503 at once (cheap) instead of joining a queue whose every member
/// would time out, which is how the node used to collapse above its
/// connect-rate knee.
#[derive(Debug)]
pub struct Handshakes {
    in_flight: AtomicUsize,
    limit: usize,
}

/// One admitted handshake; the slot frees when it drops (after welcome).
#[derive(Debug)]
pub struct Permit(Arc<Handshakes>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handshakes {
    pub fn new(limit: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            in_flight: AtomicUsize::new(0),
            limit,
        })
    }

    pub fn try_admit(self: &Arc<Self>) -> Result<Permit, Refusal> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let permit = Permit(self.clone());
        if before >= self.limit {
            // Dropping the permit gives the slot back.
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many handshakes in progress; retry after the Retry-After delay",
            ));
        }
        Ok(permit)
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    user: Option<String>,
    token: Option<String>,
}

/// The node holds as many WebSockets as it may. (They leave actix's
/// per-worker connection count once upgraded, since they run in tasks of
/// their own, so the node counts them itself.)
fn capacity(gw: &Gateway) -> Result<(), Refusal> {
    let capacity = gw.settings().max_connections * gw.settings().workers;
    if gw.connection_count() >= capacity {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "at_capacity",
            "this node holds as many connections as it may; connect to another node",
        ));
    }
    Ok(())
}

/// `user` holds `count` connections, the most it may.
pub fn too_many_connections(user: &UserId, count: usize, limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connections",
        format!("user {user:?} already has {count} connections (limit {limit})"),
    )
}

/// The checks every upgrade passes before its user's connections are
/// counted, in order: a handshake slot (held until the welcome), the
/// node's capacity, then draining, origin and credentials.
pub fn admit(req: &RequestHead, gw: &Gateway) -> Result<(Permit, Identity), Refusal> {
    let permit = gw.admit_handshake()?;
    capacity(gw)?;
    Ok((permit, check(req, gw)?))
}

/// `user` may open one more connection (checked, not registered).
pub async fn user_limit(gw: &Gateway, user: &UserId) -> Result<(), Refusal> {
    let limit = gw.settings().max_connections_per_user;
    gw.check_user_limit(user)
        .await
        .map_err(|count| too_many_connections(user, count, limit))
}

/// Every check of an upgrade, in the same order, without admitting or
/// registering anything: what a plain GET on `/ws` answers.
pub async fn probe(req: &RequestHead, gw: &Gateway) -> Result<(), Refusal> {
    let (_permit, identity) = admit(req, gw)?;
    user_limit(gw, &identity.user).await
}

/// The checks that need no I/O: draining, origin, credentials.
pub fn check(req: &RequestHead, gw: &Gateway) -> Result<Identity, Refusal> {
    if gw.is_draining() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is draining; connect to another node",
        ));
    }
    // Cross-site WebSocket hijacking: a browser sends the page's origin,
    // and a page from an origin not on the list may not connect.
    // (Non-browser clients send no Origin and are not affected.)
    if let Some(origin) = req.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !gw.settings().origin_allowed(origin) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin may not connect",
            ));
        }
    }
    tracing::info_span!("authenticate").in_scope(|| identify(req, gw))
}

/// Who is connecting. A token (`Authorization: Bearer`, or `?token=` since
/// browsers cannot set headers on a WebSocket) must verify; two different
/// tokens are refused rather than one silently ignored. Without a token,
/// anonymous access — if enabled — takes the user from `?user=` or makes
/// one up.
fn identify(req: &RequestHead, gw: &Gateway) -> Result<Identity, Refusal> {
    let query = web::Query::<WsQuery>::from_query(req.uri.query().unwrap_or(""))
        .map_err(|e| {
            tracing::info!(error = %e, "bad query string");
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "malformed query string",
            )
        })?
        .into_inner();
    let bearer = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = match (bearer, query.token.as_deref()) {
        (Some(header), Some(query)) if header != query => {
            return Err(Refusal::unauthorized(
                "ambiguous_credentials",
                "the Authorization header and ?token= carry different tokens",
            ));
        }
        (header, query) => header.or(query),
    };
    if let Some(token) = token {
        let verifier = gw.auth().ok_or_else(|| {
            Refusal::unauthorized(
                "tokens_not_configured",
                "token authentication is not configured on this node",
            )
        })?;
        return verifier.verify(token).map_err(|e| {
            tracing::info!(error = %e, code = e.code(), "token refused");
            Refusal::unauthorized(e.code(), e.public_message())
        });
    }
    if !gw.settings().allow_anonymous {
        return Err(Refusal::unauthorized(
            "token_required",
            "a token is required (Authorization: Bearer, or ?token=)",
        ));
    }
    let user = match query.user {
        Some(user) => UserId::parse(user).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad `user`: {e}"),
            )
        })?,
        None => UserId::anonymous(),
    };
    Ok(Identity {
        user,
        expires: None,
        access: Access::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_past_the_limit_and_frees_slots_on_drop() {
        let admission = Handshakes::new(2);
        let a = admission.try_admit().unwrap();
        let _b = admission.try_admit().unwrap();
        let refused = admission.try_admit().unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        assert_eq!(admission.in_flight(), 2);
        drop(a);
        assert!(admission.try_admit().is_ok());
    }
}
