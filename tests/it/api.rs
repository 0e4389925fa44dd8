//! The server API's actions: `publish`, `broadcast` and `send` reach
//! clients on other nodes, `disconnect` closes a user everywhere, and with
//! Redis down the API answers 503 with a code.

use serde_json::json;

use crate::support::presence::configure;
use crate::support::{Ended, RedisServer, TestNode};

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
    let mut got: Vec<(String, serde_json::Value)> = Vec::new();
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
