//! Redis Cluster under faults: three masters with a replica each, two
//! nodes on a `redis+cluster://` URL, the fault-test publisher on one
//! channel and a receiver on each node. Every acknowledged message must
//! reach both receivers once, in order.

use std::time::Duration;

use serde_json::json;
use switchboard_fixtures::{slot_of, RedisCluster};

use crate::redis_cluster::{cluster_node, pubsub_name};
use crate::support::recovery::{verify, Ledger, Publisher, Receiver, Resync};
use crate::support::{eventually_async, TestNode};

const CHANNEL: &str = "feed:sharded";

/// How long a failover may take on a loaded machine (node timeout 1 s).
const FAILOVER: Duration = Duration::from_secs(30);

/// The cluster, its two nodes and the load on `CHANNEL`.
struct Loaded {
    cluster: RedisCluster,
    a: TestNode,
    b: TestNode,
    ledger: Ledger,
    publisher: Publisher,
    receivers: Vec<Receiver>,
}

async fn loaded() -> Loaded {
    let cluster = RedisCluster::try_start(3, 1)
        .await
        .expect("a Redis Cluster");
    // WAIT 1: an `ok` means the channel's replica has the message too.
    let a = cluster_node(&cluster.url(), "node-a", 1, |_| {}).await;
    let b = cluster_node(&cluster.url(), "node-b", 1, |_| {}).await;
    let (ledger, publisher, receivers) = super::load(&a, &b, CHANNEL).await;
    Loaded {
        cluster,
        a,
        b,
        ledger,
        publisher,
        receivers,
    }
}

/// How many nodes subscribe to `CHANNEL` on the master at `port`.
fn subscribers_on(cluster: &RedisCluster, port: u16) -> usize {
    cluster
        .cli(port, &["PUBSUB", "SHARDNUMSUB", &pubsub_name(CHANNEL)])
        .ok()
        .and_then(|out| out.lines().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resharding: the channel's slot is migrated to another master while it
/// is published to — keys moved with MIGRATE while the publisher writes,
/// then the slot handed over. The old master pushes `sunsubscribe` to
/// the nodes, which subscribe on the new one and catch up from history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_under_load_loses_nothing() {
    let Loaded {
        cluster,
        a,
        b,
        ledger,
        publisher,
        receivers,
    } = loaded().await;
    let slot = slot_of(&pubsub_name(CHANNEL));
    let from = cluster.master_of(slot).await.expect("the slot's master");
    assert_eq!(subscribers_on(&cluster, from), 2);
    let to = cluster
        .master_ports()
        .await
        .expect("masters")
        .into_iter()
        .find(|p| *p != from)
        .expect("another master");

    let migration = cluster.begin_migration(slot, to).await.expect("begin");
    // A few keys at a time, with publishes in between.
    while cluster.move_keys(&migration, 1).await.expect("MIGRATE") > 0 {}
    cluster.finish_migration(&migration).await.expect("finish");
    assert_eq!(cluster.master_of(slot).await.expect("master"), to);
    eventually_async("both nodes subscribe on the new master", || async {
        subscribers_on(&cluster, to) == 2
    })
    .await;
    ledger.wait_more(200).await;

    let stats = publisher.stop().await;
    let last = ledger.snapshot().last().cloned().expect("acknowledged");
    let mut logs = Vec::new();
    for r in receivers {
        logs.push(r.finish(&last).await);
    }
    eprintln!(
        "{} acknowledged across the move; publisher {stats:?}; gap repairs {} + {}",
        ledger.len(),
        a.counter(|m| &m.gap_repairs),
        b.counter(|m| &m.gap_repairs)
    );
    assert_eq!(subscribers_on(&cluster, from), 0, "still on the old master");
    verify(&ledger.snapshot(), &logs, Resync::Never);
}

/// Failover: the channel's master is killed (SIGKILL) mid-stream; its
/// replica takes over, the nodes find it and resubscribe there. Publishes
/// meanwhile are refused (`broker_unavailable`); the killed master comes
/// back as the new master's replica, so WAIT 1 is met again. Channels of
/// the other shards are published to and delivered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_loses_nothing_acknowledged() {
    let Loaded {
        mut cluster,
        a: _a,
        b,
        ledger,
        publisher,
        receivers,
    } = loaded().await;
    let slot = slot_of(&pubsub_name(CHANNEL));
    let old = cluster.master_of(slot).await.expect("the slot's master");
    // A channel on another shard, with a subscriber on node-b.
    let mut other = None;
    for i in 0.. {
        let channel = format!("feed:elsewhere{i}");
        let master = cluster.master_of(slot_of(&pubsub_name(&channel))).await;
        if master.expect("a master") != old {
            other = Some(channel);
            break;
        }
    }
    let other = other.unwrap();
    let mut carol = b.connect("carol").await;
    carol.subscribe(&other).await;

    cluster.kill(old);
    // node-b noticed: it is not ready while CHANNEL's shard fails over...
    b.wait_ready(false).await;
    // ...yet the other shard's channels go on.
    let reply = carol.publish(&other, json!("meanwhile")).await;
    assert_eq!(reply["offset"], 1, "{reply}");
    assert_eq!(carol.expect("message").await["data"], "meanwhile");
    let new = cluster
        .wait_master_changed(slot, old, FAILOVER)
        .await
        .expect("a replica takes over");
    cluster
        .restart(old)
        .await
        .expect("the old master comes back");
    eventually_async("both nodes subscribe on the new master", || async {
        subscribers_on(&cluster, new) == 2
    })
    .await;
    ledger.wait_more(200).await;

    let logs = super::finish(publisher, &ledger, receivers, &b).await;
    verify(&ledger.snapshot(), &logs, Resync::Never);
}
