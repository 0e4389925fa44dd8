//! The cluster's registries — a user's connections, the node list with
//! live counts — follow connections as they come and go, and a node that
//! dies without a word (SIGKILL) drops out of them by expiry.

use std::time::Duration;

use serde_json::Value;

use crate::support::http::wait_ready;
use crate::support::presence::{configure, heartbeats_since, now_ms, pairs, who};
use crate::support::{eventually_async, spawn_node, temp_dir, Client, RedisServer, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_and_node_list_follow_connections() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", configure).await;
    let b = TestNode::redis(&redis, "node-b", configure).await;
    let bob1 = a.connect("bob").await;
    let mut bob2 = b.connect("bob").await;
    let _ann = b.connect("ann").await;
    bob2.subscribe("chat:x").await;

    let (status, body) = a.api("GET", "/api/users/bob/connections", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        who(&body["connections"]),
        pairs(&[("bob", "node-a"), ("bob", "node-b")])
    );
    let conns: Vec<&Value> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["conn"])
        .collect();
    assert!(conns.contains(&&bob1.welcome["conn"]) && conns.contains(&&bob2.welcome["conn"]));

    // Node records carry live counts (refreshed every heartbeat).
    eventually_async("the node list to show the counts", || async {
        let (status, body) = b.api("GET", "/api/nodes", None).await;
        assert_eq!(status, 200);
        let counts: Vec<(String, u64, u64)> = body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().into(),
                    n["connections"].as_u64().unwrap(),
                    n["subscriptions"].as_u64().unwrap(),
                )
            })
            .collect();
        counts == vec![("node-a".into(), 1, 0), ("node-b".into(), 2, 1)]
    })
    .await;

    // A closed connection leaves the registry.
    bob1.close().await;
    eventually_async("the registry to drop a closed connection", || async {
        let (_, body) = a.api("GET", "/api/users/bob/connections", None).await;
        who(&body["connections"]) == pairs(&[("bob", "node-b")])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_no_stale_presence() {
    const HEARTBEAT_MS: u64 = 500;
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", |s| {
        configure(s);
        s.node_heartbeat = Duration::from_millis(HEARTBEAT_MS);
    })
    .await;

    let config = temp_dir("sb-kill").join("victim.toml");
    std::fs::write(
        &config,
        "[[namespaces]]\nname = \"chat\"\npresence = true\njoin_leave = true\n",
    )
    .unwrap();
    let heartbeat = HEARTBEAT_MS.to_string();
    let mut victim = spawn_node(
        &[
            "--redis-url",
            &redis.url(),
            "--node-id",
            "victim",
            "--node-heartbeat-ms",
            &heartbeat,
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    wait_ready(victim.port(), true).await;
    let mut on_victim = Client::connect(&victim.ws_url("/ws?user=vic")).await;
    on_victim.subscribe("chat:room").await;
    let mut ann = a.connect("ann").await;
    ann.subscribe("chat:room").await;

    let (_, body) = a.api("GET", "/api/presence/chat:room", None).await;
    assert_eq!(
        who(&body["members"]),
        pairs(&[("ann", "node-a"), ("vic", "victim")])
    );
    let (_, body) = a.api("GET", "/api/nodes", None).await;
    let ids: Vec<&str> = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-a", "victim"]);

    // Its entries expire 2.5 heartbeats after its last refresh. The wait
    // is bounded by WAIT (20 heartbeats), not by the expected 1.25 s, so a
    // loaded machine cannot fail it; entries that never expire still do.
    victim.kill();
    eventually_async("the victim's entries to expire", || async {
        let (_, presence) = a.api("GET", "/api/presence/chat:room", None).await;
        let (_, nodes) = a.api("GET", "/api/nodes", None).await;
        let (_, conns) = a.api("GET", "/api/users/vic/connections", None).await;
        who(&presence["members"]) == pairs(&[("ann", "node-a")])
            && nodes["nodes"].as_array().unwrap().len() == 1
            && conns["connections"].as_array().unwrap().is_empty()
    })
    .await;
    // The survivor's own entries are still refreshed: 3 heartbeats (more
    // than their TTL) later, ann is still present.
    heartbeats_since(&a, now_ms() + 3 * HEARTBEAT_MS).await;
    let (_, body) = a.api("GET", "/api/presence/chat:room", None).await;
    assert_eq!(who(&body["members"]), pairs(&[("ann", "node-a")]));
}
