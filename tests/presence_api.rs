//! Presence, the connection and node registries, join/leave events and the
//! server HTTP API, on real nodes over a real `redis-server` — and the same
//! answers from the in-memory implementations on a single node.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{http, Client, Ended, RedisServer, TestNode, API_KEY, WAIT};
use serde_json::{json, Value};
use switchboard::config::{Namespace, NamespaceOptions, Settings};

/// `chat:` has presence and join/leave, `files:` presence only, the default
/// namespace neither. The API is on.
fn configure(s: &mut Settings) {
    s.namespaces = vec![
        Namespace {
            name: "chat".into(),
            options: NamespaceOptions {
                presence: true,
                join_leave: true,
                ..Default::default()
            },
        },
        Namespace {
            name: "files".into(),
            options: NamespaceOptions {
                presence: true,
                join_leave: false,
                ..Default::default()
            },
        },
    ];
    s.api_key = Some(API_KEY.into());
    s.node_heartbeat = Duration::from_millis(200);
}

/// (user, node) pairs of a member list, sorted.
fn who(members: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = members
        .as_array()
        .expect("member list")
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().into(),
                m["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, n)| (u.to_string(), n.to_string()))
        .collect()
}

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
    let join = ann.expect("join").await;
    assert_eq!(join["user"], "bob");
    assert_eq!(join["channel"], "chat:1");
    assert_eq!(join["conn"], bob.welcome["conn"]);
    assert_eq!(bob.expect("join").await["user"], "bob");

    // Over the WebSocket on one node and over the API on the other: the same members.
    let reply = ann
        .ok(json!({"type": "presence", "channel": "chat:1"}))
        .await;
    assert_eq!(
        who(&reply["members"]),
        pairs(&[("ann", "node-a"), ("bob", "node-b")])
    );
    let member = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "bob")
        .unwrap();
    assert_eq!(member["conn"], bob.welcome["conn"]);
    assert!(member["info"]["connected_at"].as_u64().is_some());
    let (status, body) = b.api("GET", "/api/presence/chat:1", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"], reply["members"]);

    // Presence outlives several entry TTLs while the nodes keep refreshing it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = ann
        .ok(json!({"type": "presence", "channel": "chat:1"}))
        .await;
    assert_eq!(
        who(&reply["members"]),
        pairs(&[("ann", "node-a"), ("bob", "node-b")])
    );

    // Leaving: by unsubscribe, and by closing the connection.
    bob.ok(json!({"type": "unsubscribe", "channel": "chat:1"}))
        .await;
    let leave = ann.expect("leave").await;
    assert_eq!(
        (leave["user"].as_str(), leave["conn"].clone()),
        (Some("bob"), bob.welcome["conn"].clone())
    );
    let reply = ann
        .ok(json!({"type": "presence", "channel": "chat:1"}))
        .await;
    assert_eq!(who(&reply["members"]), pairs(&[("ann", "node-a")]));
    bob.subscribe("chat:1").await;
    assert_eq!(ann.expect("join").await["user"], "bob");
    bob.close().await;
    assert_eq!(ann.expect("leave").await["user"], "bob");
    let (_, body) = a.api("GET", "/api/presence/chat:1", None).await;
    assert_eq!(who(&body["members"]), pairs(&[("ann", "node-a")]));

    // `files:` tracks presence without events; the default namespace has neither.
    let mut cid = b.connect("cid").await;
    cid.subscribe("files:7").await;
    cid.subscribe("lobby").await;
    ann.subscribe("files:7").await;
    ann.subscribe("lobby").await;
    ann.expect_silence(Duration::from_millis(200)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_node_list_follow_connections() {
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
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
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
        if counts == vec![("node-a".into(), 1, 0), ("node-b".into(), 2, 1)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node list never showed the counts: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A closed connection leaves the registry at once.
    bob1.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = a.api("GET", "/api/users/bob/connections", None).await;
        if who(&body["connections"]) == pairs(&[("bob", "node-b")]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registry kept a closed connection: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `switchboard` process in cluster mode, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

    let dir = std::env::temp_dir().join(format!("sb-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("victim.toml");
    std::fs::write(
        &config,
        "[[namespaces]]\nname = \"chat\"\npresence = true\njoin_leave = true\n",
    )
    .unwrap();
    let port = common::free_port();
    let victim = Proc(
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--redis-url",
                &redis.url(),
                "--node-id",
                "victim",
            ])
            .args([
                "--node-heartbeat-ms",
                &HEARTBEAT_MS.to_string(),
                "--config",
                config.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn switchboard"),
    );
    let victim_ready = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
        || http(port, "GET", "/readyz", &[], "").await.0 != 200
    {
        assert!(
            tokio::time::Instant::now() < victim_ready,
            "victim never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut on_victim = Client::connect(&format!("ws://127.0.0.1:{port}/ws?user=vic")).await;
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

    let mut victim = victim;
    victim.0.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
    victim.0.wait().unwrap();
    let killed = tokio::time::Instant::now();
    loop {
        let (_, presence) = a.api("GET", "/api/presence/chat:room", None).await;
        let (_, nodes) = a.api("GET", "/api/nodes", None).await;
        let (_, conns) = a.api("GET", "/api/users/vic/connections", None).await;
        let gone = who(&presence["members"]) == pairs(&[("ann", "node-a")])
            && nodes["nodes"].as_array().unwrap().len() == 1
            && conns["connections"].as_array().unwrap().is_empty();
        if gone {
            break;
        }
        assert!(
            killed.elapsed() <= Duration::from_millis(3 * HEARTBEAT_MS),
            "stale entries 3 heartbeats after SIGKILL: {presence} {nodes} {conns}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The survivor's own entries are still refreshed.
    tokio::time::sleep(Duration::from_millis(3 * HEARTBEAT_MS)).await;
    let (_, body) = a.api("GET", "/api/presence/chat:room", None).await;
    assert_eq!(who(&body["members"]), pairs(&[("ann", "node-a")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_missing_or_wrong_keys_and_bad_bodies() {
    let redis = RedisServer::start().await;
    let node = TestNode::redis(&redis, "node-a", configure).await;
    let no_api = TestNode::memory(|_| {}).await;
    let publish = json!({"channel": "c", "data": 1}).to_string();
    let wrong = format!("apikey {API_KEY}x");
    let bearer = format!("Bearer {API_KEY}");
    for (port, headers) in [
        (node.port, vec![]),
        (node.port, vec![("Authorization", wrong.as_str())]),
        (node.port, vec![("Authorization", bearer.as_str())]),
        (
            no_api.port,
            vec![("Authorization", "apikey anything-at-all-1234")],
        ),
    ] {
        for (method, path, body) in [
            ("POST", "/api/publish", publish.as_str()),
            ("GET", "/api/nodes", ""),
        ] {
            let (status, text) = http(port, method, path, &headers, body).await;
            assert_eq!(status, 401, "{headers:?} {path}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized", "{text}");
        }
    }
    let (_, text) = http(
        no_api.port,
        "GET",
        "/api/nodes",
        &[("Authorization", "apikey x")],
        "",
    )
    .await;
    assert!(text.contains("disabled"), "{text}");

    let auth = format!("apikey {API_KEY}");
    let headers = [("Authorization", auth.as_str())];
    let big = json!({"channel": "c", "data": "x".repeat(100_000)}).to_string();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/api/publish",
            "not json".into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/publish",
            json!({"channel": "c"}).to_string(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/publish",
            json!({"channel": "c", "data": 1, "extra": 2}).to_string(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/publish",
            json!({"channel": "a b", "data": 1}).to_string(),
            400,
            "bad_channel",
        ),
        (
            "POST",
            "/api/publish",
            json!({"channel": "nope:1", "data": 1}).to_string(),
            400,
            "unknown_channel",
        ),
        (
            "POST",
            "/api/publish",
            json!({"channel": "c", "data": 1, "from": "{x}"}).to_string(),
            400,
            "bad_user",
        ),
        ("POST", "/api/publish", big, 413, "payload_too_large"),
        (
            "POST",
            "/api/broadcast",
            json!({"channels": [], "data": 1}).to_string(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/send",
            json!({"user": "", "data": 1}).to_string(),
            400,
            "bad_user",
        ),
        (
            "POST",
            "/api/disconnect",
            json!({"reconnect": true}).to_string(),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/presence/lobby",
            String::new(),
            400,
            "not_enabled",
        ),
        (
            "GET",
            "/api/presence/nope:1",
            String::new(),
            400,
            "unknown_channel",
        ),
        ("GET", "/api/publish", String::new(), 404, "not_found"),
        ("POST", "/api/teleport", "{}".into(), 404, "not_found"),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let (status, text) = http(node.port, method, path, &headers, &body).await;
        assert_eq!(status, want_status, "{path} {body:.60}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(v["error"]["code"], want_code, "{path} {body:.60}: {text}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publish_broadcast_and_send_reach_clients_on_other_nodes() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", configure).await;
    let b = TestNode::redis(&redis, "node-b", configure).await;
    let mut sub = b.connect("sub").await;
    sub.subscribe("news").await;
    sub.subscribe("files:9").await;

    let (status, body) = a
        .api(
            "POST",
            "/api/publish",
            Some(&json!({"channel": "news", "data": {"v": 1}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 1);
    let m = sub.expect("message").await;
    assert_eq!(m["data"], json!({"v": 1}));
    assert_eq!(m["from"], "", "server API messages have an empty sender");
    assert_eq!(m["epoch"], body["epoch"]);

    let (status, body) = a
        .api(
            "POST",
            "/api/broadcast",
            Some(&json!({"channels": ["news", "files:9", "bad channel"], "data": "all", "from": "ops"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["offset"], 2);
    assert_eq!(results[1]["offset"], 1);
    assert_eq!(results[2]["error"]["code"], "bad_channel");
    let mut got: Vec<(String, Value)> = Vec::new();
    for _ in 0..2 {
        let m = sub.expect("message").await;
        assert_eq!(m["from"], "ops");
        got.push((m["channel"].as_str().unwrap().into(), m["data"].clone()));
    }
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        vec![
            ("files:9".into(), json!("all")),
            ("news".into(), json!("all"))
        ]
    );

    let (status, _) = a
        .api(
            "POST",
            "/api/send",
            Some(&json!({"user": "sub", "data": {"task": 3}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        sub.expect("direct").await,
        json!({"type": "direct", "from": "", "data": {"task": 3}})
    );

    // Redis down: the API answers 503 with a code, quickly, and the node survives.
    drop(redis);
    a.wait_ready(false).await;
    let (status, body) = a
        .api(
            "POST",
            "/api/publish",
            Some(&json!({"channel": "news", "data": 1})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("broker_unavailable")),
        "{body}"
    );
    let (status, body) = a.api("GET", "/api/presence/chat:1", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("broker_unavailable")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_every_connection_of_the_user_on_every_node() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", configure).await;
    let b = TestNode::redis(&redis, "node-b", configure).await;
    let mut bob_a = a.connect("bob").await;
    let mut bob_b = b.connect("bob").await;
    let mut carol = b.connect("carol").await;

    let (status, _) = a
        .api("POST", "/api/disconnect", Some(&json!({"user": "bob"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bob_a.ended().await, Ended::Close(3501));
    assert_eq!(bob_b.ended().await, Ended::Close(3501));
    assert_eq!(carol.request(json!({"type": "ping"})).await["type"], "pong");

    let mut carol2 = a.connect("carol").await;
    let (status, _) = b
        .api(
            "POST",
            "/api/disconnect",
            Some(&json!({"user": "carol", "reconnect": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(carol.ended().await, Ended::Close(3005));
    assert_eq!(carol2.ended().await, Ended::Close(3005));
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
    let members = ann
        .ok(json!({"type": "presence", "channel": "chat:1"}))
        .await["members"]
        .clone();
    out.push(json!(who(&members)
        .into_iter()
        .map(|(u, _)| u)
        .collect::<Vec<_>>()));
    out.push(
        node.api("GET", "/api/presence/chat:1", None).await.1["members"]
            .as_array()
            .unwrap()
            .len()
            .into(),
    );
    out.push(
        node.api("GET", "/api/users/bob/connections", None).await.1["connections"]
            .as_array()
            .unwrap()
            .len()
            .into(),
    );
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
    bob.ok(json!({"type": "unsubscribe", "channel": "chat:1"}))
        .await;
    out.push(ann.expect("leave").await["user"].clone());
    out.push(
        node.api("GET", "/api/presence/chat:1", None).await.1["members"]
            .as_array()
            .unwrap()
            .len()
            .into(),
    );
    node.api("POST", "/api/disconnect", Some(&json!({"user": "ann"})))
        .await;
    out.push(json!(format!("{:?}", ann.ended().await)));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, nodes) = node.api("GET", "/api/nodes", None).await;
        let nodes = nodes["nodes"].as_array().unwrap().clone();
        if nodes.len() == 1 && nodes[0]["connections"] == 2 {
            out.push(nodes[0]["id"].clone());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{nodes:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
