//! Redis restarts mid-stream, with and without persistence, under
//! in-process nodes.

use crate::support::recovery::{verify, Ledger, Publisher, Receiver, ReceiverLog, Resync};
use crate::support::{temp_dir, RedisServer, TestNode};

const CHANNEL: &str = "feed:outage";

async fn node(redis: &RedisServer, id: &str) -> TestNode {
    TestNode::redis(redis, id, super::with_feed).await
}

/// Publish through node `a` to subscribers on `a` and `b` (one of which
/// reconnects during the outage) while Redis is killed and restarted.
async fn through_a_redis_restart(redis: &mut RedisServer) -> (Ledger, Vec<ReceiverLog>) {
    let a = node(redis, "node-a").await;
    let b = node(redis, "node-b").await;
    let urls = |name: &str| vec![b.ws_url(name), a.ws_url(name)];
    let receivers = vec![
        Receiver::start("on-a", vec![a.ws_url("on-a"), b.ws_url("on-a")], CHANNEL).await,
        Receiver::start("on-b", urls("on-b"), CHANNEL).await,
        Receiver::start("bounced", urls("bounced"), CHANNEL).await,
    ];
    let ledger = Ledger::default();
    let publisher = Publisher::start(vec![a.ws_url("publisher")], CHANNEL, 0, &ledger);
    ledger.wait_for(200).await;

    redis.kill();
    a.wait_ready(false).await;
    b.wait_ready(false).await;
    // A client that loses its connection now comes back while Redis is
    // down: its subscribe is refused until Redis is back.
    receivers[2].bounce();
    redis.restart().await;
    a.wait_ready(true).await;
    b.wait_ready(true).await;
    ledger.wait_more(300).await;

    let logs = super::finish(publisher, &ledger, receivers, &b).await;
    assert_eq!(logs[2].reconnects, 1, "the bounced client reconnected once");
    (ledger, logs)
}

/// The epochs of the ledger, in order.
fn epochs(ledger: &Ledger) -> Vec<String> {
    let mut epochs: Vec<String> = Vec::new();
    for a in ledger.snapshot() {
        if epochs.last() != Some(&a.epoch) {
            epochs.push(a.epoch);
        }
    }
    epochs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_redis_restart_loses_nothing() {
    let dir = temp_dir("sb-faults-aof");
    // A fresh file: nothing from an earlier run may be reloaded.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the AOF folder");
    let mut redis = RedisServer::start_persistent(dir).await;
    let (ledger, logs) = through_a_redis_restart(&mut redis).await;

    assert_eq!(epochs(&ledger).len(), 1, "the epoch survived the restart");
    verify(&ledger.snapshot(), &logs, Resync::Never);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_tells_clients_to_resync() {
    let mut redis = RedisServer::start().await;
    let (ledger, logs) = through_a_redis_restart(&mut redis).await;

    assert_eq!(epochs(&ledger).len(), 2, "a new epoch after the restart");
    verify(&ledger.snapshot(), &logs, Resync::Covers);
    for log in &logs {
        assert!(
            !log.notices().is_empty(),
            "{} was never told that the channel was reset",
            log.name
        );
    }
}
