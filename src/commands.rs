//! The client commands of protocol v1, executed against the gateway and
//! encoded as the one frame that answers each.

use std::sync::Arc;

use crate::auth::Access;
use crate::gateway::Gateway;
use crate::hub::ConnId;
use crate::metrics;
use crate::permissions::Action;
use crate::protocol::{Command, ErrorBody, ErrorCode, Request, ServerFrame};

/// Who is asking: the connection, its user and what its token allows.
pub struct Caller<'a> {
    pub conn: &'a ConnId,
    pub user: &'a str,
    pub access: &'a Access,
}

/// Run one client command and encode its answer.
pub async fn execute(gw: &Arc<Gateway>, caller: &Caller<'_>, request: Request<'_>) -> String {
    let Caller { conn, user, access } = *caller;
    let allowed = |channel: &str, action| gw.authorize(conn, user, access, channel, action);
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
        } => match allowed(&channel, Action::Subscribe) {
            Ok(()) => gw
                .subscribe(conn, &channel)
                .await
                .map(|()| ServerFrame::ok(id).encode()),
            Err(e) => Err(e),
        },
        Command::Unsubscribe { channel } => gw
            .unsubscribe(conn, &channel)
            .await
            .map(|()| ServerFrame::ok(id).encode()),
        Command::Publish {
            channel,
            data,
            traceparent,
        } => match allowed(&channel, Action::Publish) {
            Ok(()) => gw
                .publish(&channel, user, data, traceparent.as_deref())
                .await
                .map(|p| ServerFrame::published(id, p.offset, &p.epoch).encode()),
            Err(e) => Err(e),
        },
        Command::Send { user: to, data } => gw
            .send_direct(&to, user, data)
            .await
            .map(|()| ServerFrame::ok(id).encode()),
        Command::Presence { channel } => match allowed(&channel, Action::Presence) {
            Ok(()) => gw
                .presence_members(&channel)
                .await
                .map(|members| ServerFrame::members(id, &members).encode()),
            Err(e) => Err(e),
        },
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
        metrics::inc(&gw.metrics().bad_frames);
        ServerFrame::failure(id, error).encode()
    })
}
