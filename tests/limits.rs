//! Input limits and origin checks, against real nodes and clients: each
//! bad input gets a clear refusal, and nothing else is disturbed.

mod common;

use std::time::Duration;

use common::{Client, Ended, RedisServer, TestNode};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The HTTP status an upgrade with this Origin gets (101 = accepted).
async fn upgrade_status(node: &TestNode, user: &str, origin: Option<&str>) -> u16 {
    let mut request = node.ws_url(user).into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_ws, response)) => response.status().as_u16(),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected handshake error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_outside_the_allow_list_are_refused() {
    let node = TestNode::memory(|s| {
        s.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://*.corp.example".into(),
        ];
    })
    .await;
    assert_eq!(
        upgrade_status(&node, "a", Some("https://evil.example")).await,
        403
    );
    assert_eq!(
        upgrade_status(&node, "a", Some("https://app.example.com.evil.example")).await,
        403
    );
    assert_eq!(upgrade_status(&node, "a", Some("null")).await, 403);
    assert_eq!(
        upgrade_status(&node, "a", Some("https://app.example.com")).await,
        101
    );
    assert_eq!(
        upgrade_status(&node, "a", Some("https://eu.corp.example")).await,
        101
    );
    // Non-browser clients send no Origin.
    assert_eq!(upgrade_status(&node, "a", None).await, 101);
    // Without a list, any origin may connect.
    let open = TestNode::memory(|_| {}).await;
    assert_eq!(
        upgrade_status(&open, "a", Some("https://anywhere.example")).await,
        101
    );
}

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
    c.ok(json!({"type": "unsubscribe", "channel": "a"})).await;
    c.subscribe("d").await;
    c.publish("c", json!("still")).await;
    assert_eq!(c.expect("message").await["data"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped_across_nodes() {
    let redis = RedisServer::start().await;
    let cap = |s: &mut switchboard::config::Settings| s.max_connections_per_user = 2;
    let a = TestNode::redis(&redis, "node-a", cap).await;
    let b = TestNode::redis(&redis, "node-b", cap).await;
    let first = a.connect("bob").await;
    let _second = b.connect("bob").await;
    assert_eq!(upgrade_status(&a, "bob", None).await, 429);
    assert_eq!(upgrade_status(&b, "bob", None).await, 429);
    // Other users are not affected; a closed connection frees its slot.
    let _carol = a.connect("carol").await;
    first.close().await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while upgrade_status(&a, "bob", None).await != 101 {
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_floods_are_refused_then_closed() {
    let node = TestNode::memory(|s| s.max_messages_per_second = 10).await;
    let mut calm = node.connect("calm").await;
    let mut flood = node.connect("flood").await;
    for id in 0..40 {
        flood
            .send_raw(Message::text(json!({"type": "ping", "id": id}).to_string()))
            .await;
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
