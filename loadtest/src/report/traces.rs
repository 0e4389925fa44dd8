//! The report's "Slowest traced deliveries" section (`--trace-fraction`):
//! one row per listed trace, its id linked to Jaeger with `--jaeger-url`.

use std::fmt::Write as _;

use super::esc;
use crate::summary::TraceFigures;

/// `URL/trace/<id>`: a trace in the Jaeger UI.
pub fn trace_link(jaeger_url: &str, trace_id: &str) -> String {
    format!("{}/trace/{trace_id}", jaeger_url.trim_end_matches('/'))
}

pub(super) fn section(t: &TraceFigures) -> String {
    let mut h = String::from("<h2>Slowest traced deliveries</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">With <code>--trace-fraction {}</code>, {} publishes carried a \
         fresh sampled <code>traceparent</code>, and {} live deliveries of them were \
         received. Each row is the slowest delivery of one trace (publish → receipt, as \
         the latency figures); nodes that export traces with a parent-based sampler (the \
         default) exported these traces, to be opened by id in Jaeger.</p>",
        t.fraction, t.traced_publishes, t.traced_deliveries
    );
    if t.slowest.is_empty() {
        return h + "<p class=\"note\">No traced delivery was received.</p>\n";
    }
    h += "<table>\n<tr><th>trace id</th><th>latency</th><th>channel</th>\
          <th>offset</th><th>receiving node</th></tr>\n";
    for e in &t.slowest {
        let id = esc(&e.trace_id);
        let id = match &t.jaeger_url {
            Some(url) => format!(
                "<a href=\"{}\">{id}</a>",
                esc(&trace_link(url, &e.trace_id))
            ),
            None => id,
        };
        let offset = e.offset.map_or("—".into(), |o| o.to_string());
        let _ = writeln!(
            h,
            "<tr><td>{id}</td><td>{:.3} ms</td><td>{}</td><td>{offset}</td><td>{}</td></tr>",
            e.latency_ms,
            esc(&e.channel),
            esc(&e.node)
        );
    }
    h + "</table>\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::SlowTrace;

    #[test]
    fn lists_traces_and_links_them_to_jaeger() {
        let mut t = TraceFigures {
            fraction: 0.5,
            traced_publishes: 4,
            traced_deliveries: 8,
            slowest: vec![SlowTrace {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                channel: "lt<1>".into(),
                offset: Some(17),
                latency_ms: 12.5,
                node: "node-a".into(),
            }],
            jaeger_url: None,
        };
        let plain = section(&t);
        assert!(plain.contains("<td>4bf92f3577b34da6a3ce929d0e0e4736</td><td>12.500 ms</td>"));
        assert!(plain.contains("lt&lt;1&gt;") && !plain.contains("<a "));
        t.jaeger_url = Some("http://jaeger:16686/".into());
        assert!(section(&t)
            .contains("<a href=\"http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736\">"));
        t.slowest.clear();
        assert!(section(&t).contains("No traced delivery"));
    }
}
