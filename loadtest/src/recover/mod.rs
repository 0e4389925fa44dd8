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
//!
//! # Layout
//! * `offsets` — offset sets, and the offsets the broker acknowledged.
//! * `ledger` — one subscriber's account of one channel, settled at the end.
//! * `events` — the run's recovery counters and histograms.
//! * `tracker` — frames of one channel read into its ledger.
//! * `commands` — `subscribe {since}`, receive, `unsubscribe` on a connection.

mod commands;
mod events;
mod ledger;
mod offsets;
mod tracker;

pub use commands::{receive, subscribe, unsubscribe};
pub use events::RecoverStats;
pub use ledger::{Counts, Ledger, Position};
pub use offsets::{Acked, OffsetSet, OPEN};
pub use tracker::{Seen, Tracker};
