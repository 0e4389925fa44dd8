//! The client commands of protocol v1, executed against the gateway and
//! encoded as the one frame that answers each.

use std::sync::Arc;

use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::broker::Position;
use crate::gateway::{Caller, Gateway};
use crate::ids::ChannelName;
use crate::metrics;
use crate::permissions::Action;
use crate::protocol::{Command, ErrorBody, ErrorCode, Request, ServerFrame};

/// What answers a command: the reply frame, and for a recovering
/// subscription what follows it.
pub struct Answer {
    pub reply: String,
    pub recovery: Option<Recovery>,
}

/// The messages a `subscribe {since}` missed, to send right after the
/// reply; then `Gateway::release(conn, channel, after)` lets live ones on.
pub struct Recovery {
    pub channel: ChannelName,
    pub missed: Vec<(u64, ByteString)>,
    pub after: Option<Position>,
}

impl From<String> for Answer {
    fn from(reply: String) -> Answer {
        Answer {
            reply,
            recovery: None,
        }
    }
}

/// Run one client command and encode its answer.
pub async fn execute(gw: &Arc<Gateway>, caller: &Caller<'_>, request: Request<'_>) -> Answer {
    let id = request.id;
    run(gw, caller, id, request.command)
        .await
        .unwrap_or_else(|error| {
            metrics::inc(&gw.metrics().bad_frames);
            ServerFrame::failure(id, error).encode().into()
        })
}

async fn run(
    gw: &Arc<Gateway>,
    caller: &Caller<'_>,
    id: Option<u64>,
    command: Command<'_>,
) -> Result<Answer, ErrorBody> {
    Ok(match command {
        Command::Ping => ServerFrame::Pong { id }.encode().into(),
        Command::Subscribe { channel, since } => {
            let route = gw.route(&channel)?;
            gw.authorize(caller, &route, Action::Subscribe)?;
            let s = gw.subscribe(caller.conn, &route, since.as_ref()).await?;
            let position = s.top.as_ref().map(|p| (p.offset, p.epoch.as_str()));
            let reply = ServerFrame::subscribed(id, position, s.recovered).encode();
            Answer {
                reply,
                recovery: since.map(|_| Recovery {
                    channel: channel.clone(),
                    missed: s.missed,
                    after: s.after,
                }),
            }
        }
        Command::Unsubscribe { channel } => {
            gw.unsubscribe(caller.conn, &gw.route(&channel)?).await?;
            ServerFrame::ok(id).encode().into()
        }
        Command::Publish {
            channel,
            data,
            traceparent,
            idempotency_key,
        } => {
            let route = gw.route(&channel)?;
            gw.authorize(caller, &route, Action::Publish)?;
            let p = gw
                .publish(
                    &route,
                    caller.user,
                    data,
                    traceparent.as_deref(),
                    idempotency_key.as_ref(),
                )
                .await?;
            ServerFrame::published(id, p.offset, &p.epoch)
                .encode()
                .into()
        }
        Command::Send { user: to, data } => {
            gw.send_direct(&to, caller.user, data).await?;
            ServerFrame::ok(id).encode().into()
        }
        Command::Presence { channel } => {
            let route = gw.route(&channel)?;
            gw.authorize(caller, &route, Action::Presence)?;
            let members = gw.presence_members(&route).await?;
            ServerFrame::members(id, &members).encode().into()
        }
        Command::History {
            channel,
            since,
            limit,
            reverse,
        } => {
            // Reading history is subscribing to the past: the same rule.
            let route = gw.route(&channel)?;
            gw.authorize(caller, &route, Action::Subscribe)?;
            let limit = limit.map(|l| l as usize);
            let read = gw.history(&route, since.as_ref(), limit, reverse).await?;
            let messages = raw_frames(&read.messages);
            ServerFrame::history(id, read.top.offset, &read.top.epoch, &messages)
                .encode()
                .into()
        }
        // The connection handles `refresh` itself: it owns the expiry.
        Command::Refresh { .. } => {
            return Err(ErrorBody::new(
                ErrorCode::Internal,
                "refresh is handled by the connection",
            ))
        }
    })
}

/// Stored `message` frames as JSON values to embed in a reply (they are
/// JSON the broker encoded; one that is not would be skipped).
pub(crate) fn raw_frames(messages: &[(u64, ByteString)]) -> Vec<&RawValue> {
    messages
        .iter()
        .filter_map(|(_, frame)| serde_json::from_str::<&RawValue>(frame).ok())
        .collect()
}
