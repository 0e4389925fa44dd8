//! Node-side gap repair: the subscriber remembers, per channel, the epoch
//! and the last offset it delivered. A message that skips offsets (Redis
//! dropped the subscriber connection for its output buffer, or it was down
//! and came back) makes the node read the missing range from the channel's
//! history stream and deliver it first; after a reconnect every tracked
//! channel catches up the same way once it is resubscribed. A message at or
//! below the last offset was already delivered (by a repair) and is
//! dropped. What history cannot fill — not kept, trimmed, or a new epoch —
//! is announced to the channel's subscribers with a `resync` frame, never
//! passed over in silence.

use std::collections::HashMap;

use bytestring::ByteString;

use super::streams::Streams;
use crate::broker::HistoryQuery;
use crate::config::MAX_HISTORY_SIZE;
use crate::hub::Hub;
use crate::metrics::{self, Metrics};
use crate::protocol::ServerFrame;
use crate::topic::Topic;

/// Where each tracked channel's delivery stands on this node.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    channels: HashMap<String, Seen>,
}

#[derive(Debug, Clone)]
struct Seen {
    epoch: String,
    /// The highest offset delivered.
    last: u64,
    /// Offsets up to here that are missing were already announced with a
    /// `resync`: a live message after such a gap is delivered as it is.
    /// (Never "up to the top": a message published after the subscription
    /// may still be queued, and must not be taken for a duplicate.)
    announced: u64,
    /// Tracked from the position before the SUBSCRIBE, no message yet: the
    /// first live one sets the pace (those published between that read and
    /// the SUBSCRIBE were never this node's to deliver). An empty epoch:
    /// the channel had none yet.
    fresh: bool,
}

/// What the tracker delivers with.
pub(super) struct Deliver<'a> {
    pub hub: &'a Hub,
    pub streams: &'a Streams,
    pub metrics: &'a Metrics,
}

impl Deliver<'_> {
    fn message(&self, channel: &str, at: (&str, u64), frame: &ByteString) -> usize {
        self.hub
            .dispatch(&Topic::Channel(channel.to_owned()), frame, Some(at))
    }

    fn resync(&self, channel: &str, reason: &str) {
        metrics::inc(&self.metrics.resyncs);
        tracing::warn!(
            channel,
            reason,
            "delivery gap not repairable; clients told to resync"
        );
        let frame = ServerFrame::Resync { channel, reason }.encode();
        self.hub
            .dispatch(&Topic::Channel(channel.to_owned()), &frame.into(), None);
    }
}

impl Seen {
    /// A channel with no stream in Redis yet: the first message sets the pace.
    fn untracked() -> Seen {
        Seen {
            epoch: String::new(),
            last: 0,
            announced: 0,
            fresh: true,
        }
    }

    /// Tracking that starts at a live message.
    fn first(epoch: &str, offset: u64) -> Seen {
        Seen {
            epoch: epoch.to_owned(),
            last: offset.saturating_sub(1),
            announced: offset.saturating_sub(1),
            fresh: false,
        }
    }
}

impl Tracker {
    /// Deliver a channel message in offset order, repairing a gap before
    /// it. Returns how many local connections got it.
    pub(super) async fn deliver(
        &mut self,
        to: &Deliver<'_>,
        topic: &Topic,
        channel: &str,
        epoch: &str,
        offset: u64,
        frame: &ByteString,
    ) -> usize {
        // The hot path: the next offset of the epoch we are on.
        if let Some(seen) = self.channels.get_mut(channel) {
            if !seen.fresh && seen.epoch == epoch && offset == seen.last + 1 {
                seen.last = offset;
                return to.hub.dispatch(topic, frame, Some((epoch, offset)));
            }
        }
        let mut seen = match self.channels.get(channel) {
            // The first message since the subscription: it sets the pace.
            None => Seen::first(epoch, offset),
            Some(seen) if seen.fresh && (seen.epoch == epoch || seen.epoch.is_empty()) => {
                Seen::first(epoch, offset)
            }
            Some(seen) if seen.epoch == epoch => seen.clone(),
            Some(_) => {
                // A new epoch (Redis lost the channel): what came before it
                // in the new epoch is read from history if kept.
                to.resync(channel, "epoch_changed");
                Seen {
                    epoch: epoch.to_owned(),
                    last: 0,
                    announced: offset.saturating_sub(1),
                    fresh: false,
                }
            }
        };
        if offset <= seen.last {
            return 0;
        }
        if offset > seen.last + 1 {
            fill(to, channel, &mut seen, Some(offset - 1)).await;
        }
        seen.last = offset;
        self.channels.insert(channel.to_owned(), seen);
        to.hub.dispatch(topic, frame, Some((epoch, offset)))
    }

    /// Channels (re)subscribed, with their positions from just before the
    /// SUBSCRIBE. One this node delivered before is caught up from where it
    /// stood (a reconnect); a new one is tracked from that position, so a
    /// drop before its first message is repaired too.
    pub(super) async fn subscribed(
        &mut self,
        to: &Deliver<'_>,
        channels: Vec<(String, Option<(String, u64)>)>,
    ) {
        for (channel, position) in channels {
            match self.channels.get(&channel).cloned() {
                Some(mut seen) => {
                    // Catch up only to where the channel stood before the
                    // SUBSCRIBE: what came after arrives live (and must not
                    // be announced as lost).
                    let upto = match position {
                        None => None,
                        Some((epoch, _)) if epoch.is_empty() => {
                            // Redis has no stream for it any more: what was
                            // tracked went with it (restart without
                            // persistence, expiry).
                            if !seen.epoch.is_empty() {
                                to.resync(&channel, "epoch_changed");
                            }
                            self.channels.insert(channel, Seen::untracked());
                            continue;
                        }
                        Some((epoch, offset)) if !seen.epoch.is_empty() && epoch != seen.epoch => {
                            to.resync(&channel, "epoch_changed");
                            seen = Seen {
                                epoch,
                                last: 0,
                                announced: offset,
                                fresh: false,
                            };
                            Some(offset)
                        }
                        Some((epoch, offset)) if epoch == seen.epoch && offset < seen.last => {
                            // The channel stands behind what this node
                            // delivered: Redis lost its newest messages (a
                            // failover to a replica that did not have them;
                            // with redis_wait_replicas none was acknowledged).
                            // The next publishes reuse those offsets, so the
                            // subscribers must drop what they hold past it.
                            to.resync(&channel, "rewound");
                            seen.last = offset;
                            seen.announced = offset;
                            self.channels.insert(channel, seen);
                            continue;
                        }
                        Some((_, offset)) => Some(offset),
                    };
                    fill(to, &channel, &mut seen, upto).await;
                    self.channels.insert(channel, seen);
                }
                None => {
                    if let Some((epoch, offset)) = position {
                        let seen = Seen {
                            epoch,
                            last: offset,
                            announced: offset,
                            fresh: true,
                        };
                        self.channels.insert(channel, seen);
                    }
                }
            }
        }
    }

    /// Stop tracking channels no longer subscribed.
    pub(super) fn forget(&mut self, channels: &[String]) {
        for channel in channels {
            self.channels.remove(channel);
        }
    }
}

/// Deliver the messages after `seen.last` up to `upto` (None: the newest)
/// from history, in order, and move `seen` past them; announce with a
/// `resync` the ones history does not have (unless already announced).
async fn fill(to: &Deliver<'_>, channel: &str, seen: &mut Seen, upto: Option<u64>) {
    // Nothing to deliver, or the gap was announced already.
    if upto.is_some_and(|upto| upto <= seen.last || upto <= seen.announced) {
        return;
    }
    let query = HistoryQuery {
        since: Some(seen.last),
        limit: upto.map_or(MAX_HISTORY_SIZE, |upto| (upto - seen.last) as usize),
        reverse: false,
    };
    let read = match to.streams.read(channel, query).await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(channel, error = %e, "history read for gap repair failed");
            to.resync(channel, "history_unavailable");
            seen.announced = seen.announced.max(upto.unwrap_or(seen.last));
            return;
        }
    };
    if seen.fresh && seen.epoch.is_empty() {
        // Tracked before the channel's first publish: its epoch is this one.
        seen.epoch = read.top.epoch.clone();
    }
    seen.fresh = false;
    if read.top.epoch != seen.epoch {
        // Reset while we were away: start over in the new epoch, from what
        // its history kept.
        to.resync(channel, "epoch_changed");
        *seen = Seen {
            epoch: read.top.epoch.clone(),
            last: 0,
            announced: read.top.offset,
            fresh: false,
        };
        let restart = HistoryQuery {
            since: Some(0),
            limit: MAX_HISTORY_SIZE,
            reverse: false,
        };
        if let Ok(read) = to.streams.read(channel, restart).await {
            deliver_read(to, channel, seen, &read.messages, read.top.offset);
        }
        return;
    }
    let upto = upto.unwrap_or(read.top.offset);
    let missed: Vec<_> = read
        .messages
        .iter()
        .filter(|(offset, _)| *offset > seen.last && *offset <= upto)
        .cloned()
        .collect();
    // Offsets are unique and increasing: all there iff the count matches.
    if (missed.len() as u64) < upto.saturating_sub(seen.last) && upto > seen.announced {
        to.resync(channel, "history_gap");
        seen.announced = upto;
    }
    deliver_read(to, channel, seen, &missed, upto);
}

/// Deliver messages read from history past `seen.last`, up to `upto`.
fn deliver_read(
    to: &Deliver<'_>,
    channel: &str,
    seen: &mut Seen,
    messages: &[(u64, ByteString)],
    upto: u64,
) {
    for (offset, frame) in messages {
        if *offset > seen.last && *offset <= upto {
            to.message(channel, (&seen.epoch, *offset), frame);
            metrics::inc(&to.metrics.gap_repairs);
            seen.last = *offset;
        }
    }
}
