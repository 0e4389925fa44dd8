//! The client commands of protocol v1, executed against the gateway and
//! encoded as the one frame that answers each.

use std::sync::Arc;

use crate::gateway::Gateway;
use crate::hub::ConnId;
use crate::metrics;
use crate::protocol::{Command, ErrorBody, ErrorCode, Request, ServerFrame};

/// Run one client command and encode its answer.
pub async fn execute(gw: &Arc<Gateway>, conn: &ConnId, user: &str, request: Request<'_>) -> String {
    let id = request.id;
    let result: Result<String, ErrorBody> = match request.command {
        Command::Ping => Ok(ServerFrame::Pong { id }.encode()),
        Command::Subscribe { since: Some(_), .. } => Err(ErrorBody::new(
            ErrorCode::NotSupported,
            "`since` needs channel history, which this gateway does not keep yet",
        )),
        Command::Subscribe {
            channel,
            since: None,
        } => gw
            .subscribe(conn, &channel)
            .await
            .map(|()| ServerFrame::ok(id).encode()),
        Command::Unsubscribe { channel } => gw
            .unsubscribe(conn, &channel)
            .await
            .map(|()| ServerFrame::ok(id).encode()),
        Command::Publish {
            channel,
            data,
            traceparent,
        } => gw
            .publish(&channel, user, data, traceparent.as_deref())
            .await
            .map(|p| ServerFrame::published(id, p.offset, &p.epoch).encode()),
        Command::Send { user: to, data } => gw
            .send_direct(&to, user, data)
            .await
            .map(|()| ServerFrame::ok(id).encode()),
        Command::Presence { channel } => gw
            .presence_members(&channel)
            .await
            .map(|members| ServerFrame::members(id, &members).encode()),
        // The connection handles `refresh` itself: it owns the expiry.
        Command::Refresh { .. } => Err(ErrorBody::new(
            ErrorCode::Internal,
            "refresh is handled by the connection",
        )),
        Command::History { .. } => Err(ErrorBody::new(
            ErrorCode::NotSupported,
            "history is not available in this build",
        )),
    };
    result.unwrap_or_else(|error| {
        metrics::inc(&gw.metrics.bad_frames);
        ServerFrame::failure(id, error).encode()
    })
}
