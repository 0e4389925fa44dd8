//! Accounting shared by the scenarios: latency histograms measured from the
//! *intended* send time (so a stalled sender cannot hide its own delay —
//! coordinated omission), and per-sender sequence tracking that tells
//! received, duplicate and missing messages apart.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, 1 µs .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Record one latency in microseconds (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.max(1));
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    LatencySummary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

/// The percentile curve for the report: (percentile, latency ms) points,
/// denser towards the tail.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut q = 0.0_f64;
    // 0, 50, 75, 87.5, ... halving the remaining distance each step.
    for _ in 0..24 {
        points.push((q * 100.0, ms(h.value_at_quantile(q))));
        q += (1.0 - q) / 2.0;
    }
    points.push((100.0, ms(h.max())));
    points
}

/// Per-receiver view of one sender's sequence numbers (0, 1, 2, ...).
#[derive(Debug, Default, Clone)]
pub struct SequenceTracker {
    /// sender -> next expected sequence number
    next: HashMap<u32, u64>,
    pub received: u64,
    pub duplicates: u64,
    /// Sequence numbers skipped over (a later one arrived first).
    pub gaps: u64,
}

impl SequenceTracker {
    /// Account for message `seq` from `sender`. Returns false for a
    /// duplicate (or a message older than one already seen).
    pub fn observe(&mut self, sender: u32, seq: u64) -> bool {
        let next = self.next.entry(sender).or_insert(0);
        if seq < *next {
            self.duplicates += 1;
            return false;
        }
        self.gaps += seq - *next;
        *next = seq + 1;
        self.received += 1;
        true
    }

    pub fn merge(&mut self, other: &SequenceTracker) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.gaps += other.gaps;
    }
}

/// Delivery totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Deliveries that should have happened: accepted publishes × subscribers.
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    pub duplicates: u64,
    /// expected − received (never negative).
    pub lost: u64,
}

impl Delivery {
    pub fn new(expected: u64, received: u64, duplicates: u64) -> Self {
        Delivery {
            expected,
            received,
            duplicates,
            lost: expected.saturating_sub(received),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_tracking_tells_duplicates_and_gaps_apart() {
        let mut t = SequenceTracker::default();
        for seq in [0, 1, 2] {
            assert!(t.observe(7, seq));
        }
        assert!(!t.observe(7, 1), "older message is a duplicate");
        assert!(t.observe(7, 5), "3 and 4 skipped");
        assert!(t.observe(9, 0), "senders are independent");
        assert_eq!((t.received, t.duplicates, t.gaps), (5, 1, 2));
        let mut total = SequenceTracker::default();
        total.merge(&t);
        total.merge(&t);
        assert_eq!((total.received, total.duplicates, total.gaps), (10, 2, 4));
    }

    #[test]
    fn loss_is_expected_minus_distinct_received() {
        assert_eq!(Delivery::new(100, 97, 3).lost, 3);
        assert_eq!(Delivery::new(100, 100, 0).lost, 0);
        assert_eq!(Delivery::new(5, 6, 0).lost, 0, "never negative");
    }

    #[test]
    fn histogram_percentiles_and_distribution() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            record(&mut h, ms * 1000);
        }
        record(&mut h, 0); // clamped to 1 µs, not an error
        let s = summarize(&h);
        assert_eq!(s.count, 1001);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.5, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        let d = distribution(&h);
        assert_eq!(d.first().unwrap().0, 0.0);
        assert_eq!(d.last().unwrap().0, 100.0);
        assert!(
            d.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{d:?}"
        );
        assert!(distribution(&new_histogram()).is_empty());
    }
}
