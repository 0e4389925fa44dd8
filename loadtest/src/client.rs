//! WebSocket clients for the scenarios: plain `ws://` connections that can
//! bind a chosen source address, because one source IP can hold only ~28k
//! connections to one server port (the ephemeral port range). Spreading
//! clients over 127.0.0.1, 127.0.0.2, ... lifts that limit on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Handshake and welcome must complete within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections per source address before the next one is used.
pub const PER_SOURCE_IP: usize = 25_000;

/// Round-robin over source addresses.
#[derive(Debug)]
pub struct Sources {
    ips: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Sources {
    /// `count` loopback sources starting at 127.0.0.(offset+1) (0 = let the OS choose).
    pub fn loopback(offset: usize, count: usize) -> Sources {
        let ips = (offset..offset + count)
            .map(|i| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    (((i + 1) >> 8) & 0xff) as u8,
                    ((i + 1) & 0xff) as u8,
                ))
            })
            .collect();
        Sources {
            ips,
            next: AtomicUsize::new(0),
        }
    }

    /// Enough loopback sources for `connections` when every target is local.
    pub fn for_targets(nodes: &[String], connections: usize, requested: usize) -> Sources {
        let local = nodes
            .iter()
            .all(|n| n.contains("://127.") || n.contains("://localhost"));
        let count = if requested > 0 {
            requested
        } else if local && connections > PER_SOURCE_IP {
            connections.div_ceil(PER_SOURCE_IP)
        } else {
            0
        };
        Sources::loopback(0, count)
    }

    fn pick(&self) -> Option<IpAddr> {
        if self.ips.is_empty() {
            return None;
        }
        Some(self.ips[self.next.fetch_add(1, Ordering::Relaxed) % self.ips.len()])
    }
}

/// `ws://host:port/path?query` -> (host:port, full url).
fn authority(url: &str) -> anyhow::Result<&str> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("{url}: only ws:// URLs are supported"))?;
    Ok(rest.split(['/', '?']).next().unwrap_or(rest))
}

/// Append a query parameter to a URL.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let base = if url.contains("/ws") || url.matches('/').count() > 2 {
        url.to_owned()
    } else {
        format!("{}/ws", url.trim_end_matches('/'))
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{key}={value}")
}

/// Open a WebSocket and read the `welcome` frame.
pub async fn connect(url: &str, sources: &Sources) -> anyhow::Result<(Ws, serde_json::Value)> {
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let addr: SocketAddr = tokio::net::lookup_host(authority(url)?)
            .await
            .with_context(|| format!("resolve {url}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| anyhow!("{url}: no IPv4 address"))?;
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = sources.pick() {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind {ip}"))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        // tungstenite reads in 128 KiB chunks by default: zeroing that for
        // every one of tens of thousands of clients made the harness, not
        // the gateway, the bottleneck of the connect scenario.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("websocket handshake")?;
        let welcome = next_json(&mut ws).await?;
        if welcome["type"] != "welcome" {
            bail!("expected welcome, got {welcome}");
        }
        Ok((ws, welcome))
    })
    .await
    .map_err(|_| anyhow!("{url}: no welcome within {CONNECT_TIMEOUT:?}"))?
}

/// The node a connection reached: the `node` of its `welcome` frame, else
/// the URL it was opened with.
pub fn node_of(welcome: &serde_json::Value, url: &str) -> String {
    welcome["node"].as_str().unwrap_or(url).to_owned()
}

/// The next JSON text frame (pings are answered by tungstenite while reading).
pub async fn next_json(ws: &mut Ws) -> anyhow::Result<serde_json::Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
            Some(Ok(Message::Close(frame))) => bail!("closed by server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Send a command and wait for its `reply` (other frames are skipped).
pub async fn request(ws: &mut Ws, frame: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    use futures_util::SinkExt;
    let id = frame["id"].clone();
    ws.send(Message::text(frame.to_string())).await?;
    loop {
        let v = next_json(ws).await?;
        if v["type"] == "reply" && v["id"] == id {
            if v.get("error").is_some() {
                bail!("{frame} -> {v}");
            }
            return Ok(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_sources() {
        assert_eq!(
            authority("ws://127.0.0.1:6789/ws?user=a").unwrap(),
            "127.0.0.1:6789"
        );
        assert!(authority("http://x").is_err());
        assert_eq!(
            with_query("ws://127.0.0.1:1", "user", "a"),
            "ws://127.0.0.1:1/ws?user=a"
        );
        assert_eq!(
            with_query("ws://127.0.0.1:1/ws?x=1", "user", "a"),
            "ws://127.0.0.1:1/ws?x=1&user=a"
        );
        let s = Sources::for_targets(&["ws://127.0.0.1:1".into()], 60_000, 0);
        assert_eq!(s.ips.len(), 3);
        assert_eq!(s.pick(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.pick(), Some("127.0.0.2".parse().unwrap()));
        assert!(Sources::for_targets(&["ws://10.0.0.1:1".into()], 60_000, 0)
            .pick()
            .is_none());
        assert_eq!(
            Sources::loopback(0, 300).ips[255],
            "127.0.1.0".parse::<IpAddr>().unwrap()
        );
    }
}
