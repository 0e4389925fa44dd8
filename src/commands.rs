//! The client commands of protocol v1, executed against the gateway and
//! encoded as the one frame that answers each.

use std::sync::Arc;

use crate::gateway::{Caller, Gateway};
use crate::metrics;
use crate::permissions::Action;
use crate::protocol::{Command, ErrorBody, ErrorCode, Request, ServerFrame};

/// Run one client command and encode its answer.
pub async fn execute(gw: &Arc<Gateway>, caller: &Caller<'_>, request: Request<'_>) -> String {
    let id = request.id;
    run(gw, caller, id, request.command)
        .await
        .unwrap_or_else(|error| {
            metrics::inc(&gw.metrics().bad_frames);
            ServerFrame::failure(id, error).encode()
        })
}

async fn run(
    gw: &Arc<Gateway>,
    caller: &Caller<'_>,
    id: Option<u64>,
    command: Command<'_>,
) -> Result<String, ErrorBody> {
    Ok(match command {
        Command::Ping => ServerFrame::Pong { id }.encode(),
        Command::Subscribe { since: Some(_), .. } => {
            return Err(ErrorBody::new(
                ErrorCode::NotSupported,
                "`since` needs channel history, which this gateway does not keep yet",
            ))
        }
        Command::Subscribe {
            channel,
            since: None,
        } => {
            let route = gw.route(&channel)?;
            gw.authorize(caller, &route, Action::Subscribe)?;
            gw.subscribe(caller.conn, &route).await?;
            ServerFrame::ok(id).encode()
        }
        Command::Unsubscribe { channel } => {
            gw.unsubscribe(caller.conn, &gw.route(&channel)?).await?;
            ServerFrame::ok(id).encode()
        }
        Command::Publish {
            channel,
            data,
            traceparent,
        } => {
            let route = gw.route(&channel)?;
            gw.authorize(caller, &route, Action::Publish)?;
            let p = gw
                .publish(&route, caller.user, data, traceparent.as_deref())
                .await?;
            ServerFrame::published(id, p.offset, &p.epoch).encode()
        }
        Command::Send { user: to, data } => {
            gw.send_direct(&to, caller.user, data).await?;
            ServerFrame::ok(id).encode()
        }
        Command::Presence { channel } => {
            let route = gw.route(&channel)?;
            gw.authorize(caller, &route, Action::Presence)?;
            let members = gw.presence_members(&route).await?;
            ServerFrame::members(id, &members).encode()
        }
        // The connection handles `refresh` itself: it owns the expiry.
        Command::Refresh { .. } => {
            return Err(ErrorBody::new(
                ErrorCode::Internal,
                "refresh is handled by the connection",
            ))
        }
        Command::History { .. } => {
            return Err(ErrorBody::new(
                ErrorCode::NotSupported,
                "history is not available in this build",
            ))
        }
    })
}
