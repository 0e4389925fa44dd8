//! Recovery on subscribe: `subscribe {since}` delivers what the client
//! missed, then live messages, with no gap and no duplicate — even while a
//! publisher keeps publishing during the subscribe — or answers
//! `recovered: false` when it cannot (position older than the history,
//! another epoch), so the client knows to resync.

use serde_json::{json, Value};
use switchboard::config::{NamespaceOptions, Settings};

use crate::support::{Client, RedisServer, TestNode};

/// Channels without a namespace keep their last 50 messages.
fn with_history(s: &mut Settings) {
    s.default_namespace = NamespaceOptions {
        history_size: 50,
        ..NamespaceOptions::default()
    };
}

fn since(offset: u64, epoch: &Value) -> Value {
    json!({"offset": offset, "epoch": epoch})
}

/// Read `message` frames of `channel` until offset `upto`, checking each
/// follows the one before.
async fn read_through(c: &mut Client, channel: &str, mut last: u64, upto: u64) {
    while last < upto {
        let m = c.expect("message").await;
        assert_eq!(m["channel"], channel, "{m}");
        assert_eq!(
            m["offset"].as_u64(),
            Some(last + 1),
            "gap or duplicate: {m}"
        );
        last += 1;
    }
}

async fn missed_messages_come_back_in_order(a: &TestNode, b: &TestNode) {
    let mut publisher = b.connect("pub").await;
    let mut sub = a.connect("sub").await;
    let reply = sub
        .ok(json!({"type": "subscribe", "channel": "news"}))
        .await;
    let epoch = reply["epoch"].clone();
    assert_eq!(reply["offset"], 0, "{reply}");
    for n in 1..=3 {
        publisher.publish("news", json!(n)).await;
    }
    read_through(&mut sub, "news", 0, 3).await;
    sub.close().await;

    // Missed while away: 4..=10.
    for n in 4..=10 {
        publisher.publish("news", json!(n)).await;
    }
    let mut back = a.connect("sub").await;
    // A publisher keeps going while the subscription recovers: each live
    // message must come once, after the recovered ones.
    let flood = tokio::spawn(async move {
        for n in 11..=40 {
            publisher.publish("news", json!(n)).await;
        }
        publisher
    });
    let reply = back
        .ok(json!({"type": "subscribe", "channel": "news", "since": since(3, &epoch)}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["epoch"], epoch);
    let mut publisher = flood.await.unwrap();
    read_through(&mut back, "news", 3, 40).await;
    let marker = json!("marker");
    publisher.publish("news", marker.clone()).await;
    back.expect_marker("message", &marker).await;

    // Nothing missed: recovered, and nothing replayed.
    let at = publisher.publish("news", json!("at")).await;
    let mut third = a.connect("third").await;
    let top = at["offset"].as_u64().unwrap();
    let reply = third
        .ok(json!({"type": "subscribe", "channel": "news", "since": since(top, &epoch)}))
        .await;
    assert_eq!(
        (reply["recovered"].as_bool(), reply["offset"].as_u64()),
        (Some(true), Some(top))
    );
    publisher.publish("news", marker.clone()).await;
    third.expect_marker("message", &marker).await;
}

async fn unrecoverable_positions_are_said_so(node: &TestNode) {
    let mut publisher = node.connect("pub").await;
    let first = publisher.publish("old", json!(0)).await;
    let epoch = first["epoch"].clone();
    for n in 1..=60 {
        publisher.publish("old", json!(n)).await;
    }
    let marker = json!("marker");
    for (position, why) in [
        (since(1, &epoch), "older than the 50 kept"),
        (since(61, &json!("another")), "another epoch"),
        (since(1000, &epoch), "a position from the future"),
    ] {
        let mut c = node.connect("late").await;
        let reply = c
            .ok(json!({"type": "subscribe", "channel": "old", "since": position}))
            .await;
        assert_eq!(reply["recovered"], false, "{why}: {reply}");
        // Live messages still follow, and nothing was replayed before them.
        publisher.publish("old", marker.clone()).await;
        c.expect_marker("message", &marker).await;
    }
    // A namespace without history recovers only when nothing was missed.
    let mut plain = node.connect("plain").await;
    let reply = plain
        .ok(json!({"type": "subscribe", "channel": "log:x", "since": since(5, &epoch)}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
}

fn with_history_and_plain(s: &mut Settings) {
    with_history(s);
    s.namespaces = vec![switchboard::config::Namespace {
        name: "log".into(),
        options: NamespaceOptions::default(),
    }];
}

#[tokio::test]
async fn recovery_in_memory() {
    let node = TestNode::memory(with_history).await;
    missed_messages_come_back_in_order(&node, &node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_across_redis_nodes() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", with_history).await;
    let b = TestNode::redis(&redis, "node-b", with_history).await;
    missed_messages_come_back_in_order(&a, &b).await;
}

#[tokio::test]
async fn unrecoverable_in_memory() {
    let node = TestNode::memory(with_history_and_plain).await;
    unrecoverable_positions_are_said_so(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecoverable_in_redis() {
    let redis = RedisServer::start().await;
    let node = TestNode::redis(&redis, "node-a", with_history_and_plain).await;
    unrecoverable_positions_are_said_so(&node).await;
}

/// Node A, with history and plain namespaces, logged in to Redis as its
/// own ACL user `node-a`, so that it can be cut off alone.
async fn node_with_its_own_redis_user(redis: &RedisServer) -> TestNode {
    let _: String = redis
        .query(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("node-a")
                .arg(&["on", ">pw", "~*", "&*", "+@all"][..]),
        )
        .await;
    TestNode::redis(redis, "node-a", |s| {
        with_history_and_plain(s);
        s.redis_url = Some(format!("redis://node-a:pw@127.0.0.1:{}", redis.port()));
    })
    .await
}

/// Turn node A's Redis user `on`, or `off` and drop its connections, so
/// that it cannot come back until turned on again.
async fn set_node_a_user(redis: &RedisServer, state: &str) {
    let _: String = redis
        .query(redis::cmd("ACL").arg("SETUSER").arg("node-a").arg(state))
        .await;
    if state == "off" {
        let _: u64 = redis
            .query(redis::cmd("CLIENT").arg(&["KILL", "USER", "node-a"][..]))
            .await;
    }
}

/// A node cut off from Redis while others publish — its subscriber
/// connection killed and its Redis user disabled, so it cannot come back
/// until allowed — catches up by itself when it reconnects: its connected
/// client gets every message it missed, in order, once, without doing
/// anything. On a channel without history the client is told to resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_an_outage_repairs_the_gap_for_its_clients() {
    let redis = RedisServer::start().await;
    let a = node_with_its_own_redis_user(&redis).await;
    let b = TestNode::redis(&redis, "node-b", with_history_and_plain).await;
    let mut sub = a.connect("sub").await;
    sub.subscribe("feed").await;
    sub.subscribe("log:plain").await;
    let mut publisher = b.connect("pub").await;
    for n in 1..=5 {
        publisher.publish("feed", json!(n)).await;
    }
    read_through(&mut sub, "feed", 0, 5).await;

    // Cut node A off: it cannot reconnect while its user is disabled.
    set_node_a_user(&redis, "off").await;
    a.wait_ready(false).await;
    for n in 6..=25 {
        publisher.publish("feed", json!(n)).await;
    }
    publisher.publish("log:plain", json!("missed")).await;
    set_node_a_user(&redis, "on").await;
    a.wait_ready(true).await;

    // Everything missed on `feed`, in order, once; and since `log:` keeps
    // no history, its loss is announced, never silent. (The two channels
    // catch up one after the other, in either order.)
    let (mut last, mut resyncs) = (5, 0);
    while last < 25 || resyncs == 0 {
        let f = sub.next_frame().await;
        match f["type"].as_str() {
            Some("message") => {
                assert_eq!(f["channel"], "feed", "{f}");
                assert_eq!(
                    f["offset"].as_u64(),
                    Some(last + 1),
                    "gap or duplicate: {f}"
                );
                last += 1;
            }
            Some("resync") => {
                assert_eq!(
                    (&f["channel"], &f["reason"]),
                    (&json!("log:plain"), &json!("history_gap"))
                );
                resyncs += 1;
            }
            _ => panic!("unexpected {f}"),
        }
    }
    assert_eq!(a.counter(|m| &m.gap_repairs), 20);
    let marker = json!("marker");
    publisher.publish("feed", marker.clone()).await;
    sub.expect_marker("message", &marker).await;
    publisher.publish("log:plain", marker.clone()).await;
    sub.expect_marker("message", &marker).await;
}

/// When a node comes back to a Redis whose channel stands behind what the
/// node delivered — what a Sentinel failover to a replica that lacked the
/// newest (unacknowledged) messages leaves; here the offset is wound back
/// by hand while the node is cut off — its clients are told `rewound`,
/// and the publishes that reuse those offsets are delivered, not dropped
/// as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_redis_wound_back_is_announced_and_goes_on() {
    let redis = RedisServer::start().await;
    let a = node_with_its_own_redis_user(&redis).await;
    let b = TestNode::redis(&redis, "node-b", with_history_and_plain).await;
    let mut sub = a.connect("sub").await;
    sub.subscribe("log:wound").await;
    let mut publisher = b.connect("pub").await;
    for n in 1..=5 {
        publisher.publish("log:wound", json!(n)).await;
    }
    for n in 1..=5 {
        assert_eq!(sub.expect("message").await["offset"], n);
    }
    set_node_a_user(&redis, "off").await;
    a.wait_ready(false).await;
    let meta = format!("{}:{{c.log:wound}}:meta", a.gateway.settings().key_prefix);
    let _: u64 = redis
        .query(redis::cmd("HSET").arg(&meta).arg("o").arg(3))
        .await;
    set_node_a_user(&redis, "on").await;
    a.wait_ready(true).await;

    let notice = sub.next_frame().await;
    assert_eq!(notice["type"], "resync", "{notice}");
    assert_eq!(notice["reason"], "rewound");
    let reply = publisher.publish("log:wound", json!("after")).await;
    assert_eq!(reply["offset"], 4);
    let next = sub.expect("message").await;
    assert_eq!(
        (next["offset"].as_u64(), &next["data"]),
        (Some(4), &json!("after"))
    );
}
