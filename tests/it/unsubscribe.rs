//! `unsubscribe`: no delivery after its reply, the Redis subscription
//! released after the delay, and a resubscription live at its reply even
//! while the old Redis subscription is being torn down.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard::config::Settings;

use crate::support::{eventually_async, Client, RedisServer, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_on_one_node() {
    let node = TestNode::memory(|_| {}).await;
    let mut sub = node.connect("sub").await;
    let mut publisher = node.connect("pub").await;
    sub.subscribe("c").await;
    publisher.publish("c", json!(1)).await;
    sub.expect("message").await;
    sub.unsubscribe("c").await;
    publisher.publish("c", json!(2)).await;
    let marker = json!("after 2");
    publisher.send_to("sub", marker.clone()).await;
    sub.expect_marker("direct", &marker).await;
}

async fn pubsub_channels(redis: &RedisServer) -> Vec<String> {
    redis.query(redis::cmd("PUBSUB").arg("CHANNELS")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_across_nodes_and_releases_the_redis_subscription() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", |_| {}).await;
    let b = TestNode::redis(&redis, "node-b", |_| {}).await;
    let mut sub = a.connect("sub").await;
    let mut publisher = b.connect("pub").await;
    sub.subscribe("feed").await;
    sub.subscribe("markers").await;
    let feed = "sb:{c.feed}:pub".to_owned();
    assert!(pubsub_channels(&redis).await.contains(&feed));
    publisher.publish("feed", json!(1)).await;
    sub.expect("message").await;

    sub.unsubscribe("feed").await;
    publisher.publish("feed", json!(2)).await;
    let marker = json!("after 2");
    publisher.publish("markers", marker.clone()).await;
    sub.expect_marker("message", &marker).await;
    // After the unsubscribe delay the node leaves the Redis channel.
    eventually_async("the node to leave the Redis channel", || async {
        !pubsub_channels(&redis).await.contains(&feed)
    })
    .await;
    // Subscribing again works.
    sub.subscribe("feed").await;
    publisher.publish("feed", json!(3)).await;
    assert_eq!(sub.expect("message").await["data"], 3);
}

/// Read messages until the one carrying `marker`.
async fn until_marker(client: &mut Client, kind: &str, marker: &Value) {
    loop {
        if client.expect(kind).await["data"] == *marker {
            return;
        }
    }
}

/// A `subscribe` reply means delivery is live, also when the channel's
/// last local subscriber has just left and its Redis subscription is being
/// torn down (unsubscribe_delay 0 makes that happen every time); the same
/// for a user's direct inbox when the user reconnects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_while_the_redis_subscription_is_torn_down_is_live_at_the_reply() {
    let redis = RedisServer::start().await;
    let zero_delay = |s: &mut Settings| s.unsubscribe_delay = Duration::ZERO;
    let a = TestNode::redis(&redis, "node-a", zero_delay).await;
    let b = TestNode::redis(&redis, "node-b", zero_delay).await;
    let mut sub = a.connect("sub").await;
    let mut publisher = b.connect("pub").await;
    sub.subscribe("jobs").await;
    for trial in 0..100 {
        sub.unsubscribe("jobs").await;
        sub.subscribe("jobs").await;
        // Published after the reply: it must arrive.
        let marker = json!(format!("after-ok-{trial}"));
        publisher.publish("jobs", marker.clone()).await;
        until_marker(&mut sub, "message", &marker).await;
    }
    for trial in 0..50 {
        a.connect("dee").await.close().await;
        // The welcome comes after the inbox is subscribed.
        let mut dee = a.connect("dee").await;
        let marker = json!(format!("direct-{trial}"));
        publisher.send_to("dee", marker.clone()).await;
        until_marker(&mut dee, "direct", &marker).await;
        dee.close().await;
    }
}

/// No message of a channel arrives after its `unsubscribe` reply, even
/// with a publisher every 0.5 ms: replies wait behind queued deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delivery_follows_the_unsubscribe_reply() {
    let node = TestNode::memory(|_| {}).await;
    let mut sub = node.connect("sub").await;
    let mut publisher = node.connect("pub").await;
    let mut marker_publisher = node.connect("marker").await;
    sub.subscribe("markers").await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let flood = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(500));
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                // Read the replies so the publisher's socket never fills.
                _ = publisher.next_frame() => {}
                _ = tick.tick() => {
                    publisher
                        .send_json(&json!({"type": "publish", "channel": "jobs", "data": "x"}))
                        .await;
                }
            }
        }
    });
    for trial in 0..100 {
        sub.subscribe("jobs").await;
        // Wait until deliveries are flowing, then unsubscribe mid-stream.
        until_marker(&mut sub, "message", &json!("x")).await;
        sub.unsubscribe("jobs").await;
        sub.take_pending(); // deliveries before the reply are fine
                            // Anything queued before the reply came before it; the marker is
                            // queued after any late delivery, so it ends the window.
        let marker = json!(format!("end-{trial}"));
        marker_publisher.publish("markers", marker.clone()).await;
        loop {
            let m = sub.expect("message").await;
            assert_eq!(
                m["channel"], "markers",
                "trial {trial}: {m} after the unsubscribe reply"
            );
            if m["data"] == marker {
                break;
            }
        }
    }
    let _ = stop.send(());
    flood.await.unwrap();
}
