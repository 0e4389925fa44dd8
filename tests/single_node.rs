//! One node with the embedded in-process broker: the protocol, bad input,
//! limits, heartbeats and drain, against real WebSocket clients.

mod common;

use std::time::Duration;

use common::{counter, http_get, Client, Ended, TestNode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_then_publish_subscribe_on_one_node() {
    let node = TestNode::memory(|_| {}).await;
    let mut ann = node.connect("ann").await;
    assert_eq!(ann.welcome["user"], "ann");
    assert_eq!(ann.welcome["node"], node.gateway.node_id());
    assert_eq!(ann.welcome["heartbeat_ms"], 25_000);
    assert!(ann.welcome["conn"].as_str().is_some_and(|c| !c.is_empty()));

    let mut bob = node.connect("bob").await;
    bob.subscribe("news").await;
    let r1 = ann.publish("news", json!({"n": 1})).await;
    let r2 = ann.publish("news", json!({"n": 2})).await;
    assert_eq!(r1["offset"], 1);
    assert_eq!(r2["offset"], 2);
    assert_eq!(r1["epoch"], r2["epoch"]);

    for n in 1..=2 {
        let m = bob.expect("message").await;
        assert_eq!(m["channel"], "news");
        assert_eq!(m["from"], "ann");
        assert_eq!(m["data"], json!({"n": n}));
        assert_eq!(m["offset"], n);
        assert_eq!(m["epoch"], r1["epoch"]);
    }
    // The publisher is not subscribed, so it gets replies only.
    ann.expect_silence(Duration::from_millis(100)).await;

    let pong = ann.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_every_connection_of_the_user_only() {
    let node = TestNode::memory(|_| {}).await;
    let mut bob1 = node.connect("bob").await;
    let mut bob2 = node.connect("bob").await;
    let mut carol = node.connect("carol").await;
    let mut ann = node.connect("ann").await;
    ann.ok(json!({"type": "send", "user": "bob", "data": "psst"}))
        .await;
    for bob in [&mut bob1, &mut bob2] {
        let d = bob.expect("direct").await;
        assert_eq!(d, json!({"type": "direct", "from": "ann", "data": "psst"}));
    }
    carol.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let node = TestNode::memory(|_| {}).await;
    let mut sub = node.connect("sub").await;
    let mut publisher = node.connect("pub").await;
    sub.subscribe("c").await;
    publisher.publish("c", json!(1)).await;
    sub.expect("message").await;
    sub.ok(json!({"type": "unsubscribe", "channel": "c"})).await;
    publisher.publish("c", json!(2)).await;
    sub.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_connection_stays_open() {
    let node = TestNode::memory(|s| {
        s.namespaces = vec![switchboard::config::Namespace {
            name: "chat".into(),
            options: Default::default(),
        }];
    })
    .await;
    let mut c = node.connect("ann").await;

    // Not JSON, not an object, no type: an `error` frame (there is no id to reply to).
    for bad in [
        "Hello, World!",
        "[1,2,3]",
        "{\"channel\":\"x\"}",
        "{\"type\":\"publish\",\"channel\":\"x\"",
    ] {
        c.send_text(bad).await;
        let e = c.expect("error").await;
        assert_eq!(e["error"]["code"], "bad_frame", "{bad} -> {e}");
        assert!(e["error"]["message"].as_str().unwrap().len() > 5);
    }

    // With an id, the error comes as a reply to that id.
    let cases = [
        (json!({"type": "teleport"}), "bad_frame"),
        (json!({"type": "publish", "channel": "x"}), "bad_frame"),
        (json!({"type": "subscribe", "chanel": "x"}), "bad_frame"),
        (
            json!({"type": "subscribe", "channel": "has space"}),
            "bad_channel",
        ),
        (
            json!({"type": "subscribe", "channel": "x".repeat(300)}),
            "bad_channel",
        ),
        (
            json!({"type": "subscribe", "channel": "files:1"}),
            "unknown_channel",
        ),
        (
            json!({"type": "publish", "channel": "files:1", "data": 1}),
            "unknown_channel",
        ),
        (
            json!({"type": "unsubscribe", "channel": "never"}),
            "not_subscribed",
        ),
        (json!({"type": "send", "user": "", "data": 1}), "bad_user"),
        (
            json!({"type": "subscribe", "channel": "x", "since": {"offset": 1, "epoch": "e"}}),
            "not_supported",
        ),
        (json!({"type": "presence", "channel": "x"}), "not_enabled"),
        (json!({"type": "history", "channel": "x"}), "not_supported"),
    ];
    for (frame, code) in cases {
        let r = c.request(frame.clone()).await;
        assert_eq!(r["type"], "reply", "{frame} -> {r}");
        assert_eq!(r["error"]["code"], code, "{frame} -> {r}");
        assert!(r.get("ok").is_none());
    }

    // An id on an otherwise broken frame is still echoed.
    c.send_text(r#"{"type":"publish","id":77,"channel":5}"#)
        .await;
    let r = c.expect("reply").await;
    assert_eq!(r["id"], 77);
    assert_eq!(r["error"]["code"], "bad_frame");

    // Binary frames are refused, not fatal.
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(c.expect("error").await["error"]["code"], "bad_frame");

    // Subscribing twice is an error; the first subscription still works.
    c.subscribe("chat:room").await;
    let r = c
        .request(json!({"type": "subscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(r["error"]["code"], "already_subscribed");
    c.publish("chat:room", json!("still here")).await;
    assert_eq!(c.expect("message").await["data"], "still here");
    assert!(counter(&node.gateway, |m| &m.bad_frames) >= 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_closes_with_1009_and_others_are_unaffected() {
    let node = TestNode::memory(|s| s.max_message_bytes = 1024).await;
    let mut big = node.connect("big").await;
    let mut other = node.connect("other").await;
    other.subscribe("c").await;
    let data = "x".repeat(2000);
    big.send_text(json!({"type": "publish", "channel": "c", "data": data}).to_string())
        .await;
    assert_eq!(big.ended().await, Ended::Close(1009));
    // Nothing of the oversize frame was published, and the node still serves.
    other.expect_silence(Duration::from_millis(100)).await;
    let mut again = node.connect("big").await;
    again.publish("c", json!("small")).await;
    assert_eq!(other.expect("message").await["data"], "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_the_heartbeat_timeout() {
    let node = TestNode::memory(|s| {
        s.heartbeat_interval = Duration::from_millis(100);
        s.heartbeat_timeout = Duration::from_millis(400);
    })
    .await;
    let silent = tokio::spawn(common::mute_client_close_code(node.port, "silent"));
    let mut lively = node.connect("lively").await;
    assert_eq!(lively.welcome["heartbeat_ms"], 100);
    // The lively client keeps reading (tungstenite answers pings while it
    // reads) and stays; the silent one never reads, so never answers pings.
    let lively = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(1000);
        while tokio::time::Instant::now() < until {
            lively.expect_silence(Duration::from_millis(50)).await;
        }
        lively
    });
    let mut lively = lively.await.unwrap();
    let pong = lively.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(silent.await.unwrap(), Some(3003));
    assert_eq!(counter(&node.gateway, |m| &m.heartbeat_timeouts), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_turns_readyz_503_then_closes_clients_with_shutdown() {
    let node = TestNode::memory(|s| s.drain_delay = Duration::from_millis(300)).await;
    assert_eq!(node.http_get("/readyz").await.0, 200);
    assert_eq!(node.http_get("/healthz").await.0, 200);
    let mut c = node.connect("ann").await;
    let drainer = node.drainer.clone();
    let draining = tokio::spawn(async move { drainer.drain().await });
    node.wait_ready(false).await;
    assert_eq!(node.http_get("/readyz").await.1, "draining\n");
    assert_eq!(c.ended().await, Ended::Close(3001));
    draining.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_accepts_upgrades_and_describes_itself_otherwise() {
    let node = TestNode::memory(|_| {}).await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{}/?user=root", node.port)).await;
    assert_eq!(c.welcome["user"], "root");
    c.ok(json!({"type": "subscribe", "channel": "a"})).await;
    let (status, body) = http_get(node.port, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("/ws"), "{body}");
    // Anonymous users get a generated name; a bad ?user= is refused before the upgrade.
    let anon = Client::connect(&format!("ws://127.0.0.1:{}/ws", node.port)).await;
    assert!(anon.welcome["user"].as_str().unwrap().starts_with("anon-"));
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws?user=%7Bx%7D", node.port))
            .await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_move() {
    let node = TestNode::memory(|_| {}).await;
    let mut c = node.connect("ann").await;
    c.subscribe("m").await;
    c.publish("m", json!(1)).await;
    c.expect("message").await;
    let (status, body) = node.http_get("/metrics").await;
    assert_eq!(status, 200);
    let node_label = format!("{{node=\"{}\"}}", node.gateway.node_id());
    for (name, value) in [
        ("switchboard_connections", 1),
        ("switchboard_subscriptions", 1),
        ("switchboard_channels", 1),
        ("switchboard_messages_published_total", 1),
        ("switchboard_deliveries_total", 1),
    ] {
        let line = format!("{name}{node_label} {value}\n");
        assert!(body.contains(&line), "missing {line:?} in\n{body}");
    }
    assert!(body.contains("# TYPE switchboard_deliveries_total counter"));
    // The broker publish latency histogram counted the one publish.
    assert!(body.contains("# TYPE switchboard_broker_publish_duration_seconds histogram"));
    let count = format!("switchboard_broker_publish_duration_seconds_count{node_label} 1\n");
    assert!(body.contains(&count), "{body}");
    let inf = format!(
        "switchboard_broker_publish_duration_seconds_bucket{{node=\"{}\",le=\"+Inf\"}} 1\n",
        node.gateway.node_id()
    );
    assert!(body.contains(&inf), "{body}");
    // Counters move with traffic.
    c.publish("m", json!(2)).await;
    c.expect("message").await;
    let (_, after) = node.http_get("/metrics").await;
    let line = format!("switchboard_deliveries_total{node_label} 2\n");
    assert!(after.contains(&line), "{after}");
}
