//! Self-contained HTML report for one run.
//!
//! The report is a single file with inline CSS and inline SVG charts: no
//! scripts, no CDN, no web fonts. Load tests run on CI runners and in
//! clusters without outbound network access, and the report is archived
//! next to `summary.json` to be opened long afterwards, so it must render
//! offline and must not depend on anything hosted elsewhere that may move,
//! change or vanish.

use std::fmt::Write as _;

use crate::summary::{Sample, Summary};

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 72.0;
// Room for the last x label ("99.99999") to overhang the plot.
const RIGHT: f64 = 40.0;
const BOTTOM: f64 = 46.0;
// Okabe–Ito: stays distinguishable under the common colour-vision deficiencies.
const COLORS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];
const CSS: &str = concat!(
    "body{font-family:system-ui,sans-serif;max-width:800px;margin:2em auto;padding:0 1em}",
    "pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;word-break:break-all}",
    "table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:.2em .8em}",
    "th{text-align:left;font-weight:normal;color:#555}td{text-align:right;font-family:monospace}",
    ".note{color:#777;font-style:italic}svg{max-width:100%;height:auto}",
    "svg text{font-size:11px;fill:#333}svg .title{font-size:13px;font-weight:bold}",
    "svg .grid{stroke:#e6e6e6}svg .axis{stroke:#444}svg polyline{stroke-width:1.6}",
);

/// A named line: (legend label, (x, y) points).
type Series = (String, Vec<(f64, f64)>);

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

/// Percentile curve on a "nines" axis. On a linear percentile axis
/// everything from p99 to the maximum — the part that matters — would be
/// squeezed against the right edge; counting nines gives each decade of
/// the tail the same width.
fn latency_chart(title: &str, dist: &[(f64, f64)]) -> String {
    if dist.is_empty() {
        return "<p class=\"note\">No latency samples were recorded.</p>\n".into();
    }
    let mut last = 0.0_f64;
    let mut pts = Vec::with_capacity(dist.len());
    for &(p, ms) in dist {
        let x = -(1.0 - (p / 100.0).clamp(0.0, 1.0)).log10();
        // p100 (the max) is infinitely many nines out: draw it one nine past the last finite point.
        let x = if x.is_finite() { x } else { last + 1.0 };
        last = last.max(x);
        pts.push((x, ms));
    }
    let n = last.ceil().clamp(1.0, 15.0) as usize;
    let ticks = (0..=n).map(|k| (k as f64, nines_label(k))).collect();
    let series = [("latency".into(), pts)];
    let labels = [title, "percentile", "latency (ms)"];
    let note = "The rightmost point is the maximum, drawn one nine past the last percentile.";
    line_chart(labels, &series, Some(ticks)) + &format!("<p class=\"note\">{note}</p>\n")
}

/// 0 → "0", 1 → "90", 2 → "99", 3 → "99.9", ...
fn nines_label(k: usize) -> String {
    match k {
        0 => "0".into(),
        1 => "90".into(),
        2 => "99".into(),
        _ => format!("99.{}", "9".repeat(k - 2)),
    }
}

fn time_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    line_chart([title, "time (s)", y_label], series, None)
}

/// An SVG line chart; `labels` are [title, x label, y label]. `x_ticks`
/// overrides the automatic x axis, for axes whose positions are not the
/// values they show (the nines axis).
fn line_chart(labels: [&str; 3], series: &[Series], x_ticks: Option<Vec<(f64, String)>>) -> String {
    let [title, x_label, y_label] = labels;
    // One NaN would turn the whole scale into NaN; drop bad points instead of the chart.
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    // Zero baseline for y: starting at the minimum exaggerates small wobbles.
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0_f64, 0.0_f64);
    for &(x, y) in series.iter().flat_map(|s| &s.1).filter(finite) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return format!("<p class=\"note\">{}: no data.</p>\n", esc(title));
    }
    let xs = x_ticks
        .filter(|t| t.len() >= 2)
        .unwrap_or_else(|| ticks(x0, x1, 6));
    let ys = ticks(y0, y1, 5);
    let (x_lo, x_hi) = (xs[0].0, xs[xs.len() - 1].0);
    let (y_lo, y_hi) = (ys[0].0, ys[ys.len() - 1].0);
    let (right, bottom) = (W - RIGHT, H - BOTTOM);
    let top = 34.0 + 14.0 * series.len().div_ceil(4) as f64;
    let sx = |x: f64| scale(x, x_lo, x_hi, LEFT, right);
    let sy = |y: f64| scale(y, y_lo, y_hi, bottom, top);

    let t = esc(title);
    let mut o = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{t}\">\n\
         <text class=\"title\" x=\"{LEFT}\" y=\"18\">{t}</text>\n"
    );
    for (i, (name, _)) in series.iter().enumerate() {
        let (x, y) = (LEFT + (i % 4) as f64 * 165.0, 32.0 + (i / 4) as f64 * 14.0);
        let (color, ry) = (COLORS[i % COLORS.len()], y - 4.0);
        o += &format!("<rect x=\"{x}\" y=\"{ry}\" width=\"14\" height=\"3\" fill=\"{color}\"/>");
        o += &text(x + 18.0, y, "start", name);
    }
    for (v, label) in &ys {
        o += &line("grid", (LEFT, sy(*v)), (right, sy(*v)));
        o += &text(LEFT - 6.0, sy(*v) + 4.0, "end", label);
    }
    for (v, label) in &xs {
        o += &line("axis", (sx(*v), bottom), (sx(*v), bottom + 5.0));
        o += &text(sx(*v), bottom + 18.0, "middle", label);
    }
    o += &line("axis", (LEFT, bottom), (right, bottom));
    o += &line("axis", (LEFT, bottom), (LEFT, top));
    o += &text((LEFT + right) / 2.0, H - 8.0, "middle", x_label);
    let (mid, y_label) = ((bottom + top) / 2.0, esc(y_label));
    o += &format!(
        "<text transform=\"translate(16 {mid:.1}) rotate(-90)\" text-anchor=\"middle\">\
         {y_label}</text>\n"
    );
    for (i, (_, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .filter(finite)
            .map(|&(x, y)| (sx(x), sy(y)))
            .collect();
        let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let coords = coords.join(" ");
        o += &format!("<polyline fill=\"none\" stroke=\"{color}\" points=\"{coords}\"/>");
        // A line needs two points; markers keep sparse series and single points visible.
        for (x, y) in pts.iter().filter(|_| pts.len() <= 60) {
            o += &format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.2\" fill=\"{color}\"/>");
        }
        o.push('\n');
    }
    o + "</svg></figure>\n"
}

fn text(x: f64, y: f64, anchor: &str, s: &str) -> String {
    let s = esc(s);
    format!("<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{s}</text>\n")
}

fn line(class: &str, (x1, y1): (f64, f64), (x2, y2): (f64, f64)) -> String {
    format!("<line class=\"{class}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>")
}

/// Labelled ticks from [`nice_ticks`].
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, String)> {
    nice_ticks(lo, hi, target)
        .into_iter()
        .map(|v| (v, fmt_tick(v)))
        .collect()
}

/// Maps `v` from [lo, hi] to [a, b]; a degenerate range maps to the middle
/// rather than dividing by zero.
fn scale(v: f64, lo: f64, hi: f64, a: f64, b: f64) -> f64 {
    if hi > lo {
        a + (v - lo) / (hi - lo) * (b - a)
    } else {
        (a + b) / 2.0
    }
}

/// About `target` ticks covering [lo, hi], spaced 1, 2 or 5 × 10^k, always
/// at least two distinct values.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return nice_ticks(0.0, 1.0, target);
    }
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    // A flat series or a single point still needs a span to scale against.
    let hi = if hi > lo { hi } else { lo + lo.abs().max(1.0) };
    let raw = (hi - lo) / target.max(1) as f64;
    let exp = raw.log10().floor() as i32;
    let mult = match raw / 10f64.powi(exp) {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    // Scaling integer multiples last keeps labels free of float noise
    // (0.6 rather than 0.6000000000000001).
    let (num, den) = (mult * 10f64.powi(exp.max(0)), 10f64.powi(-exp.min(0)));
    let at = |n: f64| n * num / den;
    let step = at(1.0);
    let (first, last) = ((lo / step).floor(), (hi / step).ceil());
    if !(last - first).is_finite() || last <= first || last - first > 100.0 {
        return vec![lo, hi];
    }
    (first as i64..=last as i64).map(|n| at(n as f64)).collect()
}

fn fmt_tick(v: f64) -> String {
    // Suffixes keep wide labels clear of the axis title. Display gives the
    // shortest exact form (2.5, 0.2); + 0.0 turns -0 into 0.
    match v.abs() {
        a if a >= 1e6 => format!("{}M", v / 1e6),
        a if a >= 1e4 => format!("{}k", v / 1e3),
        _ => format!("{}", v + 0.0),
    }
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
    use crate::summary::{ConnectFigures, NodeMemory};

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
    fn nice_ticks_use_1_2_5_steps() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.0, 1.0, 5), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            nice_ticks(3.0, 97.0, 5),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(
            nice_ticks(0.0, 4500.0, 5),
            [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
        );
        let labels = [nice_ticks(0.0, 1.0, 5)[3], -0.0, 1500.0, 25e3, 2.5e6].map(fmt_tick);
        assert_eq!(labels, ["0.6", "0", "1500", "25k", "2.5M"]);
        for (lo, hi) in [
            (0.0, 0.0),
            (7.0, 7.0),
            (f64::NAN, 1.0),
            (-3.0, -1.0),
            (0.0, 1e-9),
        ] {
            let t = nice_ticks(lo, hi, 5);
            assert!(
                t.len() >= 2 && t.windows(2).all(|w| w[0] < w[1]),
                "{lo}..{hi}: {t:?}"
            );
        }
    }

    #[test]
    fn dates_and_nines() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc_date(951_782_400_123), "2000-02-29 00:00:00.123 UTC");
        assert_eq!([0, 2, 4].map(nines_label), ["0", "99", "99.99"]);
    }
}
