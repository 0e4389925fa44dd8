//! The server HTTP API under `/api`: JSON in, JSON out, guarded by an API
//! key (`Authorization: apikey KEY`). Backends use it to publish, send to
//! users, read presence and the node list, and disconnect users.
//!
//! Every error is `{"error": {"code", "message"}}` with a fitting status:
//! 401 for a missing or wrong key (or an API with no key configured), 400
//! for a body or name the endpoint cannot take, 413 for an oversize body,
//! 503 when Redis does not answer. docs/api.md shows each endpoint with curl.
//!
//! The key is checked first, by a middleware around the whole scope, before
//! any extractor reads the body: a caller without the key gets 401 whatever
//! it sends, and its body is never read or parsed.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{error::JsonPayloadError, web, HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::gateway::Gateway;
use crate::ids::{ChannelName, IdempotencyKey, UserId};
use crate::metrics;
use crate::protocol::StreamPosition;
use crate::protocol::{check_data, ErrorBody, ErrorCode};

/// Most channels one broadcast may name.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;

pub fn routes(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.service(
        web::scope("/api")
            .wrap(from_fn(require_key))
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .content_type_required(false)
                    .error_handler(|err, _req| {
                        let response = body_error(&err);
                        actix_web::error::InternalError::from_response(err, response).into()
                    }),
            )
            .app_data(web::QueryConfig::default().error_handler(|err, _req| {
                let body = ErrorBody::new(ErrorCode::BadRequest, format!("bad query: {err}"));
                actix_web::error::InternalError::from_response(err, body.error_response()).into()
            }))
            .route("/publish", web::post().to(publish))
            .route("/broadcast", web::post().to(broadcast))
            .route("/send", web::post().to(send))
            .route("/disconnect", web::post().to(disconnect))
            .route("/presence/{channel:.+}", web::get().to(presence))
            .route("/history/{channel:.+}", web::get().to(history))
            .route("/users/{user}/connections", web::get().to(connections))
            .route("/nodes", web::get().to(nodes))
            .default_service(web::to(not_found)),
    );
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let message = format!(
        "no API endpoint {} {}; see docs/api.md",
        req.method(),
        req.path()
    );
    ErrorBody::new(ErrorCode::NotFound, message).error_response()
}

/// The one mapping from a wire error code to an HTTP status.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BrokerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Handlers return `Result<_, ErrorBody>` and use `?`: gateway errors and
/// name errors convert into the body, and actix renders it with its status.
impl ResponseError for ErrorBody {
    fn status_code(&self) -> StatusCode {
        status_of(self.code)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self }))
    }
}

type Reply = Result<HttpResponse, ErrorBody>;

fn body_error(err: &JsonPayloadError) -> HttpResponse {
    let code = match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ErrorCode::PayloadTooLarge
        }
        _ => ErrorCode::BadRequest,
    };
    ErrorBody::new(code, format!("bad request body: {err}")).error_response()
}

/// Constant-time comparison, so the key cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check the API key.
fn authorize(req: &HttpRequest, gw: &Gateway) -> Result<(), ErrorBody> {
    metrics::inc(&gw.metrics().api_requests);
    let unauthorized = |msg: &str| Err(ErrorBody::new(ErrorCode::Unauthorized, msg));
    let Some(key) = &gw.settings().api_key else {
        return unauthorized("the server API is disabled on this node: set api_key");
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "));
    match given {
        None => unauthorized("missing `Authorization: apikey KEY` header"),
        Some(given) if same(given.trim().as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => unauthorized("wrong API key"),
    }
}

/// Refuse a request without the right key before anything else runs for
/// it: the handlers' extractors (the JSON body above all) come after this.
async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refused = match req.app_data::<web::Data<Gateway>>() {
        Some(gw) => authorize(req.request(), gw).err(),
        None => Some(ErrorBody::new(ErrorCode::Internal, "no gateway")),
    };
    match refused {
        Some(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

/// `data` of an API body: any JSON that passes [`check_data`] (the same
/// check as over the WebSocket); otherwise the body is refused with 400.
fn checked_data<'de, D: Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let data = Box::<RawValue>::deserialize(d)?;
    check_data(&data).map_err(serde::de::Error::custom)?;
    Ok(data)
}

/// The sender named in `message.from` / `direct.from` for API calls.
fn sender(from: &Option<String>) -> Result<&str, ErrorBody> {
    match from {
        Some(from) => {
            UserId::parse(from.as_str())?;
            Ok(from)
        }
        None => Ok(""),
    }
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    #[serde(deserialize_with = "checked_data")]
    data: Box<RawValue>,
    from: Option<String>,
    traceparent: Option<String>,
    idempotency_key: Option<IdempotencyKey>,
}

#[derive(Serialize)]
struct Position<'a> {
    offset: u64,
    epoch: &'a str,
}

async fn publish(gw: web::Data<Gateway>, body: web::Json<PublishBody>) -> Reply {
    let from = sender(&body.from)?;
    let channel = ChannelName::parse(body.channel.as_str())?;
    let p = gw
        .publish(
            &gw.route(&channel)?,
            from,
            &body.data,
            body.traceparent.as_deref(),
            body.idempotency_key.as_ref(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(Position {
        offset: p.offset,
        epoch: &p.epoch,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    #[serde(deserialize_with = "checked_data")]
    data: Box<RawValue>,
    from: Option<String>,
    /// Applies per channel: a retried broadcast publishes nowhere twice.
    idempotency_key: Option<IdempotencyKey>,
}

/// Publish one message to several channels; each channel gets its own
/// result, so one bad channel does not hide the others' offsets.
async fn broadcast(gw: web::Data<Gateway>, body: web::Json<BroadcastBody>) -> Reply {
    if body.channels.is_empty() || body.channels.len() > MAX_BROADCAST_CHANNELS {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("`channels` must name 1 to {MAX_BROADCAST_CHANNELS} channels"),
        ));
    }
    let from = sender(&body.from)?;
    let mut results = Vec::with_capacity(body.channels.len());
    for channel in &body.channels {
        let published = async {
            let name = ChannelName::parse(channel.as_str())?;
            let route = gw.route(&name)?;
            Ok::<_, ErrorBody>(
                gw.publish(
                    &route,
                    from,
                    &body.data,
                    None,
                    body.idempotency_key.as_ref(),
                )
                .await?,
            )
        };
        results.push(match published.await {
            Ok(p) => json!({ "channel": channel, "offset": p.offset, "epoch": p.epoch }),
            Err(e) => json!({ "channel": channel, "error": e }),
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    user: String,
    #[serde(deserialize_with = "checked_data")]
    data: Box<RawValue>,
    from: Option<String>,
}

async fn send(gw: web::Data<Gateway>, body: web::Json<SendBody>) -> Reply {
    let from = sender(&body.from)?;
    let to = UserId::parse(body.user.as_str())?;
    gw.send_direct(&to, from, &body.data).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
    /// Close with `force_reconnect` (3005) instead of `force_disconnect` (3501).
    #[serde(default)]
    reconnect: bool,
}

async fn disconnect(gw: web::Data<Gateway>, body: web::Json<DisconnectBody>) -> Reply {
    let user = UserId::parse(body.user.as_str())?;
    gw.disconnect_user(&user, body.reconnect).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn presence(gw: web::Data<Gateway>, channel: web::Path<String>) -> Reply {
    let channel = ChannelName::parse(channel.into_inner())?;
    let members = gw.presence_members(&gw.route(&channel)?).await?;
    Ok(HttpResponse::Ok().json(json!({ "channel": channel.as_str(), "members": members })))
}

async fn connections(gw: web::Data<Gateway>, user: web::Path<String>) -> Reply {
    let user = UserId::parse(user.into_inner())?;
    let conns = gw.user_connections(&user).await?;
    Ok(HttpResponse::Ok().json(json!({ "user": user.as_str(), "connections": conns })))
}

async fn nodes(gw: web::Data<Gateway>) -> Reply {
    let nodes = gw.nodes().await?;
    Ok(HttpResponse::Ok().json(json!({ "nodes": nodes })))
}

/// `GET /api/history/{channel}` query: `since_offset` and `since_epoch`
/// together (a position), `limit`, `reverse`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    since_offset: Option<u64>,
    since_epoch: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

async fn history(
    gw: web::Data<Gateway>,
    channel: web::Path<String>,
    params: web::Query<HistoryParams>,
) -> Reply {
    let channel = ChannelName::parse(channel.into_inner())?;
    let params = params.into_inner();
    let since = match (params.since_offset, params.since_epoch) {
        (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch }),
        (None, None) => None,
        _ => {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                "`since_offset` and `since_epoch` go together",
            ))
        }
    };
    let route = gw.route(&channel)?;
    let read = gw
        .history(&route, since.as_ref(), params.limit, params.reverse)
        .await?;
    let messages = crate::commands::raw_frames(&read.messages);
    Ok(HttpResponse::Ok().json(json!({
        "channel": channel.as_str(),
        "offset": read.top.offset,
        "epoch": read.top.epoch,
        "messages": messages,
    })))
}
