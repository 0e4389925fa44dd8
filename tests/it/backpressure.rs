//! A client that stops reading is closed once its outbox fills; the
//! others on the node keep receiving everything.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::{eventually, Ended, RedisServer, TestNode};

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
        a.counter(|m| &m.slow_consumer_closes) == 1
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
