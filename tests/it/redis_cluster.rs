//! Redis Cluster (sharded pub/sub): nodes on a `redis+cluster://` URL, a
//! local cluster of three masters started by the test. A channel's
//! messages are SPUBLISHed on the master of its slot and each node
//! SSUBSCRIBEs there, so the test checks that every master carried
//! traffic, that none of it went over plain (cluster-wide) PUBLISH, and
//! that a channel is subscribed on its own master only. The fault tests
//! (a slot moved under load, a master killed) are in
//! `recovery_faults::cluster`.

use serde_json::json;
use std::collections::BTreeMap;
use switchboard::config::Settings;
use switchboard_fixtures::{slot_of, RedisCluster};

use crate::support::presence::{configure, heartbeats_since, now_ms, pairs, who};
use crate::support::TestNode;

/// A node on the cluster at `url` waiting for `wait_replicas`, with the
/// `feed` namespace, then adjusted by `tweak`.
pub async fn cluster_node(
    url: &str,
    id: &str,
    wait_replicas: usize,
    tweak: impl FnOnce(&mut Settings),
) -> TestNode {
    TestNode::on_redis(url, id, |s| {
        s.redis_wait_replicas = wait_replicas;
        crate::recovery_faults::with_feed(s);
        tweak(s);
    })
    .await
}

/// The pub/sub name of a channel's messages (the default key prefix).
pub fn pubsub_name(channel: &str) -> String {
    format!("sb:{{c.{channel}}}:pub")
}

/// A command's call count in a node's `INFO commandstats` (0 if never called).
fn calls(cluster: &RedisCluster, port: u16, command: &str) -> u64 {
    let stats = cluster
        .cli(port, &["INFO", "commandstats"])
        .expect("INFO commandstats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_redis_cluster_deliver_across_each_other_through_each_shard() {
    let cluster = RedisCluster::try_start(3, 0)
        .await
        .expect("a Redis Cluster");
    let masters = cluster.master_ports().await.expect("masters");
    // Two channels on each master.
    let mut channels: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let channel = format!("feed:room{i}");
        let master = cluster
            .master_of(slot_of(&pubsub_name(&channel)))
            .await
            .expect("the slot's master");
        let on = channels.entry(master).or_default();
        if on.len() < 2 {
            on.push(channel);
        }
        if channels.len() == masters.len() && channels.values().all(|c| c.len() == 2) {
            break;
        }
    }
    let a = cluster_node(&cluster.url(), "node-a", 0, |_| {}).await;
    let b = cluster_node(&cluster.url(), "node-b", 0, |_| {}).await;
    let mut ann = a.connect("ann").await;
    let mut bob = b.connect("bob").await;
    for channel in channels.values().flatten() {
        ann.subscribe(channel).await;
    }
    for (i, channel) in channels.values().flatten().enumerate() {
        let reply = bob.publish(channel, json!(i)).await;
        assert_eq!(reply["offset"], 1, "{reply}");
        let got = ann.expect("message").await;
        assert_eq!(
            (&got["channel"], &got["data"], &got["offset"]),
            (&json!(channel), &json!(i), &json!(1))
        );
    }
    // A direct message travels on the recipient's own slot.
    bob.send_to("ann", json!("hello")).await;
    let direct = ann.expect("direct").await;
    assert_eq!(
        (&direct["from"], &direct["data"]),
        (&json!("bob"), &json!("hello"))
    );
    // History lives on the channel's slot too: read from the other node.
    let first = channels.values().flatten().next().unwrap().clone();
    let history = bob
        .ok(json!({"type": "history", "channel": first, "limit": 10}))
        .await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );

    for (master, on) in &channels {
        assert!(
            calls(&cluster, *master, "spublish") >= 2,
            "master {master} carried no SPUBLISH"
        );
        assert_eq!(
            calls(&cluster, *master, "publish"),
            0,
            "master {master} got a cluster-wide PUBLISH"
        );
        // Each channel is subscribed on its own master, by node-a only.
        for channel in on {
            let numsub = cluster
                .cli(*master, &["PUBSUB", "SHARDNUMSUB", &pubsub_name(channel)])
                .expect("PUBSUB SHARDNUMSUB");
            assert_eq!(
                numsub.lines().nth(1),
                Some("1"),
                "{channel} on {master}: {numsub}"
            );
        }
    }
}

/// Presence and the connection registry on a cluster: each channel's
/// presence on its own slot, refreshed by the nodes' heartbeats, which
/// write sets of many slots at once (one command each, not one pipeline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_kept_and_refreshed_across_shards() {
    let cluster = RedisCluster::try_start(3, 0)
        .await
        .expect("a Redis Cluster");
    let a = cluster_node(&cluster.url(), "node-a", 0, configure).await;
    let b = cluster_node(&cluster.url(), "node-b", 0, configure).await;
    // Rooms on every master.
    let rooms: Vec<String> = (0..12).map(|i| format!("chat:{i}")).collect();
    let mut masters = std::collections::BTreeSet::new();
    for room in &rooms {
        masters.insert(
            cluster
                .master_of(slot_of(&pubsub_name(room)))
                .await
                .unwrap(),
        );
    }
    assert_eq!(masters.len(), 3, "the rooms span every master");
    let mut ann = a.connect("ann").await;
    let mut bob = b.connect("bob").await;
    for room in &rooms {
        ann.subscribe(room).await;
        assert_eq!(ann.expect("join").await["user"], "ann");
        bob.subscribe(room).await;
        assert_eq!(ann.expect("join").await["user"], "bob");
        assert_eq!(bob.expect("join").await["user"], "bob");
    }
    let joined = now_ms();
    // Past several entry TTLs, every room still lists both: the refreshes
    // reached every shard.
    heartbeats_since(&a, joined + 1200).await;
    heartbeats_since(&b, joined + 1200).await;
    let both = pairs(&[("ann", "node-a"), ("bob", "node-b")]);
    for room in &rooms {
        let members = ann.ok(json!({"type": "presence", "channel": room})).await;
        assert_eq!(who(&members["members"]), both, "{room}");
    }
    // The registry (the users' own slots) across nodes, through the API.
    let (status, body) = a.api("GET", "/api/users/bob/connections", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(who(&body["connections"]), pairs(&[("bob", "node-b")]));
    // A leave, on the room's own slot.
    bob.unsubscribe(&rooms[0]).await;
    assert_eq!(ann.expect("leave").await["user"], "bob");
}
