//! What the harness watches besides its own clients: the resident memory
//! of local node processes, and the nodes' Prometheus counters.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Resident set size of a local process, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) a local process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of those, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// GET a URL over plain HTTP/1.1 (enough for `/metrics`).
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// is supported"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        anyhow::Ok(body)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch).await??;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(_, b)| b.to_owned()))
}

/// Sum of every sample of each metric, over all the given pages.
pub fn parse_counters(pages: &[String]) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for page in pages {
        for line in page
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((name_labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = name_labels.split('{').next().unwrap_or(name_labels);
            if let Ok(v) = value.parse::<f64>() {
                *totals.entry(name.to_owned()).or_insert(0.0) += v;
            }
        }
    }
    totals
}

pub async fn scrape(urls: &[String]) -> BTreeMap<String, f64> {
    let mut pages = Vec::new();
    for url in urls {
        match http_get(url).await {
            Ok(page) => pages.push(page),
            Err(e) => eprintln!("warning: scrape {url}: {e}"),
        }
    }
    parse_counters(&pages)
}

/// Counter increases between two scrapes (`_total` metrics), plus gauges as last seen.
pub fn deltas(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, value) in after {
        let v = if name.ends_with("_total") {
            value - before.get(name).copied().unwrap_or(0.0)
        } else {
            *value
        };
        out.insert(name.clone(), serde_json::json!(v));
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_across_nodes_and_diffed() {
        let a = "# HELP x\nswitchboard_deliveries_total{node=\"a\"} 10\nswitchboard_connections{node=\"a\"} 3\n".to_owned();
        let b = "switchboard_deliveries_total{node=\"b\"} 5\n".to_owned();
        let before = parse_counters(&[a, b]);
        assert_eq!(before["switchboard_deliveries_total"], 15.0);
        let after = parse_counters(&[
            "switchboard_deliveries_total{node=\"a\"} 40\nswitchboard_connections{node=\"a\"} 7\n"
                .to_owned(),
        ]);
        let d = deltas(&before, &after);
        assert_eq!(d["switchboard_deliveries_total"], 25.0);
        assert_eq!(d["switchboard_connections"], 7.0);
    }

    #[test]
    fn rss_and_cpu_of_this_process_are_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {}
        assert!(cpu_seconds(std::process::id()).unwrap() > 0.0);
    }
}
