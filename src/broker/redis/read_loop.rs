//! The subscriber connection's read side: every pub/sub message to the
//! hub, channel messages through the gap-repair tracker (`repair`), and the
//! reconciler's news of (un)subscribed channels, one at a time in one task
//! so repairs and live messages cannot interleave out of order.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use redis::Msg;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::repair::{Deliver, Tracker};
use super::streams::Streams;
use crate::broker::envelope::{self, Delivery};
use crate::hub::Hub;
use crate::keys::Keys;
use crate::metrics::{self, Metrics};
use crate::telemetry;
use crate::topic::Topic;

/// What the read loop delivers with.
pub(super) struct Context {
    pub(super) node_id: String,
    pub(super) hub: Arc<Hub>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) streams: Arc<Streams>,
    pub(super) keys: Keys,
}

/// Subscriptions the reconciler confirmed, for the read loop's tracker.
pub(super) enum Change {
    /// Channels now subscribed, each with its position read just before
    /// the SUBSCRIBE (None if that read failed).
    Subscribed(Vec<(String, Option<(String, u64)>)>),
    /// Channels no longer subscribed.
    Unsubscribed(Vec<String>),
}

/// Forward every pub/sub message to the hub, channel messages in offset
/// order (see `repair`), and catch up channels as they are resubscribed.
/// Ends when the connection does (with sharded pub/sub: never, the
/// stream carries every shard's messages).
pub(super) async fn read_loop(
    mut stream: impl Stream<Item = Msg> + Unpin,
    mut changes: mpsc::UnboundedReceiver<Change>,
    cx: &Context,
    tracker: &mut Tracker,
) {
    let to = Deliver {
        hub: &cx.hub,
        streams: &cx.streams,
        metrics: &cx.metrics,
    };
    loop {
        let msg = tokio::select! {
            biased;
            Some(change) = changes.recv() => {
                match change {
                    Change::Subscribed(channels) => tracker.subscribed(&to, channels).await,
                    Change::Unsubscribed(channels) => tracker.forget(&channels),
                }
                continue;
            }
            msg = stream.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
        };
        match envelope::decode(msg.get_payload_bytes()) {
            Ok((header, Delivery::Frame { topic, frame })) => {
                metrics::inc(&cx.metrics.broker_messages_in);
                let channel = header.c.as_deref().unwrap_or_default();
                let span = telemetry::deliver_span(
                    channel,
                    &cx.node_id,
                    frame.len(),
                    header.tp.as_deref(),
                );
                let recipients = match (&topic, header.off, header.ep.as_deref()) {
                    (Topic::Channel(channel), Some(offset), Some(epoch)) => {
                        let delivery = tracker.deliver(&to, &topic, channel, epoch, offset, &frame);
                        delivery.instrument(span.clone()).await
                    }
                    _ => span.in_scope(|| cx.hub.dispatch(&topic, &frame, None)),
                };
                span.record("recipients", recipients);
            }
            Ok((_header, Delivery::Disconnect { user, reason })) => {
                let closed = cx.hub.close_user(&user, reason);
                tracing::debug!(%user, closed, reason = reason.name(), "disconnect requested");
            }
            Err(e) => {
                tracing::warn!(channel = msg.get_channel_name(), error = %e, "dropping malformed envelope");
            }
        }
    }
}
