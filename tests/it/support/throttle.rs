//! A slow network, for real: a TCP proxy on loopback that forwards each
//! direction at a fixed rate, in small chunks, so a browser behind it gets
//! a slow link for its page, its scripts and its WebSocket alike. (Chrome's
//! own network emulation slows HTTP but not WebSocket frames.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes forwarded at a time: small, so the pace is smooth.
const CHUNK: usize = 512;

/// A proxy to `127.0.0.1:upstream` at `bytes_per_second` each way; it
/// runs until the test's runtime ends. Returns its port.
pub async fn slow_proxy(upstream: u16, bytes_per_second: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().unwrap().port();
    let pause = Duration::from_secs_f64(CHUNK as f64 / bytes_per_second as f64);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pace(client_read, server_write, pause));
            tokio::spawn(pace(server_read, client_write, pause));
        }
    });
    port
}

/// Copy `from` to `to`, at most CHUNK bytes per `pause`; a side that
/// closes closes the other.
async fn pace(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    pause: Duration,
) {
    let mut buf = [0u8; CHUNK];
    let mut next = tokio::time::Instant::now();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // The link's pace: this chunk leaves no earlier than its slot.
        next = next.max(tokio::time::Instant::now()) + pause;
        tokio::time::sleep_until(next).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
