//! `--recover` (fanout and churn): subscribers that remember their place in
//! a channel — the (offset, epoch) of the last message they got — and come
//! back after a connection ends with `subscribe {since}`, and an exact
//! account of what that gave them.
//!
//! The ground truth is what the broker acknowledged: every `publish` reply
//! carries the message's offset and epoch ([`Acked`]). Each subscriber
//! keeps a [`Ledger`] of the offsets it received and of the ranges it was
//! told it cannot have (`recovered: false`, a `resync` frame, or coming
//! back without any position); at the end, each acknowledged offset in the
//! subscriber's window is received, unrecoverable (excused) or lost.
//!
//! Offsets are kept as sets of ranges ([`OffsetSet`]): deliveries of a
//! channel arrive in offset order, so a subscriber's set is one range or a
//! few, however many messages it got.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::env::Frame;
use crate::stats::{self, distribution, summarize};
use crate::summary::RecoveryFigures;

/// "Up to the end": the upper bound of open ranges (halved so that lengths
/// and `+ 1` never overflow).
pub const OPEN: u64 = u64::MAX / 2;

/// A set of offsets as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetSet {
    ranges: Vec<(u64, u64)>,
}

impl OffsetSet {
    /// Add one offset; false if it was there already.
    pub fn insert(&mut self, o: u64) -> bool {
        match self.ranges.last_mut() {
            None => self.ranges.push((o, o)),
            Some(last) if o == last.1 + 1 => last.1 = o,
            Some(last) if o > last.1 + 1 => self.ranges.push((o, o)),
            _ => return self.insert_range(o, o) > 0,
        }
        true
    }

    /// Add `lo..=hi`; returns how many offsets were new.
    pub fn insert_range(&mut self, lo: u64, hi: u64) -> u64 {
        let hi = hi.min(OPEN);
        if lo > hi {
            return 0;
        }
        let before = self.len();
        let i = self.ranges.partition_point(|r| r.1 + 1 < lo);
        let (mut a, mut b, mut j) = (lo, hi, i);
        while j < self.ranges.len() && self.ranges[j].0 <= hi + 1 {
            a = a.min(self.ranges[j].0);
            b = b.max(self.ranges[j].1);
            j += 1;
        }
        self.ranges.splice(i..j, [(a, b)]);
        self.len() - before
    }

    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .fold(0u64, |n, (a, b)| n.saturating_add(b - a + 1))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, o: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < o);
        self.ranges.get(i).is_some_and(|r| r.0 <= o)
    }

    /// The offsets in both sets.
    pub fn intersect(&self, other: &OffsetSet) -> OffsetSet {
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
            if lo <= hi {
                out.push((lo, hi));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        OffsetSet { ranges: out }
    }

    /// The offsets in `lo..=hi`.
    pub fn within(&self, lo: u64, hi: u64) -> OffsetSet {
        let mut bounds = OffsetSet::default();
        bounds.insert_range(lo, hi);
        self.intersect(&bounds)
    }
}

/// The offsets the broker acknowledged, per channel and epoch.
pub struct Acked {
    channels: Vec<Mutex<HashMap<String, OffsetSet>>>,
    top: Vec<AtomicU64>,
}

impl Acked {
    pub fn new(channels: usize) -> Acked {
        Acked {
            channels: (0..channels).map(|_| Mutex::default()).collect(),
            top: (0..channels).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record(&self, channel: usize, epoch: &str, offset: u64) {
        let mut epochs = self.channels[channel].lock().unwrap();
        match epochs.get_mut(epoch) {
            Some(set) => set.insert(offset),
            None => epochs.entry(epoch.to_owned()).or_default().insert(offset),
        };
        self.top[channel].fetch_max(offset, Ordering::Relaxed);
    }

    /// The highest acknowledged offset of a channel (any epoch).
    pub fn top(&self, channel: usize) -> u64 {
        self.top[channel].load(Ordering::Relaxed)
    }

    pub fn of(&self, channel: usize) -> HashMap<String, OffsetSet> {
        self.channels[channel].lock().unwrap().clone()
    }

    /// Acknowledged publishes over all channels.
    pub fn total(&self) -> u64 {
        self.channels
            .iter()
            .flat_map(|c| {
                c.lock()
                    .unwrap()
                    .values()
                    .map(OffsetSet::len)
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

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

/// Recovery events of a run, shared by its subscribers.
pub struct RecoverStats {
    pub reconnects: AtomicU64,
    pub dropped: AtomicU64,
    pub connection_ends: AtomicU64,
    pub reconnect_errors: AtomicU64,
    pub with_since: AtomicU64,
    pub recovered: AtomicU64,
    pub not_recovered: AtomicU64,
    pub resyncs: AtomicU64,
    pub without_position: AtomicU64,
    pub replayed: AtomicU64,
    recovery: Mutex<Histogram<u64>>,
    catch_up: Mutex<Histogram<u64>>,
}

impl Default for RecoverStats {
    fn default() -> Self {
        RecoverStats {
            reconnects: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connection_ends: AtomicU64::new(0),
            reconnect_errors: AtomicU64::new(0),
            with_since: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            not_recovered: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            without_position: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            recovery: Mutex::new(stats::new_histogram()),
            catch_up: Mutex::new(stats::new_histogram()),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn elapsed_us(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

impl RecoverStats {
    pub fn figures(&self, counts: &Counts) -> RecoveryFigures {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let recovery = self.recovery.lock().unwrap();
        let catch_up = self.catch_up.lock().unwrap();
        RecoveryFigures {
            reconnects: get(&self.reconnects),
            dropped: get(&self.dropped),
            connection_ends: get(&self.connection_ends),
            reconnect_errors: get(&self.reconnect_errors),
            subscribes_with_since: get(&self.with_since),
            recovered: get(&self.recovered),
            not_recovered: get(&self.not_recovered),
            resyncs: get(&self.resyncs),
            without_position: get(&self.without_position),
            replayed: get(&self.replayed),
            unrecoverable: counts.unrecoverable,
            recovery: (!recovery.is_empty()).then(|| summarize(&recovery)),
            recovery_distribution: distribution(&recovery),
            catch_up: (!catch_up.is_empty()).then(|| summarize(&catch_up)),
        }
    }
}

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

    fn on_subscribed(
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

/// Subscribe `tracker`'s channel — with `since` when it has a position —
/// and read frames up to the reply. `reconnect` is when the connection
/// this replaces was lost (None for a first subscription). Messages that
/// arrive ahead of the reply go through `tracker` and `on_new` as usual.
pub async fn subscribe(
    ws: &mut Ws,
    id: u64,
    tracker: &mut Tracker,
    reconnect: Option<Instant>,
    stats: &RecoverStats,
    on_new: impl FnMut(&Frame, &Seen),
) -> anyhow::Result<()> {
    let since = tracker.ledger.position().cloned();
    let mut cmd = serde_json::json!({"type": "subscribe", "id": id, "channel": tracker.channel});
    match &since {
        Some((epoch, offset)) => {
            cmd["since"] = serde_json::json!({"offset": offset, "epoch": epoch});
            inc(&stats.with_since);
        }
        None if reconnect.is_some() => {
            inc(&stats.without_position);
            tracker.ledger.lost_track();
        }
        None => {}
    }
    if reconnect.is_some() {
        inc(&stats.reconnects);
    }
    let on_reply = |tracker: &mut Tracker, reply: &Frame| {
        tracker.on_subscribed(reply, since, reconnect, stats)
    };
    request(ws, id, cmd, tracker, stats, on_new, on_reply).await
}

/// Send `cmd` (a `subscribe` or `unsubscribe` of `tracker`'s channel) and
/// read frames up to its reply, which goes to `on_reply`; a refusal is an
/// error. Messages that arrive ahead of the reply go through `tracker` and
/// `on_new` as usual.
async fn request(
    ws: &mut Ws,
    id: u64,
    cmd: serde_json::Value,
    tracker: &mut Tracker,
    stats: &RecoverStats,
    mut on_new: impl FnMut(&Frame, &Seen),
    on_reply: impl FnOnce(&mut Tracker, &Frame),
) -> anyhow::Result<()> {
    ws.send(Message::text(cmd.to_string())).await?;
    loop {
        let text = next_text(ws).await?;
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        if frame.kind == "reply" && frame.id == Some(id) {
            if frame.ok != Some(true) {
                let kind = cmd["type"].as_str().unwrap_or_default();
                bail!("{kind} {}: {}", tracker.channel, text.as_str());
            }
            on_reply(tracker, &frame);
            return Ok(());
        }
        let seen = tracker.on_frame(&frame, stats);
        on_new(&frame, &seen);
    }
}

/// The next text frame, parsed; pings are answered while reading.
async fn next_text(ws: &mut Ws) -> anyhow::Result<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(frame))) => bail!("closed by server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Read `tracker`'s channel for at least `hold`, and on until a recovery's
/// replay is complete (at most `cap`).
pub async fn receive(
    ws: &mut Ws,
    tracker: &mut Tracker,
    stats: &RecoverStats,
    hold: std::time::Duration,
    cap: std::time::Duration,
) -> anyhow::Result<()> {
    let now = Instant::now();
    let (until, cap) = (now + hold, now + cap.max(hold));
    loop {
        let deadline = if tracker.replaying() { cap } else { until };
        let Ok(text) = tokio::time::timeout_at(deadline.into(), next_text(ws)).await else {
            if Instant::now() >= deadline {
                return Ok(());
            }
            continue;
        };
        if let Ok(frame) = serde_json::from_str::<Frame>(text?.as_str()) {
            tracker.on_frame(&frame, stats);
        }
    }
}

/// Unsubscribe `tracker`'s channel, taking in the messages that arrive
/// before the reply.
pub async fn unsubscribe(
    ws: &mut Ws,
    id: u64,
    tracker: &mut Tracker,
    stats: &RecoverStats,
) -> anyhow::Result<()> {
    let cmd = serde_json::json!({"type": "unsubscribe", "id": id, "channel": tracker.channel});
    request(ws, id, cmd, tracker, stats, |_, _| {}, |_, _| {}).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> OffsetSet {
        let mut s = OffsetSet::default();
        for &(a, b) in ranges {
            s.insert_range(a, b);
        }
        s
    }

    #[test]
    fn offset_sets_merge_and_intersect() {
        let mut s = OffsetSet::default();
        for o in [1, 2, 3, 7, 5, 6, 4] {
            assert!(s.insert(o));
        }
        assert!(!s.insert(5));
        assert_eq!(s, set(&[(1, 7)]));
        assert_eq!(s.insert_range(5, 10), 3);
        assert_eq!(s.insert_range(20, 22), 3);
        assert_eq!(s.insert_range(12, 12), 1);
        assert_eq!(s.ranges, [(1, 10), (12, 12), (20, 22)]);
        assert_eq!(s.insert_range(11, 19), 8);
        assert_eq!(s.ranges, [(1, 22)]);
        assert!(s.contains(22) && !s.contains(23) && !s.contains(0));
        let a = set(&[(1, 10), (20, 30)]);
        let b = set(&[(5, 25)]);
        assert_eq!(a.intersect(&b), set(&[(5, 10), (20, 25)]));
        assert_eq!(a.within(8, 21).len(), 5);
        assert_eq!(set(&[(0, OPEN)]).len(), OPEN + 1);
    }

    fn acked(epoch: &str, lo: u64, hi: u64) -> HashMap<String, OffsetSet> {
        HashMap::from([(epoch.to_owned(), set(&[(lo, hi)]))])
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
