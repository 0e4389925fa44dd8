//! Channel history: the `history` command and `GET /api/history`, bounded
//! by the namespace's `history_size`; and idempotent publishes, over the
//! WebSocket and the API. Memory and Redis nodes behave alike.

use serde_json::{json, Value};
use switchboard::config::{Namespace, NamespaceOptions, Settings};

use crate::support::{RedisServer, TestNode, API_KEY};

/// `log:` keeps the last 5 messages; the default namespace keeps none.
fn with_history(s: &mut Settings) {
    s.namespaces = vec![Namespace {
        name: "log".into(),
        options: NamespaceOptions {
            history_size: 5,
            ..NamespaceOptions::default()
        },
    }];
    s.api_key = Some(API_KEY.into());
}

fn data_of(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"].as_i64().expect("numeric data"))
        .collect()
}

async fn history_is_bounded_and_read_both_ways(node: &TestNode) {
    let mut c = node.connect("ann").await;
    let mut last = json!(null);
    for n in 1..=8 {
        last = c.publish("log:a", json!(n)).await;
    }
    let epoch = last["epoch"].clone();
    let read = |extra: Value| {
        let mut frame = json!({"type": "history", "channel": "log:a"});
        for (k, v) in extra.as_object().unwrap() {
            frame[k] = v.clone();
        }
        frame
    };
    let all = c.ok(read(json!({}))).await;
    assert_eq!((all["offset"].as_u64(), &all["epoch"]), (Some(8), &epoch));
    assert_eq!(
        data_of(&all["messages"]),
        [4, 5, 6, 7, 8],
        "the last 5 are kept"
    );
    assert_eq!(all["messages"][0]["type"], "message");
    assert_eq!(all["messages"][0]["offset"], 4);
    let since = c
        .ok(read(json!({"since": {"offset": 6, "epoch": epoch}})))
        .await;
    assert_eq!(data_of(&since["messages"]), [7, 8]);
    let newest = c.ok(read(json!({"limit": 2, "reverse": true}))).await;
    assert_eq!(data_of(&newest["messages"]), [8, 7]);
    let stale = c
        .request(read(json!({"since": {"offset": 6, "epoch": "other"}})))
        .await;
    assert_eq!(stale["error"]["code"], "unrecoverable_position", "{stale}");
    // No history in the default namespace: said so, not an empty list.
    let none = c
        .request(json!({"type": "history", "channel": "plain"}))
        .await;
    assert_eq!(none["error"]["code"], "not_enabled", "{none}");

    // The same over the API.
    let (status, body) = node.api("GET", "/api/history/log:a?limit=2", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(data_of(&body["messages"]), [4, 5]);
    assert_eq!(
        (body["channel"].as_str(), body["offset"].as_u64()),
        (Some("log:a"), Some(8))
    );
    let path = format!(
        "/api/history/log:a?since_offset=7&since_epoch={}",
        epoch.as_str().unwrap()
    );
    let (_, body) = node.api("GET", &path, None).await;
    assert_eq!(data_of(&body["messages"]), [8]);
    for (path, code) in [
        ("/api/history/log:a?since_offset=7", "bad_request"),
        ("/api/history/log:a?limit=x", "bad_request"),
        ("/api/history/plain", "not_enabled"),
        ("/api/history/nope:1", "unknown_channel"),
    ] {
        let (status, body) = node.api("GET", path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn history_in_memory() {
    let node = TestNode::memory(with_history).await;
    history_is_bounded_and_read_both_ways(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_redis() {
    let redis = RedisServer::start().await;
    let node = TestNode::redis(&redis, "node-a", with_history).await;
    history_is_bounded_and_read_both_ways(&node).await;
    // The stream is capped at the namespace's size.
    let len: u64 = redis
        .query(redis::cmd("XLEN").arg("sb:{c.log:a}:history"))
        .await;
    assert_eq!(len, 5);
}

async fn a_retried_publish_is_published_once(node: &TestNode) {
    let mut sub = node.connect("sub").await;
    sub.subscribe("log:b").await;
    let mut c = node.connect("ann").await;
    let publish = |key: &str, data: i64| json!({"type": "publish", "channel": "log:b", "data": data, "idempotency_key": key});
    let first = c.ok(publish("k1", 1)).await;
    let again = c.ok(publish("k1", 1)).await;
    assert_eq!(
        (&first["offset"], &first["epoch"]),
        (&again["offset"], &again["epoch"]),
        "a retry gets the first publish's position"
    );
    // The API shares the keys of the channel.
    let body = json!({"channel": "log:b", "data": 1, "idempotency_key": "k1"});
    let (status, api) = node.api("POST", "/api/publish", Some(&body)).await;
    assert_eq!((status, &api["offset"]), (200, &first["offset"]), "{api}");
    let other = c.ok(publish("k2", 2)).await;
    assert_eq!(
        other["offset"].as_u64(),
        first["offset"].as_u64().map(|o| o + 1)
    );
    // Once only: the next message after the first is the other key's.
    assert_eq!(sub.expect("message").await["data"], 1);
    assert_eq!(sub.expect("message").await["data"], 2);
    let bad = c.request(publish("has space", 3)).await;
    assert_eq!(bad["error"]["code"], "bad_frame", "{bad}");
    let body = json!({"channel": "log:b", "data": 1, "idempotency_key": ""});
    let (status, _) = node.api("POST", "/api/publish", Some(&body)).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn idempotent_publish_in_memory() {
    let node = TestNode::memory(with_history).await;
    a_retried_publish_is_published_once(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publish_in_redis() {
    let redis = RedisServer::start().await;
    let node = TestNode::redis(&redis, "node-a", with_history).await;
    a_retried_publish_is_published_once(&node).await;
}
