//! Graceful shutdown: draining turns `/readyz` 503, closes clients with
//! 3001 and exits 0 (on SIGTERM for the real binary); a node that leaves
//! takes its record, connections and presence out of the cluster at once.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard::config::{Namespace, NamespaceOptions};

use crate::support::http::wait_ready;
use crate::support::{
    eventually_async, spawn_node, temp_dir, Client, Ended, RedisServer, TestNode, API_KEY,
};

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

/// With `drain_spread`, the closes come in batches over the window: when
/// the first client is closed, most of the others are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_drain_closes_clients_in_batches() {
    let node = TestNode::memory(|s| s.drain_spread = Duration::from_millis(2000)).await;
    let mut clients = Vec::new();
    for n in 0..40 {
        clients.push(node.connect(&format!("u{n}")).await);
    }
    let drainer = node.drainer.clone();
    let draining = tokio::spawn(async move { drainer.drain().await });
    // Any command with a reply will do as a probe.
    let probe = || json!({"type": "unsubscribe", "channel": "probe"});
    let mut ends: Vec<Option<Ended>> = vec![None; clients.len()];
    // Ask every client in turn until one finds itself closed: the first batch.
    while ends.iter().all(Option::is_none) {
        for (n, c) in clients.iter_mut().enumerate() {
            if let Err(end) = c.try_request(probe()).await {
                ends[n] = Some(end);
                break;
            }
        }
    }
    // Most of the others are still served.
    let mut still_open = 0;
    for (n, c) in clients.iter_mut().enumerate() {
        if ends[n].is_none() {
            match c.try_request(probe()).await {
                Ok(_) => still_open += 1,
                Err(end) => ends[n] = Some(end),
            }
        }
    }
    assert!(
        still_open >= 20,
        "only {still_open} of 39 still open after the first close"
    );
    // And every one is closed with 3001 in the end.
    for (c, end) in clients.iter_mut().zip(ends) {
        let end = match end {
            Some(end) => end,
            None => c.ended().await,
        };
        assert_eq!(end, Ended::Close(3001));
    }
    draining.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_with_the_shutdown_code_and_exits_cleanly() {
    let mut node = spawn_node(&["--drain-delay-ms", "200"], &[]);
    node.wait_listening().await;
    let mut a = Client::connect(&node.ws_url("/ws?user=a")).await;
    let mut b = Client::connect(&node.ws_url("/")).await;
    a.subscribe("x").await;
    node.signal("-TERM");
    // While draining, readiness fails so a load balancer stops routing here.
    wait_ready(node.port(), false).await;
    assert_eq!(a.ended().await, Ended::Close(3001));
    assert_eq!(b.ended().await, Ended::Close(3001));
    let status = node.wait_exit().await;
    assert!(status.success(), "exit status {status:?}");
}

/// Ids of `/api/nodes`, conn ids of `/api/users/<user>/connections` and of
/// `/api/presence/<channel>`, as `node` answers them.
async fn listed(node: &TestNode, user: &str, channel: &str) -> [Vec<String>; 3] {
    let ids = |v: &Value, list: &str, field: &str| -> Vec<String> {
        v[list]
            .as_array()
            .unwrap_or_else(|| panic!("no {list} in {v}"))
            .iter()
            .map(|e| e[field].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, nodes) = node.api("GET", "/api/nodes", None).await;
    assert_eq!(status, 200, "{nodes}");
    let path = format!("/api/users/{user}/connections");
    let (status, conns) = node.api("GET", &path, None).await;
    assert_eq!(status, 200, "{conns}");
    let (status, members) = node
        .api("GET", &format!("/api/presence/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{members}");
    [
        ids(&nodes, "nodes", "id"),
        ids(&conns, "connections", "conn"),
        ids(&members, "members", "conn"),
    ]
}

/// A node stopped with SIGTERM takes itself out of the cluster before it
/// exits: right after the exit, another node no longer lists it, nor its
/// client's connection or presence. With a 60 s node heartbeat, expiry
/// cannot be what removed them; the record stayed for 2.5 heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_is_unlisted_when_it_exits() {
    let redis = RedisServer::start().await;
    let config = temp_dir("sb-unlisted").join("switchboard.toml");
    std::fs::write(
        &config,
        "[[namespaces]]\nname = \"room\"\npresence = true\n",
    )
    .unwrap();
    let mut stopping = spawn_node(
        &[
            "--config",
            config.to_str().unwrap(),
            "--node-id",
            "node-stopping",
            "--node-heartbeat-ms",
            "60000",
        ],
        &[("SWITCHBOARD_REDIS_URL", &redis.url())],
    );
    let witness = TestNode::redis(&redis, "node-witness", |s| {
        s.api_key = Some(API_KEY.into());
        s.namespaces.push(Namespace {
            name: "room".into(),
            options: NamespaceOptions {
                presence: true,
                ..NamespaceOptions::default()
            },
        });
    })
    .await;
    stopping.wait_listening().await;
    let mut zed = Client::connect(&stopping.ws_url("/ws?user=zed")).await;
    zed.subscribe("room:1").await;
    let conn = zed.welcome["conn"].as_str().unwrap().to_owned();
    // Listed while it runs (its first heartbeat runs at start).
    eventually_async("the stopping node to be listed", || async {
        let [nodes, _, _] = listed(&witness, "zed", "room:1").await;
        nodes.iter().any(|n| n == "node-stopping")
    })
    .await;
    let [_, conns, members] = listed(&witness, "zed", "room:1").await;
    assert_eq!(conns, [conn.as_str()]);
    assert_eq!(members, [conn.as_str()]);

    stopping.signal("-TERM");
    assert_eq!(zed.ended().await, Ended::Close(3001));
    let status = stopping.wait_exit().await;
    assert!(status.success(), "exit status {status:?}");
    // At once, no waiting.
    let [nodes, conns, members] = listed(&witness, "zed", "room:1").await;
    assert_eq!(
        (nodes.as_slice(), conns.as_slice(), members.as_slice()),
        (&["node-witness".to_owned()][..], &[][..], &[][..]),
        "(nodes, zed's connections, room:1 presence) right after the exit"
    );
}
