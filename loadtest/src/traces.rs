//! `--trace-fraction`: from a load test to the traces of its slowest
//! deliveries.
//!
//! That share of publishes carries a fresh W3C `traceparent` with the
//! sampled flag, so a node that exports traces with a parent-based sampler
//! (its default) continues each of them: one trace per traced message, its
//! `publish` span and a `deliver` span per delivering node. Delivered
//! `message` frames do not carry the trace context, so the publisher also
//! puts the trace id in the message's `data` (`"tr"`, in place of 40 bytes
//! of padding): a subscriber learns it from the frame itself — no map from
//! messages to trace ids, and nothing at all to look up for an untraced
//! message or a run without tracing.
//!
//! Every live delivery of a traced message is offered to [`Traces`], which
//! keeps the N traces whose slowest delivery was slowest; the summary lists
//! them, so they can be opened in Jaeger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::summary::{SlowTrace, TraceFigures};

/// What `--trace-fraction`, `--slowest` and `--jaeger-url` ask for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceParams {
    /// Share of publishes, 0..=1, that carry a fresh sampled `traceparent`
    /// (0: none, and no tracing work at all).
    pub fraction: f64,
    /// How many of the slowest traced deliveries to list (one per trace).
    pub slowest: usize,
    /// Jaeger UI base URL: the report links trace ids to `URL/trace/<id>`.
    pub jaeger_url: Option<String>,
}

impl Default for TraceParams {
    fn default() -> Self {
        TraceParams {
            fraction: 0.0,
            slowest: 10,
            jaeger_url: None,
        }
    }
}

impl TraceParams {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.fraction),
            "--trace-fraction must be within 0..=1"
        );
        Ok(())
    }

    /// The run's trace state, if any publish is to be traced.
    pub(crate) fn start(&self) -> Option<Traces> {
        (self.fraction > 0.0).then(|| Traces {
            params: self.clone(),
            publishes: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            slowest: Mutex::new(Vec::new()),
            floor_us: AtomicU64::new(0),
        })
    }
}

/// `,"tr":"<32 hex>"`: what the trace id adds to a message's `data`.
pub const TRACE_FIELD_LEN: usize = 40;

/// A fresh random trace id (32 hex digits, not all zero) and the
/// `traceparent` of a sampled span in it.
pub fn traceparent(rng: &mut fastrand::Rng) -> (String, String) {
    let trace = rng.u128(1..);
    let span = rng.u64(1..);
    let id = format!("{trace:032x}");
    let header = format!("00-{id}-{span:016x}-01");
    (id, header)
}

/// One run's traced publishes and slowest traced deliveries.
pub(crate) struct Traces {
    params: TraceParams,
    publishes: AtomicU64,
    deliveries: AtomicU64,
    /// (latency µs, delivery), at most `params.slowest`, one per trace.
    slowest: Mutex<Vec<(u64, SlowTrace)>>,
    /// Once the list is full: its smallest latency (faster deliveries are
    /// turned away without taking the lock).
    floor_us: AtomicU64,
}

impl Traces {
    pub(crate) fn fraction(&self) -> f64 {
        self.params.fraction
    }

    /// A publish carrying a `traceparent` was sent.
    pub(crate) fn published(&self) {
        self.publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// A live delivery of traced message `trace_id`.
    pub(crate) fn offer(
        &self,
        trace_id: &str,
        channel: &str,
        offset: Option<u64>,
        latency_us: u64,
        node: &str,
    ) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let keep = self.params.slowest;
        if keep == 0 || latency_us < self.floor_us.load(Ordering::Relaxed) {
            return;
        }
        let entry = || SlowTrace {
            trace_id: trace_id.to_owned(),
            channel: channel.to_owned(),
            offset,
            latency_ms: latency_us as f64 / 1000.0,
            node: node.to_owned(),
        };
        let mut list = self.slowest.lock().unwrap();
        if let Some(seen) = list.iter_mut().find(|(_, e)| e.trace_id == trace_id) {
            if latency_us <= seen.0 {
                return;
            }
            *seen = (latency_us, entry());
        } else if list.len() < keep {
            list.push((latency_us, entry()));
        } else {
            let (i, fastest) = list
                .iter()
                .enumerate()
                .min_by_key(|(_, (us, _))| *us)
                .map(|(i, (us, _))| (i, *us))
                .expect("full list");
            if latency_us <= fastest {
                return;
            }
            list[i] = (latency_us, entry());
        }
        if list.len() == keep {
            let floor = list.iter().map(|(us, _)| *us).min().unwrap_or(0);
            self.floor_us.store(floor, Ordering::Relaxed);
        }
    }

    /// The summary's `traces` block, slowest first.
    pub(crate) fn figures(&self) -> TraceFigures {
        let mut list = self.slowest.lock().unwrap().clone();
        list.sort_by_key(|e| std::cmp::Reverse(e.0));
        TraceFigures {
            fraction: self.params.fraction,
            traced_publishes: self.publishes.load(Ordering::Relaxed),
            traced_deliveries: self.deliveries.load(Ordering::Relaxed),
            slowest: list.into_iter().map(|(_, e)| e).collect(),
            jaeger_url: self.params.jaeger_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_fresh_sampled_w3c_headers() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (id, header) = traceparent(&mut rng);
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let parts: Vec<_> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", id.as_str(), "01"));
        assert_eq!(parts[2].len(), 16);
        assert_ne!(traceparent(&mut rng).0, id);
        // The field the trace id adds to `data`.
        assert_eq!(format!(r#","tr":"{id}""#).len(), TRACE_FIELD_LEN);
    }

    #[test]
    fn keeps_the_slowest_trace_per_id_and_the_n_slowest_traces() {
        assert!(TraceParams::default().start().is_none(), "fraction 0");
        let params = TraceParams {
            fraction: 1.0,
            slowest: 3,
            jaeger_url: None,
        };
        let t = params.start().unwrap();
        for (id, us) in [("a", 5), ("b", 1), ("c", 9), ("a", 7), ("d", 2), ("e", 1)] {
            t.offer(id, "lt0", Some(us), us * 1000, "n1");
        }
        // A slower delivery of a listed trace replaces its entry; "d"
        // pushed "b" out, and a faster one than the list's is turned away.
        t.offer("c", "lt1", Some(1), 20_000, "n2");
        t.offer("b", "lt0", Some(0), 1, "n1");
        let f = t.figures();
        assert_eq!(f.traced_deliveries, 8);
        let got: Vec<_> = f
            .slowest
            .iter()
            .map(|e| (e.trace_id.as_str(), e.latency_ms, e.node.as_str()))
            .collect();
        assert_eq!(got, [("c", 20.0, "n2"), ("a", 7.0, "n1"), ("d", 2.0, "n1")]);
        assert!(params.check().is_ok());
        let bad = TraceParams {
            fraction: 1.5,
            ..params
        };
        assert!(bad.check().is_err());
    }
}
