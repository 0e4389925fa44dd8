//! Heartbeats: a client that answers the node's pings stays; one that
//! does not is closed with 3003 at `heartbeat_timeout`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::raw::{Got, Raw};
use crate::support::{TestNode, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_and_a_lively_one_stays() {
    let node = TestNode::memory(|s| {
        s.heartbeat_interval = Duration::from_millis(100);
        s.heartbeat_timeout = Duration::from_millis(400);
    })
    .await;
    // The raw client answers nothing, not even pings.
    let mut silent = Raw::connect_to(node.port, "/ws?user=silent").await;
    let mut lively = node.connect("lively").await;
    assert_eq!(lively.welcome["heartbeat_ms"], 100);
    // The lively client reads (tungstenite answers the pings it reads)
    // through ten pings, 1 s, well past the timeout; nothing else arrives.
    lively.answer_pings(10).await;
    let pong = lively.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(silent.next_non_ping().await, Got::Close(Some(3003)));
    assert_eq!(node.counter(|m| &m.heartbeat_timeouts), 1);
}

/// A silent client is closed at `heartbeat_timeout`, not at the first
/// ping after it: with pings every 2 s and a 2.2 s timeout the close comes
/// at about 2.2 s (it came at 4 s, the second tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_at_the_heartbeat_timeout() {
    let node = TestNode::memory(|s| {
        s.heartbeat_interval = Duration::from_millis(2000);
        s.heartbeat_timeout = Duration::from_millis(2200);
    })
    .await;
    let connected = Instant::now();
    let mut ws = Raw::connect(&node).await;
    let got = tokio::time::timeout(WAIT, ws.next_non_ping())
        .await
        .expect("closed in time");
    let after = connected.elapsed();
    assert_eq!(got, Got::Close(Some(3003)));
    assert!(
        after >= Duration::from_millis(2200) && after < Duration::from_millis(3200),
        "closed after {after:?}"
    );
}
