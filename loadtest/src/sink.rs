//! `otlp-sink`: a stand-in trace collector for overhead runs. It accepts
//! OTLP/HTTP export requests, answers 200, and counts requests and bytes,
//! so the nodes pay the real cost of exporting without a collector
//! competing for the benchmark machine's CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

async fn serve(socket: tokio::net::TcpStream, counts: Arc<Counts>) -> std::io::Result<()> {
    let mut reader = BufReader::new(socket);
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.bytes.fetch_add(length as u64, Ordering::Relaxed);
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
            .await?;
    }
}

/// Accept exports on `port` until Ctrl-C, printing totals every 5 s.
pub async fn run(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("otlp-sink listening on http://127.0.0.1:{port}");
    let counts = Arc::new(Counts::default());
    let report = counts.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!(
                "otlp-sink: {} requests, {} bytes",
                report.requests.load(Ordering::Relaxed),
                report.bytes.load(Ordering::Relaxed)
            );
        }
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, _) = accepted?;
                tokio::spawn(serve(socket, counts.clone()));
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
