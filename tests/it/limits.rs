//! Per-connection limits: subscriptions per connection, and frames per
//! second (refused, then closed); other connections are not disturbed.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, Ended, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_capped() {
    let node = TestNode::memory(|s| s.max_subscriptions_per_connection = 3).await;
    let mut c = node.connect("ann").await;
    for ch in ["a", "b", "c"] {
        c.subscribe(ch).await;
    }
    let r = c
        .request(json!({"type": "subscribe", "channel": "d"}))
        .await;
    assert_eq!(r["error"]["code"], "limit_exceeded", "{r}");
    // Freeing one makes room again; the others keep working.
    c.unsubscribe("a").await;
    c.subscribe("d").await;
    c.publish("c", json!("still")).await;
    assert_eq!(c.expect("message").await["data"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_floods_are_refused_then_closed() {
    let node = TestNode::memory(|s| s.max_messages_per_second = 10).await;
    let mut calm = node.connect("calm").await;
    let mut flood = node.connect("flood").await;
    for id in 0..40 {
        let ping = Message::text(json!({"type": "ping", "id": id}).to_string());
        if !flood.try_send(ping).await {
            break; // already closed for flooding: what comes next shows it
        }
    }
    let (mut pongs, mut refused) = (0, 0);
    let ended = loop {
        match flood.try_next_frame().await {
            Ok(v) if v["type"] == "pong" => pongs += 1,
            Ok(v) => {
                assert_eq!(v["error"]["code"], "rate_limited", "{v}");
                assert!(v["id"].is_u64(), "the refusal names the frame: {v}");
                refused += 1;
            }
            Err(ended) => break ended,
        }
    };
    assert_eq!(ended, Ended::Close(3502));
    assert!((10..=12).contains(&pongs), "{pongs} pongs");
    assert!(refused >= 9, "{refused} refusals");
    // Another connection is unaffected.
    assert_eq!(calm.request(json!({"type": "ping"})).await["type"], "pong");
    let _ = Client::connect(&node.ws_url("flood")).await;
}
