//! The state one fanout run shares between its publishers, subscribers and
//! drain (and that churn's `--recover` publishers use too): counters,
//! latencies, acknowledged offsets and what recovering subscribers need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::client::Sources;
use crate::env::{micros_since, Counters, Frame, Latencies, Stamp};
use crate::recover::{Acked, RecoverStats, Seen};
use crate::traces::Traces;

/// State shared by the publishers and subscribers of a run (the churn
/// scenario's `--recover` publishers use it too).
pub(crate) struct Shared {
    pub(super) t0: Instant,
    pub(super) latencies: Arc<Latencies>,
    pub(super) counters: Arc<Counters>,
    /// Channel k is `{prefix}{k}`.
    prefix: &'static str,
    /// Accepted publishes per channel.
    pub(super) accepted: Vec<AtomicU64>,
    pub(crate) publish_errors: AtomicU64,
    pub(super) last_delivery_us: AtomicU64,
    pub(crate) errors: Mutex<Vec<String>>,
    /// The acknowledged offsets (`--recover`).
    pub(crate) acked: Option<Acked>,
    pub(super) recover: Option<Recovering>,
    /// `--trace-fraction` above 0: traced publishes, slowest traced deliveries.
    pub(crate) traces: Option<Traces>,
    /// `--recover`: where publishers connect again when a connection ends.
    pub(crate) redial: Option<Redial>,
    /// Publisher connections made again after one ended.
    pub(crate) publisher_reconnects: AtomicU64,
}

/// Where a publisher reconnects (the run's nodes, in turn) and as whom.
pub(crate) struct Redial {
    pub(crate) nodes: Vec<String>,
    pub(crate) sources: Arc<Sources>,
    /// Publisher j is user `{user}{j}`.
    pub(crate) user: &'static str,
}

/// What recovering subscribers share.
pub(super) struct Recovering {
    pub(super) stats: RecoverStats,
    pub(super) nodes: Vec<String>,
    pub(super) sources: Arc<Sources>,
    /// Per subscriber: the offset it has got to (u64::MAX: not subscribed).
    pub(super) last_seen: Vec<AtomicU64>,
    /// Per subscriber: drop your connection now.
    pub(super) drops: Vec<Notify>,
    /// Time away after a drop.
    pub(super) away: Duration,
}

impl Shared {
    pub(crate) fn new(t0: Instant, channels: usize, prefix: &'static str, acked: bool) -> Shared {
        Shared {
            t0,
            latencies: Arc::new(Latencies::default()),
            counters: Arc::new(Counters::default()),
            prefix,
            accepted: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            publish_errors: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            acked: acked.then(|| Acked::new(channels)),
            recover: None,
            traces: None,
            redial: None,
            publisher_reconnects: AtomicU64::new(0),
        }
    }

    pub(crate) fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(e);
        }
    }

    /// The instant latencies are measured from.
    pub(crate) fn t0(&self) -> Instant {
        self.t0
    }

    pub(crate) fn channel(&self, k: usize) -> String {
        format!("{}{k}", self.prefix)
    }

    /// A live delivery at `now` (µs since t0) on `node`: if its message
    /// was traced, a candidate for the slowest traces. Nothing to do for
    /// an untraced message, and nothing at all without `--trace-fraction`.
    pub(crate) fn traced(&self, frame: &Frame, now: u64, node: &str) {
        if let (
            Some(traces),
            Some(Stamp {
                t, tr: Some(id), ..
            }),
        ) = (&self.traces, &frame.data)
        {
            let channel = frame.channel.unwrap_or_default();
            traces.offer(id, channel, frame.offset, now.saturating_sub(*t), node);
        }
    }

    /// A recovering subscriber, connected to `node`, got a new message
    /// (live or replayed).
    pub(super) fn on_new(&self, i: usize, node: &str, frame: &Frame, seen: &Seen) {
        let (Seen::Live(offset) | Seen::Replayed(offset)) = *seen else {
            return;
        };
        let now = micros_since(self.t0);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        self.last_delivery_us.fetch_max(now, Ordering::Relaxed);
        if let Some(rec) = &self.recover {
            rec.last_seen[i].store(offset, Ordering::Relaxed);
        }
        // Replayed messages were late by design: their latency is the
        // recovery's, measured separately.
        if let (Seen::Live(_), Some(stamp)) = (seen, &frame.data) {
            self.latencies.record(i, now.saturating_sub(stamp.t));
            self.traced(frame, now, node);
        }
    }
}
