//! Several nodes fanning out through a real `redis-server`: cross-node
//! delivery, direct messages, unsubscribe, Redis outages and slow consumers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{counter, eventually, Ended, RedisServer, TestNode, WAIT};
use serde_json::json;

async fn pubsub_channels(redis: &RedisServer) -> Vec<String> {
    redis.query(redis::cmd("PUBSUB").arg("CHANNELS")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_node_receives_what_another_node_publishes_exactly_once() {
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
    for s in [&mut on_a, &mut on_c, &mut also_a] {
        for n in 1..=20 {
            let m = s.expect("message").await;
            assert_eq!(m["data"], json!({"n": n}), "in order, no gaps");
            assert_eq!(m["offset"], n);
            assert_eq!(m["from"], "bob");
            assert_eq!(Some(&m["epoch"]), epoch.as_ref());
        }
        // No duplicates.
        s.expect_silence(Duration::from_millis(200)).await;
    }
    // Node b has no subscriber of `room`, so its publisher got no message.
    publisher.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_every_connection_of_a_user_across_nodes() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", |_| {}).await;
    let b = TestNode::redis(&redis, "node-b", |_| {}).await;
    let c = TestNode::redis(&redis, "node-c", |_| {}).await;
    let mut bob_a = a.connect("bob").await;
    let mut bob_c = c.connect("bob").await;
    let mut bob_c2 = c.connect("bob").await;
    let mut carol = a.connect("carol").await;
    let mut ann = b.connect("ann").await;
    ann.ok(json!({"type": "send", "user": "bob", "data": {"task": 7}}))
        .await;
    for bob in [&mut bob_a, &mut bob_c, &mut bob_c2] {
        let d = bob.expect("direct").await;
        assert_eq!(
            d,
            json!({"type": "direct", "from": "ann", "data": {"task": 7}})
        );
        bob.expect_silence(Duration::from_millis(100)).await;
    }
    carol.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_and_releases_the_redis_subscription() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", |_| {}).await;
    let b = TestNode::redis(&redis, "node-b", |_| {}).await;
    let mut sub = a.connect("sub").await;
    let mut publisher = b.connect("pub").await;
    sub.subscribe("feed").await;
    assert!(pubsub_channels(&redis)
        .await
        .contains(&"sb:{c.feed}:pub".to_owned()));
    publisher.publish("feed", json!(1)).await;
    sub.expect("message").await;

    sub.ok(json!({"type": "unsubscribe", "channel": "feed"}))
        .await;
    publisher.publish("feed", json!(2)).await;
    sub.expect_silence(Duration::from_millis(300)).await;
    // After the unsubscribe delay the node leaves the Redis channel.
    let deadline = tokio::time::Instant::now() + WAIT;
    while pubsub_channels(&redis)
        .await
        .contains(&"sb:{c.feed}:pub".to_owned())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node kept the Redis subscription"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Subscribing again works.
    sub.subscribe("feed").await;
    publisher.publish("feed", json!(3)).await;
    assert_eq!(sub.expect("message").await["data"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_survive_a_redis_restart_and_resume_delivery() {
    let mut redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", |_| {}).await;
    let b = TestNode::redis(&redis, "node-b", |_| {}).await;
    let mut sub = a.connect("sub").await;
    let mut bob = a.connect("bob").await;
    let mut publisher = b.connect("pub").await;
    sub.subscribe("jobs").await;
    publisher.publish("jobs", json!("before")).await;
    assert_eq!(sub.expect("message").await["data"], "before");

    redis.kill();
    a.wait_ready(false).await;
    b.wait_ready(false).await;
    // Publishing and sending during the outage: a prompt error, never silence.
    for frame in [
        json!({"type": "publish", "channel": "jobs", "data": "lost"}),
        json!({"type": "send", "user": "bob", "data": "lost"}),
    ] {
        let r = publisher.request(frame.clone()).await;
        assert_eq!(r["error"]["code"], "broker_unavailable", "{frame} -> {r}");
    }
    // A new subscription cannot be confirmed either; the client is told.
    let r = publisher
        .request(json!({"type": "subscribe", "channel": "other"}))
        .await;
    assert_eq!(r["error"]["code"], "broker_unavailable", "{r}");
    // The nodes keep serving their clients meanwhile.
    assert_eq!(sub.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(a.http_get("/healthz").await.0, 200);

    redis.restart().await;
    a.wait_ready(true).await;
    b.wait_ready(true).await;
    // Existing subscriptions (channel and direct inbox) are back without the
    // clients doing anything. The pool may still hold a dead connection for
    // the first attempt, so retry the publish until it is accepted.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = publisher
            .request(json!({"type": "publish", "channel": "jobs", "data": "after"}))
            .await;
        if r["ok"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publish never recovered: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = sub.expect("message").await;
    assert_eq!(m["data"], "after");
    sub.expect_silence(Duration::from_millis(100)).await;
    publisher
        .ok(json!({"type": "send", "user": "bob", "data": "hello again"}))
        .await;
    assert_eq!(bob.expect("direct").await["data"], "hello again");
    assert!(counter(&a.gateway, |m| &m.redis_reconnects) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_while_others_keep_receiving() {
    let redis = RedisServer::start().await;
    let tweak = |s: &mut switchboard::config::Settings| {
        s.outbox_capacity = 16;
        s.heartbeat_timeout = Duration::from_secs(60);
    };
    let a = TestNode::redis(&redis, "node-a", tweak).await;
    let b = TestNode::redis(&redis, "node-b", tweak).await;
    let mut stuck = a.connect("stuck").await;
    let mut fast = a.connect("fast").await;
    stuck.subscribe("firehose").await;
    fast.subscribe("firehose").await;

    // ~24 MB: more than the kernel's socket buffers hold for a client that
    // never reads, so the stuck client's outbox must fill.
    const N: u64 = 3000;
    // The publisher stays at most LEAD messages ahead of the fast reader, so
    // the fast client's outbox (16) cannot fill however loaded the machine.
    const LEAD: usize = 8;
    let credit = Arc::new(tokio::sync::Semaphore::new(LEAD));
    let payload = "z".repeat(8 * 1024);
    let returned = credit.clone();
    let reader = tokio::spawn(async move {
        for n in 1..=N {
            let m = fast.expect("message").await;
            assert_eq!(
                m["offset"], n,
                "the fast client lost or reordered a message"
            );
            returned.add_permits(1);
        }
        fast
    });
    let mut publisher = b.connect("pub").await;
    for n in 0..N {
        credit.acquire().await.expect("semaphore open").forget();
        publisher
            .publish("firehose", json!({"n": n, "pad": payload}))
            .await;
    }
    let mut fast = reader.await.expect("fast client received everything");
    eventually("slow consumer close", || {
        counter(&a.gateway, |m| &m.slow_consumer_closes) == 1
    })
    .await;
    // The stuck client finds its connection closed once it reads again.
    let ended = stuck.ended().await;
    assert!(
        matches!(ended, Ended::Close(3002) | Ended::Dropped),
        "{ended:?}"
    );
    // The node and its Redis reader are fine.
    publisher.publish("firehose", json!("after")).await;
    assert_eq!(fast.expect("message").await["data"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_redis_becomes_ready_when_redis_comes_up() {
    let mut redis = RedisServer::not_started();
    let mut settings = switchboard::config::Settings::for_tests();
    settings.redis_url = Some(redis.url());
    settings.node_id = "early".into();
    settings.redis_timeout = Duration::from_millis(300);
    let node = TestNode::start(settings).await;
    assert_eq!(node.http_get("/healthz").await.0, 200);
    assert_eq!(
        node.http_get("/readyz").await,
        (503, "broker unreachable\n".to_owned())
    );
    // Clients may connect meanwhile; publishing fails with a clear error.
    let mut early = node.connect("early-bird").await;
    let r = early
        .request(json!({"type": "publish", "channel": "c", "data": 1}))
        .await;
    assert_eq!(r["error"]["code"], "broker_unavailable");

    redis.restart().await;
    node.wait_ready(true).await;
    let other = TestNode::redis(&redis, "other", |_| {}).await;
    let mut sender = other.connect("sender").await;
    // The early client's direct inbox was subscribed once Redis came up.
    sender
        .ok(json!({"type": "send", "user": "early-bird", "data": "welcome"}))
        .await;
    assert_eq!(early.expect("direct").await["data"], "welcome");
    early.subscribe("c").await;
    sender.publish("c", json!(2)).await;
    assert_eq!(early.expect("message").await["data"], 2);
}
