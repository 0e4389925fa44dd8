//! Holding receivers' logs against the ledger.

use std::collections::HashMap;
use std::fmt::Write;

use super::{Acked, Event, ReceiverLog};

/// How strict [`verify`] is about resync notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// Nothing may be missing, and no notice may come (Redis kept every
    /// channel's state, so every gap could be repaired).
    Never,
    /// A missing message is allowed only where a notice stands in the
    /// log between the messages around it.
    Covers,
}

/// Check every receiver's log against the ledger; panic with a report of
/// every problem found (missing offsets, duplicates, disorder, wrong data).
pub fn verify(ledger: &[Acked], logs: &[ReceiverLog], resync: Resync) {
    assert!(!ledger.is_empty(), "nothing was acknowledged");
    let mut report = String::new();
    for log in logs {
        if let Err(problems) = verify_one(ledger, log, resync) {
            let _ = writeln!(report, "{}: {problems}", log.name);
        }
    }
    assert!(
        report.is_empty(),
        "{} acknowledged (offsets {}):\n{report}",
        ledger.len(),
        summary(ledger)
    );
}

fn verify_one(ledger: &[Acked], log: &ReceiverLog, resync: Resync) -> Result<(), String> {
    // Epochs in the order the publisher met them.
    let mut epochs: Vec<&str> = Vec::new();
    for a in ledger {
        if !epochs.contains(&a.epoch.as_str()) {
            epochs.push(&a.epoch);
        }
    }
    let rank = |epoch: &str| epochs.iter().position(|e| *e == epoch);
    let acked: HashMap<(&str, u64), u64> = ledger
        .iter()
        .map(|a| ((a.epoch.as_str(), a.offset), a.seq))
        .collect();

    let mut problems = Vec::new();
    if !log.finished {
        problems.push(format!(
            "never got the last acknowledged message; stopped at {:?}",
            log.position
        ));
    }
    // (log index, epoch rank, offset) of every message.
    let mut got: Vec<(usize, usize, u64)> = Vec::new();
    let mut seen: HashMap<(usize, u64), usize> = HashMap::new();
    let (mut duplicates, mut disorder, mut wrong, mut extra) = (vec![], vec![], vec![], 0);
    // Where the first duplicate or disorder is in the log.
    let mut first_bad: Option<usize> = None;
    for (i, event) in log.events.iter().enumerate() {
        let Event::Message { offset, epoch, seq } = event else {
            continue;
        };
        let Some(r) = rank(epoch) else {
            problems.push(format!("offset {offset} of unknown epoch {epoch}"));
            continue;
        };
        match acked.get(&(epoch.as_str(), *offset)) {
            Some(s) if s != seq => wrong.push(format!("offset {offset}: seq {seq}, acked {s}")),
            Some(_) => {}
            None => extra += 1,
        }
        *seen.entry((r, *offset)).or_default() += 1;
        if seen[&(r, *offset)] == 2 {
            duplicates.push(*offset);
            first_bad.get_or_insert(i);
        }
        if let Some(&(_, pr, po)) = got.last() {
            if (r, *offset) <= (pr, po) {
                disorder.push(format!("{po} then {offset}"));
                first_bad.get_or_insert(i);
            }
        }
        got.push((i, r, *offset));
    }
    let notices: Vec<usize> = log
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Notice(_)))
        .map(|(i, _)| i)
        .collect();
    let mut missing = Vec::new();
    let mut covered = Vec::new();
    for a in ledger {
        let r = rank(&a.epoch).expect("ledger epoch");
        if seen.contains_key(&(r, a.offset)) {
            continue;
        }
        // The log positions of the messages just before and after it.
        let before = got
            .iter()
            .filter(|(_, gr, go)| (*gr, *go) < (r, a.offset))
            .map(|(i, _, _)| *i)
            .max();
        let after = got
            .iter()
            .filter(|(_, gr, go)| (*gr, *go) > (r, a.offset))
            .map(|(i, _, _)| *i)
            .min();
        let told = notices
            .iter()
            .any(|n| before.map_or(true, |b| *n > b) && after.map_or(true, |f| *n < f));
        if resync == Resync::Covers && told {
            covered.push(a.offset);
        } else {
            missing.push(a.offset);
        }
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} acknowledged messages missing without a resync notice: offsets {}",
            missing.len(),
            ranges(&missing)
        ));
    }
    if !duplicates.is_empty() {
        problems.push(format!("duplicated offsets {}", ranges(&duplicates)));
    }
    if !disorder.is_empty() {
        disorder.truncate(10);
        problems.push(format!("out of order: {}", disorder.join(", ")));
    }
    if !wrong.is_empty() {
        wrong.truncate(10);
        problems.push(format!("wrong data: {}", wrong.join(", ")));
    }
    if resync == Resync::Never && !notices.is_empty() {
        problems.push(format!("told to resync: {:?}", log.notices()));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut out = format!(
        "{}\n    ({} messages received, {extra} not in the ledger, {} missing ones \
         covered by a notice, {} reconnects, notices {:?})",
        problems.join("; "),
        got.len(),
        covered.len(),
        log.reconnects,
        log.notices()
    );
    if let Some(bad) = first_bad {
        // Where the first duplicate / disorder happened, and how it came.
        let from = log.events[..bad]
            .iter()
            .rposition(|e| matches!(e, Event::Resubscribed { .. }))
            .map_or(bad.saturating_sub(5), |r| r.min(bad.saturating_sub(5)));
        let _ = write!(out, "\n    around event #{bad}:");
        for (i, e) in log.events.iter().enumerate().take(bad + 4).skip(from) {
            let _ = write!(out, "\n      #{i} {e:?}");
        }
    }
    Err(out)
}

/// Offsets as `1-5, 7, 9-12`.
fn ranges(offsets: &[u64]) -> String {
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        out.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    out.join(", ")
}

/// The ledger's offsets per epoch, as ranges.
fn summary(ledger: &[Acked]) -> String {
    let mut per_epoch: Vec<(&str, Vec<u64>)> = Vec::new();
    for a in ledger {
        match per_epoch.iter_mut().find(|(e, _)| *e == a.epoch) {
            Some((_, offsets)) => offsets.push(a.offset),
            None => per_epoch.push((&a.epoch, vec![a.offset])),
        }
    }
    per_epoch
        .iter()
        .map(|(e, offsets)| format!("epoch {e}: {}", ranges(offsets)))
        .collect::<Vec<_>>()
        .join("; ")
}
