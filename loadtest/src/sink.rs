//! `otlp-sink`: a stand-in trace collector for overhead runs. It accepts
//! OTLP/HTTP export requests, answers 200, and counts requests and bytes,
//! so the nodes pay the real cost of exporting without a collector
//! competing for the benchmark machine's CPU. The receiver is the one the
//! tests use (`switchboard_fixtures::OtlpReceiver`).

use std::time::Duration;

use switchboard_fixtures::OtlpReceiver;

/// Accept exports on `port` until Ctrl-C, printing totals every 5 s.
pub async fn run(port: u16) -> anyhow::Result<()> {
    let sink = OtlpReceiver::start(port, |_| {}).await?;
    eprintln!("otlp-sink listening on {}", sink.endpoint());
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                eprintln!("otlp-sink: {} requests, {} bytes", sink.requests(), sink.bytes());
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
