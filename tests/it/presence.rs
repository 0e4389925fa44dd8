//! Channel presence and join/leave events across nodes, over the
//! WebSocket and the API; and the same answers from the in-memory
//! implementations on a single node.

use serde_json::{json, Value};

use crate::support::presence::{configure, heartbeats_since, now_ms, pairs, who};
use crate::support::{eventually_async, Client, RedisServer, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_join_leave_across_nodes() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", configure).await;
    let b = TestNode::redis(&redis, "node-b", configure).await;
    let mut ann = a.connect("ann").await;
    let mut bob = b.connect("bob").await;

    ann.subscribe("chat:1").await;
    assert_eq!(
        ann.expect("join").await["user"],
        "ann",
        "a subscriber sees its own join"
    );
    bob.subscribe("chat:1").await;
    let joined = now_ms();
    let join = ann.expect("join").await;
    assert_eq!(join["user"], "bob");
    assert_eq!(join["channel"], "chat:1");
    assert_eq!(join["conn"], bob.welcome["conn"]);
    assert_eq!(bob.expect("join").await["user"], "bob");

    // Over the WebSocket on one node and over the API on the other: the same members.
    let members = presence(&mut ann, "chat:1").await;
    let both = pairs(&[("ann", "node-a"), ("bob", "node-b")]);
    assert_eq!(who(&members), both);
    let member = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "bob")
        .unwrap();
    assert_eq!(member["conn"], bob.welcome["conn"]);
    assert!(member["info"]["connected_at"].as_u64().is_some());
    let (status, body) = b.api("GET", "/api/presence/chat:1", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"], members);

    // Presence outlives several entry TTLs (500 ms) while the nodes keep
    // refreshing it: both have heartbeated 1.2 s after the joins.
    heartbeats_since(&a, joined + 1200).await;
    assert_eq!(who(&presence(&mut ann, "chat:1").await), both);

    // Leaving: by unsubscribe, and by closing the connection.
    bob.unsubscribe("chat:1").await;
    let leave = ann.expect("leave").await;
    assert_eq!(
        (leave["user"].as_str(), leave["conn"].clone()),
        (Some("bob"), bob.welcome["conn"].clone())
    );
    let members = presence(&mut ann, "chat:1").await;
    assert_eq!(who(&members), pairs(&[("ann", "node-a")]));
    bob.subscribe("chat:1").await;
    assert_eq!(ann.expect("join").await["user"], "bob");
    bob.close().await;
    assert_eq!(ann.expect("leave").await["user"], "bob");
    let (_, body) = a.api("GET", "/api/presence/chat:1", None).await;
    assert_eq!(who(&body["members"]), pairs(&[("ann", "node-a")]));

    // `files:` tracks presence without events; the default namespace has
    // neither: no join reached ann before a marker published after them.
    let mut cid = b.connect("cid").await;
    cid.subscribe("files:7").await;
    cid.subscribe("lobby").await;
    ann.subscribe("files:7").await;
    ann.subscribe("lobby").await;
    let marker = json!("after the joins");
    cid.publish("lobby", marker.clone()).await;
    ann.expect_marker("message", &marker).await;
    let (_, body) = a.api("GET", "/api/presence/files:7", None).await;
    assert_eq!(
        who(&body["members"]),
        pairs(&[("ann", "node-a"), ("cid", "node-b")])
    );
    let r = ann
        .request(json!({"type": "presence", "channel": "lobby"}))
        .await;
    assert_eq!(r["error"]["code"], "not_enabled");
}

/// The members of `channel`, asked over the WebSocket.
async fn presence(client: &mut Client, channel: &str) -> Value {
    let reply = client
        .ok(json!({"type": "presence", "channel": channel}))
        .await;
    reply["members"].clone()
}

/// Length of the list `field` in `body`.
fn count(body: &Value, field: &str) -> Value {
    body[field].as_array().unwrap().len().into()
}

/// One scenario, normalised so that ids and times drop out.
async fn scenario(node: &TestNode) -> Vec<Value> {
    let mut out = Vec::new();
    let mut ann = node.connect("ann").await;
    let mut bob = node.connect("bob").await;
    let _bob2 = node.connect("bob").await;
    ann.subscribe("chat:1").await;
    bob.subscribe("chat:1").await;
    out.push(ann.expect("join").await["user"].clone());
    out.push(ann.expect("join").await["user"].clone());
    out.push(bob.expect("join").await["user"].clone());
    let members = presence(&mut ann, "chat:1").await;
    let users: Vec<String> = who(&members).into_iter().map(|(u, _)| u).collect();
    out.push(json!(users));
    let (_, presence) = node.api("GET", "/api/presence/chat:1", None).await;
    out.push(count(&presence, "members"));
    let (_, conns) = node.api("GET", "/api/users/bob/connections", None).await;
    out.push(count(&conns, "connections"));
    out.push(node.api("GET", "/api/presence/lobby", None).await.1);
    let (_, published) = node
        .api(
            "POST",
            "/api/publish",
            Some(&json!({"channel": "chat:1", "data": 5})),
        )
        .await;
    out.push(published["offset"].clone());
    out.push(bob.expect("message").await["offset"].clone());
    out.push(ann.expect("message").await["offset"].clone());
    bob.unsubscribe("chat:1").await;
    out.push(ann.expect("leave").await["user"].clone());
    let (_, presence) = node.api("GET", "/api/presence/chat:1", None).await;
    out.push(count(&presence, "members"));
    node.api("POST", "/api/disconnect", Some(&json!({"user": "ann"})))
        .await;
    out.push(json!(format!("{:?}", ann.ended().await)));
    eventually_async("the node record to count 2 connections", || async {
        let (_, nodes) = node.api("GET", "/api/nodes", None).await;
        let nodes = nodes["nodes"].as_array().unwrap().clone();
        nodes.len() == 1 && nodes[0]["connections"] == 2
    })
    .await;
    let (_, nodes) = node.api("GET", "/api/nodes", None).await;
    out.push(nodes["nodes"][0]["id"].clone());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_redis_implementations_give_the_same_answers_on_one_node() {
    let memory = TestNode::memory(|s| {
        configure(s);
        s.node_id = "solo".into();
    })
    .await;
    let redis = RedisServer::start().await;
    let clustered = TestNode::redis(&redis, "solo", configure).await;
    let from_memory = scenario(&memory).await;
    let from_redis = scenario(&clustered).await;
    assert_eq!(from_memory, from_redis);
    assert_eq!(from_memory[3], json!(["ann", "bob"]));
    assert_eq!(from_memory[6]["error"]["code"], "not_enabled");
}
