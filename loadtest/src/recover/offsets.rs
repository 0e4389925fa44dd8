//! Sets of offsets kept as ranges, and the ground truth they are measured
//! against: the offsets the broker acknowledged to the publishers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
}
