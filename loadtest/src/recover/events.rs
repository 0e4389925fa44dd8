//! The recovery events of a whole run — reconnects, replies, replays and
//! the recovery and catch-up times — counted by all its subscribers at once
//! and turned into the summary's [`RecoveryFigures`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::ledger::Counts;
use crate::stats::{self, distribution, summarize};
use crate::summary::RecoveryFigures;

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
    pub(super) recovery: Mutex<Histogram<u64>>,
    pub(super) catch_up: Mutex<Histogram<u64>>,
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

pub(super) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn elapsed_us(since: Instant) -> u64 {
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
            publisher_reconnects: 0,
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
