//! One subscriber's account of one channel: the offsets it received, the
//! ranges it was told it cannot have, and where its window starts; settled
//! against the acknowledged offsets at the end of a run.

use std::collections::HashMap;

use super::offsets::{OffsetSet, OPEN};

/// (epoch, offset)
pub type Position = (String, u64);

/// Where a subscriber's responsibility for a channel begins.
#[derive(Debug, Clone)]
enum Start {
    /// Every acknowledged message (it subscribed before any was published).
    Everything,
    /// From the first message it gets (subscribed with no position known).
    FirstMessage,
    /// After this position.
    After(Position),
}

/// One subscriber's account of one channel.
#[derive(Debug, Clone)]
pub struct Ledger {
    start: Start,
    last: Option<Position>,
    received: HashMap<String, OffsetSet>,
    excused: HashMap<String, OffsetSet>,
    /// A gap to forgive before the next message: everything after this
    /// position (None: from the beginning).
    pending: Option<Option<Position>>,
    pub duplicates: u64,
}

/// What one ledger (or a run) adds up to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Acknowledged messages in the subscriber's window.
    pub expected: u64,
    /// Of those, received.
    pub received: u64,
    /// Of those, not received but excused (the client was told it missed them).
    pub unrecoverable: u64,
    /// expected − received − unrecoverable.
    pub lost: u64,
    pub duplicates: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.expected += o.expected;
        self.received += o.received;
        self.unrecoverable += o.unrecoverable;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
    }
}

impl Ledger {
    /// `everything`: the subscriber is owed every acknowledged message
    /// (it subscribed before publishing began); otherwise its window starts
    /// where its first subscription found the channel.
    pub fn new(everything: bool) -> Ledger {
        Ledger {
            start: if everything {
                Start::Everything
            } else {
                Start::FirstMessage
            },
            last: None,
            received: HashMap::new(),
            excused: HashMap::new(),
            pending: None,
            duplicates: 0,
        }
    }

    /// The position to resume from: the last message received (or the
    /// channel's top when the subscription began or was reset).
    pub fn position(&self) -> Option<&Position> {
        self.last.as_ref()
    }

    fn anchor(&self) -> Option<Position> {
        self.last.clone().or_else(|| match &self.start {
            Start::After(p) => Some(p.clone()),
            _ => None,
        })
    }

    fn advance(&mut self, epoch: &str, offset: u64) {
        match &mut self.last {
            Some((e, o)) if e == epoch => *o = (*o).max(offset),
            last => *last = Some((epoch.to_owned(), offset)),
        }
    }

    fn excuse(&mut self, epoch: &str, lo: u64, hi: u64) {
        match self.excused.get_mut(epoch) {
            Some(set) => set.insert_range(lo, hi),
            None => self
                .excused
                .entry(epoch.to_owned())
                .or_default()
                .insert_range(lo, hi),
        };
    }

    /// Forgive everything after `from` up to `to` (inclusive) in `epoch`.
    fn excuse_between(&mut self, from: Option<Position>, epoch: &str, to: u64) {
        match from {
            Some((e, a)) if e == epoch => self.excuse(epoch, a + 1, to),
            Some((e, a)) => {
                self.excuse(&e, a + 1, OPEN);
                self.excuse(epoch, 0, to);
            }
            None => self.excuse(epoch, 0, to),
        }
    }

    /// A message arrived; false if it is a duplicate.
    pub fn observe(&mut self, epoch: &str, offset: u64) -> bool {
        if matches!(self.start, Start::FirstMessage) {
            self.start = Start::After((epoch.to_owned(), offset.saturating_sub(1)));
        }
        if let Some(from) = self.pending.take() {
            self.excuse_between(from, epoch, offset.saturating_sub(1));
        }
        let new = match self.received.get_mut(epoch) {
            Some(set) => set.insert(offset),
            None => self
                .received
                .entry(epoch.to_owned())
                .or_default()
                .insert(offset),
        };
        if !new {
            self.duplicates += 1;
            return false;
        }
        self.advance(epoch, offset);
        true
    }

    /// A subscription without `since` is live; `top` is the channel's
    /// position in the reply (channels with history).
    pub fn subscribed(&mut self, top: Option<Position>) {
        let Some((epoch, offset)) = top else { return };
        match &self.start {
            Start::FirstMessage => self.start = Start::After((epoch.clone(), offset)),
            // A message may arrive ahead of the reply; the window still
            // starts at the top the reply names.
            Start::After((e, a)) if *e == epoch && *a > offset => {
                self.start = Start::After((epoch.clone(), offset))
            }
            _ => {}
        }
        if let Some(from) = self.pending.take() {
            self.excuse_between(from, &epoch, offset);
        }
        if self.last.as_ref().is_none_or(|(e, _)| *e == epoch) {
            self.advance(&epoch, offset);
        }
    }

    /// `recovered: false`: everything after the position up to `top` is gone.
    pub fn not_recovered(&mut self, top: Option<Position>) {
        let from = self.anchor();
        match top {
            Some((epoch, offset)) => {
                self.excuse_between(from, &epoch, offset);
                self.advance(&epoch, offset);
            }
            None => self.pending = Some(from),
        }
    }

    /// A `resync` frame, or coming back without a position: the gap before
    /// the next message is forgiven.
    pub fn lost_track(&mut self) {
        if self.pending.is_none() {
            self.pending = Some(self.anchor());
        }
    }

    /// Settle against the acknowledged offsets. `tail_open`: the
    /// subscriber left before the end, so its window ends at the last
    /// message it got (what was published after it left is not owed).
    pub fn settle(&self, acked: &HashMap<String, OffsetSet>, tail_open: bool) -> Counts {
        let mut excused = self.excused.clone();
        match &self.pending {
            Some(Some((e, a))) => {
                excused
                    .entry(e.clone())
                    .or_default()
                    .insert_range(a + 1, OPEN);
            }
            Some(None) => {
                for e in acked.keys() {
                    excused.entry(e.clone()).or_default().insert_range(0, OPEN);
                }
            }
            None => {}
        }
        let mut c = Counts {
            duplicates: self.duplicates,
            ..Counts::default()
        };
        for (epoch, set) in acked {
            let mut window = match &self.start {
                Start::Everything => set.clone(),
                Start::FirstMessage => OffsetSet::default(),
                Start::After((e, a)) if e == epoch => set.within(a + 1, OPEN),
                Start::After(_) => set.clone(),
            };
            if tail_open {
                window = match &self.last {
                    Some((e, b)) if e == epoch => window.within(0, *b),
                    Some(_) => window,
                    None => OffsetSet::default(),
                };
            }
            let empty = OffsetSet::default();
            let received = window.intersect(self.received.get(epoch).unwrap_or(&empty));
            let excused = window.intersect(excused.get(epoch).unwrap_or(&empty));
            let excused_received = excused.intersect(&received).len();
            c.expected += window.len();
            c.received += received.len();
            c.unrecoverable += excused.len() - excused_received;
        }
        c.lost = c.expected - c.received - c.unrecoverable;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(epoch: &str, lo: u64, hi: u64) -> HashMap<String, OffsetSet> {
        let mut set = OffsetSet::default();
        set.insert_range(lo, hi);
        HashMap::from([(epoch.to_owned(), set)])
    }

    #[test]
    fn a_clean_recovery_loses_nothing() {
        let mut l = Ledger::new(true);
        l.subscribed(Some(("e".into(), 100)));
        for o in 101..=110 {
            assert!(l.observe("e", o));
        }
        // Reconnected; the recovery replays 111..=120 after the reply.
        assert_eq!(l.position(), Some(&("e".to_owned(), 110)));
        for o in 111..=120 {
            assert!(l.observe("e", o));
        }
        assert!(!l.observe("e", 120));
        let c = l.settle(&acked("e", 101, 120), false);
        assert_eq!(
            c,
            Counts {
                expected: 20,
                received: 20,
                duplicates: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn gaps_are_lost_unless_the_client_was_told() {
        let mut l = Ledger::new(true);
        for o in 1..=5 {
            l.observe("e", o);
        }
        l.observe("e", 8); // 6 and 7 silently missing
        l.not_recovered(Some(("e".into(), 12))); // 9..=12 excused
        l.observe("e", 13);
        l.lost_track(); // resync: the gap up to the next message is excused
        l.observe("e", 16);
        let c = l.settle(&acked("e", 1, 18), false);
        assert_eq!(
            (c.expected, c.received, c.unrecoverable, c.lost),
            (18, 8, 6, 4),
            "lost: 6, 7 (silent) and 17, 18 (never arrived)"
        );
        // A churn client that left after 16 is not owed 17 and 18.
        let c = l.settle(&acked("e", 1, 18), true);
        assert_eq!((c.expected, c.lost), (16, 2));
    }

    #[test]
    fn windows_start_where_the_subscriber_came_in() {
        let mut l = Ledger::new(false);
        l.subscribed(Some(("e".into(), 40)));
        l.observe("e", 42);
        let c = l.settle(&acked("e", 1, 42), true);
        assert_eq!((c.expected, c.received, c.lost), (2, 1, 1));
        let mut l = Ledger::new(false);
        l.subscribed(None); // no history: from the first message
        l.observe("e", 42);
        l.observe("e", 43);
        let c = l.settle(&acked("e", 1, 45), true);
        assert_eq!((c.expected, c.received, c.lost), (2, 2, 0));
        // Came back without a position after a new epoch began.
        let mut l = Ledger::new(true);
        l.observe("a", 1);
        l.not_recovered(Some(("b".into(), 3)));
        l.observe("b", 4);
        let mut both = acked("a", 1, 2);
        both.extend(acked("b", 1, 4));
        let c = l.settle(&both, false);
        assert_eq!(
            (c.expected, c.received, c.unrecoverable, c.lost),
            (6, 2, 4, 0)
        );
    }
}
