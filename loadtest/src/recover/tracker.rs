//! Reading one channel's frames: messages and `resync` go into the
//! subscriber's ledger, `subscribe` replies start or excuse a recovery, and
//! replays are timed until the subscriber has caught up.

use std::time::Instant;

use super::events::{elapsed_us, inc, RecoverStats};
use super::ledger::{Ledger, Position};
use crate::env::Frame;
use crate::stats;

/// What a frame was, for the subscriber reading it.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// A new message delivered live.
    Live(u64),
    /// A new message sent because of a recovery (offset ≤ the reply's top).
    Replayed(u64),
    Duplicate,
    Other,
}

/// A subscriber's channel: its ledger and an ongoing recovery.
pub struct Tracker {
    pub channel: String,
    pub ledger: Ledger,
    /// After `recovered: true`: the replay ends at (epoch, top); the
    /// reconnect began at the instant (for the catch-up time).
    replay: Option<(String, u64, Instant)>,
}

impl Tracker {
    pub fn new(channel: String, everything: bool) -> Tracker {
        Tracker {
            channel,
            ledger: Ledger::new(everything),
            replay: None,
        }
    }

    /// Still receiving the messages a recovery replays.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    pub fn on_frame(&mut self, frame: &Frame, stats: &RecoverStats) -> Seen {
        if frame.channel != Some(self.channel.as_str()) {
            return Seen::Other;
        }
        match frame.kind {
            "message" => {
                let (Some(offset), Some(epoch)) = (frame.offset, frame.epoch) else {
                    return Seen::Other;
                };
                if !self.ledger.observe(epoch, offset) {
                    return Seen::Duplicate;
                }
                match self.replay.take() {
                    Some((e, top, started)) if e == epoch && offset <= top => {
                        inc(&stats.replayed);
                        if offset == top {
                            stats::record(&mut stats.catch_up.lock().unwrap(), elapsed_us(started));
                        } else {
                            self.replay = Some((e, top, started));
                        }
                        Seen::Replayed(offset)
                    }
                    _ => Seen::Live(offset),
                }
            }
            "resync" => {
                inc(&stats.resyncs);
                self.replay = None;
                self.ledger.lost_track();
                Seen::Other
            }
            _ => Seen::Other,
        }
    }

    pub(super) fn on_subscribed(
        &mut self,
        reply: &Frame,
        since: Option<Position>,
        reconnect: Option<Instant>,
        stats: &RecoverStats,
    ) {
        let top = reply
            .offset
            .zip(reply.epoch)
            .map(|(o, e)| (e.to_owned(), o));
        match (since, reply.recovered) {
            (Some(_), Some(true)) => {
                inc(&stats.recovered);
                let started = reconnect.unwrap_or_else(Instant::now);
                stats::record(&mut stats.recovery.lock().unwrap(), elapsed_us(started));
                let behind = top.filter(|(e, t)| {
                    self.ledger
                        .position()
                        .is_none_or(|(le, lo)| le != e || lo < t)
                });
                match behind {
                    Some((e, t)) => self.replay = Some((e, t, started)),
                    None => {
                        stats::record(&mut stats.catch_up.lock().unwrap(), elapsed_us(started));
                    }
                }
            }
            (Some(_), _) => {
                inc(&stats.not_recovered);
                self.ledger.not_recovered(top);
            }
            (None, _) => self.ledger.subscribed(top),
        }
    }
}
