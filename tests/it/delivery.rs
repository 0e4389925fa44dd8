//! Publish/subscribe and direct messages, on one node (in-process broker)
//! and across nodes (through `redis-server`): who receives what, in order,
//! exactly once, and nobody else.

use serde_json::json;

use crate::support::{RedisServer, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_then_messages_in_order_to_subscribers_only() {
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
    // The publisher is not subscribed, so it got replies only: the next
    // thing it receives is a direct message sent after the publishes.
    let marker = json!("after the publishes");
    ann.send_to("ann", marker.clone()).await;
    ann.expect_marker("direct", &marker).await;

    let pong = ann.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_reaches_every_connection_of_the_user_only() {
    let node = TestNode::memory(|_| {}).await;
    let mut bob1 = node.connect("bob").await;
    let mut bob2 = node.connect("bob").await;
    let mut carol = node.connect("carol").await;
    let mut ann = node.connect("ann").await;
    ann.send_to("bob", json!("psst")).await;
    for bob in [&mut bob1, &mut bob2] {
        let d = bob.expect("direct").await;
        assert_eq!(d, json!({"type": "direct", "from": "ann", "data": "psst"}));
    }
    let marker = json!("for carol");
    ann.send_to("carol", marker.clone()).await;
    carol.expect_marker("direct", &marker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_nodes_each_subscriber_gets_every_message_once_in_order() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", |_| {}).await;
    let b = TestNode::redis(&redis, "node-b", |_| {}).await;
    let c = TestNode::redis(&redis, "node-c", |_| {}).await;

    let mut on_a = a.connect("ann").await;
    let mut on_c = c.connect("cid").await;
    let mut also_a = a.connect("amy").await;
    for s in [&mut on_a, &mut on_c, &mut also_a] {
        s.subscribe("room").await;
    }
    // Each node subscribed once in Redis, however many local subscribers it has.
    let numsub: Vec<redis::Value> = redis
        .query(redis::cmd("PUBSUB").arg("NUMSUB").arg("sb:{c.room}:pub"))
        .await;
    assert_eq!(
        redis::from_redis_value::<i64>(numsub[1].clone()).unwrap(),
        2
    );

    let mut publisher = b.connect("bob").await;
    let mut epoch = None;
    for n in 1..=20 {
        let reply = publisher.publish("room", json!({"n": n})).await;
        assert_eq!(reply["offset"], n);
        epoch.get_or_insert(reply["epoch"].clone());
    }
    let marker = json!("end");
    publisher.publish("room", marker.clone()).await;
    for s in [&mut on_a, &mut on_c, &mut also_a] {
        for n in 1..=20 {
            let m = s.expect("message").await;
            assert_eq!(m["data"], json!({"n": n}), "in order, no gaps");
            assert_eq!(m["offset"], n);
            assert_eq!(m["from"], "bob");
            assert_eq!(Some(&m["epoch"]), epoch.as_ref());
        }
        // No duplicates: the marker published last comes next.
        s.expect_marker("message", &marker).await;
    }
    // Node b has no subscriber of `room`, so its publisher got no message:
    // the next thing it receives is a direct message sent after them.
    publisher.send_to("bob", marker.clone()).await;
    publisher.expect_marker("direct", &marker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_nodes_a_direct_message_reaches_every_connection_of_the_user_only() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", |_| {}).await;
    let b = TestNode::redis(&redis, "node-b", |_| {}).await;
    let c = TestNode::redis(&redis, "node-c", |_| {}).await;
    let mut bob_a = a.connect("bob").await;
    let mut bob_c = c.connect("bob").await;
    let mut bob_c2 = c.connect("bob").await;
    let mut carol = a.connect("carol").await;
    let mut ann = b.connect("ann").await;
    ann.send_to("bob", json!({"task": 7})).await;
    let marker = json!("end");
    ann.send_to("bob", marker.clone()).await;
    ann.send_to("carol", marker.clone()).await;
    for bob in [&mut bob_a, &mut bob_c, &mut bob_c2] {
        let d = bob.expect("direct").await;
        assert_eq!(
            d,
            json!({"type": "direct", "from": "ann", "data": {"task": 7}})
        );
        // Once only.
        bob.expect_marker("direct", &marker).await;
    }
    // Carol got nothing of bob's.
    carol.expect_marker("direct", &marker).await;
}
