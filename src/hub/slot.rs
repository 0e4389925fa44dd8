//! A connection's membership of one topic, and the hold of a subscription
//! that recovers: its live frames wait while the missed ones are sent, and
//! late copies of those are dropped after (see `Hub::add_held`, `release`).

use std::sync::Mutex;

use super::Member;
use crate::disconnect::Disconnect;
use crate::metrics::{self, Metrics};
use crate::socket::WireFrame;

/// Where a channel message stands in its stream: (epoch, offset).
pub type At<'a> = (&'a str, u64);

/// A frame held back while a subscription recovers, with its position.
type Held = (Option<(String, u64)>, WireFrame);

/// A recovering subscription's live frames (see `Slot::catch`).
#[derive(Debug)]
pub(super) enum Catch {
    /// Until `release`: held back, with their positions.
    Held(Vec<Held>),
    /// After `release`: the missed messages the client got from history
    /// went up to `upto` of `epoch`, but this node may not have delivered
    /// all of them live yet (its pub/sub connection lags behind the history
    /// read); such late ones are dropped, until a later message arrives.
    Skip {
        epoch: String,
        upto: u64,
    },
    Live,
}

/// A connection's membership of one topic.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) member: Member,
    /// Only for a subscription that recovers (`add_held` .. `release`): its
    /// live frames wait here instead of in the outbox, so the missed
    /// messages read from history go to the client first, then these, minus
    /// the ones history already covered — and, after the release, minus
    /// those that arrive late. Rare, hence the lock of its own.
    pub(super) catch: Option<Mutex<Catch>>,
}

impl Slot {
    pub(super) fn offer(&self, frame: &WireFrame, at: Option<At<'_>>, metrics: &Metrics) -> bool {
        let Some(catch) = &self.catch else {
            return self.member.offer(frame.clone(), metrics);
        };
        let mut catch = catch.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *catch {
            Catch::Held(held) => {
                if held.len() >= self.member.outbox.capacity() {
                    // As with a full outbox: this client cannot keep up.
                    metrics::inc(&metrics.slow_consumer_closes);
                    self.member.closer.close(Disconnect::SlowConsumer);
                    return false;
                }
                held.push((at.map(|(e, o)| (e.to_owned(), o)), frame.clone()));
                true
            }
            Catch::Skip { epoch, upto } => match at {
                Some((e, o)) if e == epoch.as_str() && o <= *upto => false,
                Some(_) => {
                    *catch = Catch::Live;
                    self.member.offer(frame.clone(), metrics)
                }
                None => self.member.offer(frame.clone(), metrics),
            },
            Catch::Live => self.member.offer(frame.clone(), metrics),
        }
    }

    /// End the hold: offer the held frames past `after` (and those without
    /// a position), then skip late copies up to `after`. Returns how many
    /// were queued.
    pub(super) fn release(&mut self, after: Option<At<'_>>, metrics: &Metrics) -> u64 {
        let Some(catch) = self.catch.take() else {
            return 0;
        };
        let Catch::Held(held) = catch.into_inner().unwrap_or_else(|e| e.into_inner()) else {
            return 0;
        };
        let mut delivered = 0;
        // Whether a message past `after` came: then none up to it can follow.
        let mut past = after.is_none();
        for (at, frame) in held {
            let wanted = match (&at, after) {
                (Some((epoch, offset)), Some((e, o))) => epoch != e || *offset > o,
                _ => true,
            };
            past |= wanted && at.is_some();
            if wanted && self.member.offer(frame, metrics) {
                delivered += 1;
            }
        }
        if let (false, Some((epoch, upto))) = (past, after) {
            self.catch = Some(Mutex::new(Catch::Skip {
                epoch: epoch.to_owned(),
                upto,
            }));
        }
        delivered
    }
}
