//! Self-contained HTML report for one run.
//!
//! The report is a single file with inline CSS and inline SVG charts: no
//! scripts, no CDN, no web fonts. Load tests run on CI runners and in
//! clusters without outbound network access, and the report is archived
//! next to `summary.json` to be opened long afterwards, so it must render
//! offline and must not depend on anything hosted elsewhere that may move,
//! change or vanish.
//!
//! This file lays out the document (headline table, sections, raw
//! summary); the SVG charts are drawn in `chart`, the slowest traces'
//! table in `traces`.

mod chart;
mod traces;

use std::fmt::Write as _;

use crate::summary::{Sample, Summary};
use chart::{latency_chart, time_chart, Series};
pub use traces::trace_link;

const CSS: &str = concat!(
    "body{font-family:system-ui,sans-serif;max-width:800px;margin:2em auto;padding:0 1em}",
    "pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;word-break:break-all}",
    "table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:.2em .8em}",
    "th{text-align:left;font-weight:normal;color:#555}td{text-align:right;font-family:monospace}",
    ".note{color:#777;font-style:italic}svg{max-width:100%;height:auto}",
    "svg text{font-size:11px;fill:#333}svg .title{font-size:13px;font-weight:bold}",
    "svg .grid{stroke:#e6e6e6}svg .axis{stroke:#444}svg polyline{stroke-width:1.6}",
);

/// Render the report as a complete HTML document.
pub fn render_html(summary: &Summary) -> String {
    let s = summary;
    let title = esc(&format!("Switchboard load test: {}", s.scenario));
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{CSS}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let (cmd, date) = (esc(&s.command), utc_date(s.started_at_ms));
    let (ms, dur) = (s.started_at_ms, s.duration_s);
    h += &format!(
        "<pre>{cmd}</pre>\n<p>Started {date} (unix ms {ms}); measured phase {dur:.1} s.</p>\n"
    );
    h += "<h2>Headline figures</h2>\n";
    h += &table(&headline_rows(s));
    if !s.errors.is_empty() {
        let _ = write!(h, "<h3>Errors ({})</h3>\n<ul>", s.errors.len());
        for e in &s.errors {
            let _ = write!(h, "<li>{}</li>", esc(e));
        }
        h += "</ul>\n";
    }

    h += "<h2>Latency distribution</h2>\n";
    h += &latency_chart("Latency by percentile", &s.latency_distribution);

    if let Some(r) = &s.recovery {
        h += "<h2>Recovery</h2>\n";
        h += "<p class=\"note\">Lost messages exclude the unrecoverable ones: those the \
              client was told it missed (<code>recovered: false</code>, <code>resync</code>, \
              no position). Recovery time runs from the start of the reconnect to the \
              <code>subscribe</code> reply with <code>recovered: true</code>; caught up, to \
              the last replayed message.</p>\n";
        h += &latency_chart("Recovery time by percentile", &r.recovery_distribution);
    }

    if let Some(t) = &s.traces {
        h += &traces::section(t);
    }

    h += "<h2>Over time</h2>\n";
    let per_second = |f: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        s.samples.iter().map(|x| (x.t, f(x))).collect()
    };
    let sent = per_second(|x| x.sent as f64);
    let delivered = per_second(|x| x.delivered as f64);
    let throughput = [("sent/s".into(), sent), ("delivered/s".into(), delivered)];
    h += &time_chart("Throughput", "per second", &throughput);
    // p99_ms is 0 for seconds without deliveries; plotting those as 0 ms
    // would read as "perfect latency", so leave them out.
    let p99 = s.samples.iter().filter(|x| x.p99_ms > 0.0);
    let p99 = [("p99".into(), p99.map(|x| (x.t, x.p99_ms)).collect())];
    h += &time_chart("p99 latency per second", "ms", &p99);
    if s.samples.iter().any(|x| x.connections > 0) {
        let conns = [("connections".into(), per_second(|x| x.connections as f64))];
        h += &time_chart("Open connections", "connections", &conns);
    }

    if !s.nodes.is_empty() {
        h += "<h2>Node memory</h2>\n";
        let mut rss: Vec<Series> = Vec::new();
        for n in &s.nodes {
            let mib = n.rss_kib.iter().map(|&(t, k)| (t, k as f64 / 1024.0));
            rss.push((format!("pid {}", n.pid), mib.collect()));
        }
        h += &time_chart("Resident memory per node", "RSS (MiB)", &rss);
    }

    if let Some(m) = &s.metrics {
        h += "<h2>Metrics (counter increase)</h2>\n";
        match m.as_object() {
            Some(obj) if !obj.is_empty() => {
                let plain =
                    |v: &serde_json::Value| v.as_str().map_or(v.to_string(), str::to_string);
                let rows: Vec<_> = obj.iter().map(|(k, v)| (k.clone(), plain(v))).collect();
                h += &table(&rows);
            }
            Some(_) => h += "<p class=\"note\">No counters changed.</p>\n",
            None => h += &format!("<pre>{}</pre>\n", esc(&m.to_string())),
        }
    }

    let raw =
        serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("(not serialisable: {e})"));
    h += "<h2>Raw summary</h2>\n<details><summary>summary.json</summary><pre>";
    h + &esc(&raw) + "</pre></details>\n</body></html>\n"
}

fn headline_rows(s: &Summary) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| r.push((k.to_string(), v));
    let ms = |v: f64| format!("{v:.3} ms");
    row("parameters", s.params.to_string());
    let target = s.target_rate.map_or("—".into(), |t| format!("{t:.1} /s"));
    row("target rate", target);
    row("published", s.published.to_string());
    row("publish errors", s.publish_errors.to_string());
    row("deliveries", format!("{:.1} /s", s.deliveries_per_s));
    for n in &s.nodes {
        row(&format!("node {} CPU", n.pid), format!("{:.2} s", n.cpu_s));
    }
    if let Some(r) = &s.redis {
        for p in &r.processes {
            row(&format!("redis {} CPU", p.pid), format!("{:.2} s", p.cpu_s));
        }
        if r.processes.len() > 1 {
            row("redis CPU, all processes", format!("{:.2} s", r.cpu_s));
        }
    }
    if let Some(d) = &s.delivery {
        row("delivery expected", d.expected.to_string());
        row("delivery received", d.received.to_string());
        row("delivery lost", d.lost.to_string());
        row("delivery duplicates", d.duplicates.to_string());
    }
    if let Some(r) = &s.recovery {
        row("reconnects", r.reconnects.to_string());
        row("connections dropped on purpose", r.dropped.to_string());
        row("connections ended otherwise", r.connection_ends.to_string());
        row("failed reconnect attempts", r.reconnect_errors.to_string());
        row("subscribes with since", r.subscribes_with_since.to_string());
        row("recovered: true", r.recovered.to_string());
        row("recovered: false", r.not_recovered.to_string());
        row("resync frames", r.resyncs.to_string());
        row(
            "reconnects without position",
            r.without_position.to_string(),
        );
        row("messages replayed", r.replayed.to_string());
        row("unrecoverable (excused)", r.unrecoverable.to_string());
        for (what, l) in [("recovery", &r.recovery), ("caught up", &r.catch_up)] {
            if let Some(l) = l {
                row(&format!("{what} p50"), ms(l.p50_ms));
                row(&format!("{what} p99"), ms(l.p99_ms));
                row(&format!("{what} max"), ms(l.max_ms));
            }
        }
    }
    if let Some(t) = &s.traces {
        row("traced publishes", t.traced_publishes.to_string());
        row("traced deliveries", t.traced_deliveries.to_string());
    }
    if let Some(l) = &s.latency {
        row("latency samples", l.count.to_string());
        row("latency p50", ms(l.p50_ms));
        row("latency p90", ms(l.p90_ms));
        row("latency p99", ms(l.p99_ms));
        row("latency p99.9", ms(l.p999_ms));
        row("latency max", ms(l.max_ms));
        row("latency mean", ms(l.mean_ms));
    }
    if let Some(c) = &s.connect {
        row("connections attempted", c.attempted.to_string());
        row("connections established", c.established.to_string());
        row("connection errors", c.errors.to_string());
        row("connection rate", format!("{:.1} /s", c.rate_per_s));
        if let Some(hs) = &c.handshake {
            row("handshake p50", ms(hs.p50_ms));
            row("handshake p99", ms(hs.p99_ms));
            row("handshake max", ms(hs.max_ms));
        }
        if let Some(b) = c.memory_per_connection_bytes {
            let v = format!("{b:.0} B ({:.2} KiB)", b / 1024.0);
            row("node memory per connection", v);
        }
    }
    row("errors", s.errors.len().to_string());
    r
}

fn table(rows: &[(String, String)]) -> String {
    let mut t = String::from("<table>\n");
    for (k, v) in rows {
        let _ = writeln!(t, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    t + "</table>\n"
}
/// "YYYY-MM-DD HH:MM:SS.mmm UTC" from unix ms, via the days-to-civil
/// algorithm (H. Hinnant) so the report needs no date crate.
fn utc_date(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm) = (rem / 3_600_000, rem / 60_000 % 60);
    let (ss, milli) = (rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{milli:03} UTC")
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{distribution, new_histogram, record, summarize, Delivery};
    use crate::summary::{ConnectFigures, NodeMemory, ProcessCpu, RedisCpu};

    fn assert_sane(html: &str) {
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        assert!(
            !html.contains("NaN") && !html.contains("inf"),
            "broken coordinates"
        );
    }

    #[test]
    fn renders_charts_figures_and_escapes_text() {
        let mut h = new_histogram();
        (1..=1000u64).for_each(|ms| record(&mut h, ms * 1000));
        let latency = summarize(&h);
        let node = |pid, rss: &[(f64, u64)]| NodeMemory {
            pid,
            rss_kib: rss.to_vec(),
            cpu_s: 1.5,
        };
        let sample = |t: u64| Sample {
            t: t as f64,
            sent: 500,
            delivered: 49_000 + t,
            connections: 100,
            p99_ms: if t == 5 { 0.0 } else { 12.0 },
        };
        let s = Summary {
            scenario: "fanout".into(),
            command: "loadtest fanout --tag '<script>alert(\"x\")</script>' && true".into(),
            started_at_ms: 1_700_000_000_000,
            duration_s: 10.0,
            target_rate: Some(500.0),
            published: 5000,
            delivery: Some(Delivery::new(500_000, 499_990, 2)),
            latency: Some(latency.clone()),
            latency_distribution: distribution(&h),
            connect: Some(ConnectFigures {
                attempted: 100,
                handshake: Some(latency.clone()),
                memory_per_connection_bytes: Some(20_480.0),
                ..Default::default()
            }),
            errors: vec!["node 2 <down>".into()],
            samples: (1..=10).map(sample).collect(),
            nodes: vec![
                node(4242, &[(0.0, 10_240), (5.0, 20_480)]),
                node(4343, &[(1.0, 9_000)]),
            ],
            metrics: Some(serde_json::json!({"messages_total": 5000, "weird<name>": "x"})),
            redis: Some(RedisCpu {
                cpu_s: 0.75,
                processes: vec![
                    ProcessCpu {
                        pid: 77,
                        cpu_s: 0.5,
                    },
                    ProcessCpu {
                        pid: 78,
                        cpu_s: 0.25,
                    },
                ],
            }),
            ..Default::default()
        };
        let html = render_html(&s);
        assert_sane(&html);
        assert_eq!(
            html.matches("<svg").count(),
            5,
            "latency, throughput, p99, conns, rss"
        );
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(html.contains("&#39;") && html.contains("&amp;&amp; true"));
        assert!(
            !html.contains("<script"),
            "nowhere raw, including the summary JSON"
        );
        assert!(
            html.contains(&format!("{:.3} ms", latency.p99_ms)),
            "p99 figure"
        );
        assert!(html.contains("2023-11-14 22:13:20.000 UTC"));
        assert!(html.contains("pid 4242") && html.contains("weird&lt;name&gt;"));
        assert!(html.contains("redis 78 CPU") && html.contains("redis CPU, all processes"));
        let line = crate::headline(&s);
        assert!(line.contains("redis CPU 0.75s over 2 processes"), "{line}");
        assert!(html.contains("20480 B (20.00 KiB)") && html.contains("<details>"));
        assert!(
            html.contains(">99.9<") && html.contains(">99.99999<"),
            "nines ticks"
        );
    }

    #[test]
    fn empty_and_degenerate_summaries_render() {
        let html = render_html(&Summary::default());
        assert_sane(&html);
        assert!(html.contains("No latency samples") && html.contains("no data"));
        let single = Summary {
            latency_distribution: vec![(100.0, 5.0)],
            samples: vec![Sample {
                t: 1.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let html = render_html(&single);
        assert_sane(&html);
        assert_eq!(html.matches("<svg").count(), 2, "latency and throughput");
    }
    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc_date(951_782_400_123), "2000-02-29 00:00:00.123 UTC");
    }
}
