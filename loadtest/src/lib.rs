//! Load-test harness for Switchboard.
//!
//! Scenarios ([`fanout`], [`connect`], [`direct`], [`churn`]) take the
//! nodes' WebSocket URLs, so they run against a local cluster (started by
//! [`cluster`]) or a Kubernetes Service alike. Each produces a
//! [`summary::Summary`], written as JSON and as a self-contained HTML
//! report ([`report`]).
//!
//! # Layout
//! * [`client`] — WebSocket connections with chosen loopback source addresses.
//! * [`env`](mod@env) — shared set-up: connecting many clients, per-second sampling.
//! * [`stats`] — HDR latency histograms, sequence and loss accounting.
//! * [`recover`] — `--recover`: positions, `subscribe {since}`, loss against acknowledged offsets.
//! * [`sampler`] — node RSS and CPU, Redis CPU from /proc, `/metrics` scraping.
//! * [`cluster`] — redis-server (or a Redis Cluster) + N switchboard processes on free ports.
//! * [`sink`] — a counting OTLP/HTTP endpoint for tracing-overhead runs.
//! * [`traces`] — `--trace-fraction`: traced publishes, the slowest traced deliveries.

pub mod churn;
pub mod client;
pub mod cluster;
pub mod connect;
pub mod direct;
pub mod env;
pub mod fanout;
pub mod recover;
pub mod report;
pub mod sampler;
pub mod sink;
pub mod stats;
pub mod summary;
pub mod traces;

use std::path::Path;

/// Write `summary.json` and `report.html` into `dir`.
pub fn write_outputs(dir: &Path, summary: &summary::Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary)?,
    )?;
    std::fs::write(dir.join("report.html"), report::render_html(summary))?;
    Ok(())
}

/// One line per headline figure, for the terminal.
pub fn headline(s: &summary::Summary) -> String {
    let mut out = format!("scenario {} ({:.1}s)\n", s.scenario, s.duration_s);
    if s.published > 0 || s.publish_errors > 0 {
        out.push_str(&format!(
            "  sent {} (errors {})\n",
            s.published, s.publish_errors
        ));
    }
    if let Some(d) = &s.delivery {
        out.push_str(&format!(
            "  deliveries expected {} received {} lost {} duplicates {}",
            d.expected, d.received, d.lost, d.duplicates
        ));
        // Churn's rate is of cycles (the connections line has it).
        if s.scenario != "churn" {
            out.push_str(&format!(" ({:.0}/s)", s.deliveries_per_s));
        }
        out.push('\n');
    }
    if let Some(l) = &s.latency {
        out.push_str(&format!(
            "  latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        ));
    }
    if let Some(r) = &s.recovery {
        out.push_str(&format!(
            "  recovery: {} reconnects ({} dropped, {} ended, {} failed attempts), \
             {} with since: recovered {}, not recovered {}, resyncs {}, without position {}; \
             {} replayed, {} unrecoverable\n",
            r.reconnects,
            r.dropped,
            r.connection_ends,
            r.reconnect_errors,
            r.subscribes_with_since,
            r.recovered,
            r.not_recovered,
            r.resyncs,
            r.without_position,
            r.replayed,
            r.unrecoverable
        ));
        if r.publisher_reconnects > 0 {
            out.push_str(&format!(
                "  publishers reconnected {} times\n",
                r.publisher_reconnects
            ));
        }
        for (what, l) in [("recovery", &r.recovery), ("caught up", &r.catch_up)] {
            if let Some(l) = l {
                out.push_str(&format!(
                    "  {what} ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ({} samples)\n",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.count
                ));
            }
        }
    }
    if let Some(t) = &s.traces {
        out.push_str(&format!(
            "  traces: {} publishes traced (fraction {}), {} traced deliveries; slowest:\n",
            t.traced_publishes, t.fraction, t.traced_deliveries
        ));
        for e in &t.slowest {
            let at = e.offset.map_or(String::new(), |o| format!("#{o}"));
            out.push_str(&format!(
                "    trace {} {:.2} ms ({}{at} on {})",
                e.trace_id, e.latency_ms, e.channel, e.node
            ));
            if let Some(url) = &t.jaeger_url {
                out.push_str(&format!(" {}", report::trace_link(url, &e.trace_id)));
            }
            out.push('\n');
        }
    }
    if let Some(c) = &s.connect {
        out.push_str(&format!(
            "  connections {}/{} ({} errors) at {:.0}/s",
            c.established, c.attempted, c.errors, c.rate_per_s
        ));
        if c.retried > 0 {
            out.push_str(&format!(", {} refused upgrades retried", c.retried));
        }
        if let Some(m) = c.memory_per_connection_bytes {
            out.push_str(&format!(", node memory {:.0} B/connection", m));
        }
        out.push('\n');
    }
    if !s.nodes.is_empty() {
        let cpu: f64 = s.nodes.iter().map(|n| n.cpu_s).sum();
        out.push_str(&format!("  node CPU {cpu:.2}s"));
        if let Some(d) = s.delivery.as_ref().filter(|d| d.received > 0) {
            out.push_str(&format!(
                " ({:.2} µs per delivery)",
                cpu * 1e6 / d.received as f64
            ));
        }
        out.push('\n');
    }
    if let Some(r) = &s.redis {
        out.push_str(&format!("  redis CPU {:.2}s", r.cpu_s));
        if r.processes.len() > 1 {
            out.push_str(&format!(" over {} processes", r.processes.len()));
        }
        if let Some(d) = s.delivery.as_ref().filter(|d| d.received > 0) {
            out.push_str(&format!(
                " ({:.2} µs per delivery)",
                r.cpu_s * 1e6 / d.received as f64
            ));
        }
        out.push('\n');
    }
    for e in s.errors.iter().take(5) {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}
