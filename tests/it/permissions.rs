//! Channel permissions by namespace, across nodes: token-only, claim
//! allow-lists, subscribers-only, server-only publishing and personal
//! `user:ID` channels. A refused command gets `forbidden` and nothing is
//! delivered anywhere.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{Client, RedisServer, TestNode, API_KEY};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use switchboard::config::{JwtKey, JwtSettings, Namespace, NamespaceOptions, Rule, Settings};

const SECRET: &str = "permissions-test-secret-0123456789abcdef";

fn token(sub: &str, channels: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": sub, "exp": exp, "channels": channels});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn ns(name: &str, subscribe: Rule, publish: Rule, presence_for: Rule) -> Namespace {
    Namespace {
        name: name.into(),
        options: NamespaceOptions {
            presence: true,
            join_leave: false,
            subscribe,
            publish,
            presence_for,
            ..NamespaceOptions::default()
        },
    }
}

fn configure(s: &mut Settings) {
    s.jwt = Some(JwtSettings {
        key: JwtKey::HmacSecret(SECRET.into()),
        audience: None,
        issuer: None,
    });
    s.allow_anonymous = true;
    s.api_key = Some(API_KEY.into());
    s.namespaces = vec![
        ns("secure", Rule::Claim, Rule::Claim, Rule::Claim),
        ns("members", Rule::Token, Rule::Token, Rule::Token),
        ns("announce", Rule::Any, Rule::Server, Rule::Any),
        ns("room", Rule::Any, Rule::Subscribers, Rule::Subscribers),
    ];
}

async fn with_token(node: &TestNode, sub: &str, channels: &[&str]) -> Client {
    let url = format!(
        "ws://127.0.0.1:{}/ws?token={}",
        node.port,
        token(sub, channels)
    );
    Client::connect(&url).await
}

async fn refused(c: &mut Client, frame: serde_json::Value) {
    let r = c.request(frame.clone()).await;
    assert_eq!(r["error"]["code"], "forbidden", "{frame} -> {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_rules_decide_who_may_subscribe_publish_and_see_presence() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", configure).await;
    let b = TestNode::redis(&redis, "node-b", configure).await;
    let mut alice = with_token(&b, "alice", &["secure:a*", "secure:exact"]).await;
    let mut mallory = with_token(&a, "mallory", &["secure:m*"]).await;
    let mut anon = a.connect("guest").await;

    // Claim allow-lists: exact names and prefix patterns.
    alice.subscribe("secure:abc").await;
    alice.subscribe("secure:exact").await;
    refused(
        &mut alice,
        json!({"type": "subscribe", "channel": "secure:xyz"}),
    )
    .await;
    refused(
        &mut mallory,
        json!({"type": "subscribe", "channel": "secure:abc"}),
    )
    .await;
    refused(
        &mut anon,
        json!({"type": "subscribe", "channel": "secure:abc"}),
    )
    .await;
    // A refused publish on another node delivers nothing.
    refused(
        &mut mallory,
        json!({"type": "publish", "channel": "secure:abc", "data": "x"}),
    )
    .await;
    refused(
        &mut mallory,
        json!({"type": "presence", "channel": "secure:abc"}),
    )
    .await;
    // The next message alice sees is her own, published after them.
    let mine = json!("mine");
    alice.publish("secure:abc", mine.clone()).await;
    alice.expect_marker("message", &mine).await;

    // Token-only namespace.
    with_token(&a, "mallory2", &[])
        .await
        .subscribe("members:1")
        .await;
    refused(
        &mut anon,
        json!({"type": "subscribe", "channel": "members:1"}),
    )
    .await;

    // Server-only publishing: clients may listen, only the API may speak.
    anon.subscribe("announce:all").await;
    refused(
        &mut alice,
        json!({"type": "publish", "channel": "announce:all", "data": "x"}),
    )
    .await;
    let (status, _) = b
        .api(
            "POST",
            "/api/publish",
            Some(&json!({"channel": "announce:all", "data": "hello"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(anon.expect("message").await["data"], "hello");

    // Subscribers-only publishing and presence.
    refused(
        &mut anon,
        json!({"type": "publish", "channel": "room:1", "data": "x"}),
    )
    .await;
    refused(&mut anon, json!({"type": "presence", "channel": "room:1"})).await;
    anon.subscribe("room:1").await;
    anon.publish("room:1", json!("in")).await;
    assert_eq!(anon.expect("message").await["data"], "in");
    assert_eq!(
        anon.ok(json!({"type": "presence", "channel": "room:1"}))
            .await["members"][0]["user"],
        "guest"
    );

    // Personal channels: the owner's alone, whatever the namespace rules.
    alice.subscribe("user:alice").await;
    alice.subscribe("user:alice:inbox").await;
    refused(
        &mut mallory,
        json!({"type": "subscribe", "channel": "user:alice"}),
    )
    .await;
    refused(
        &mut mallory,
        json!({"type": "publish", "channel": "user:alice", "data": "x"}),
    )
    .await;
    refused(
        &mut anon,
        json!({"type": "subscribe", "channel": "user:alice:inbox"}),
    )
    .await;
    // Nothing of mallory's reached alice's personal channel.
    let marker = json!("own");
    alice.publish("user:alice", marker.clone()).await;
    alice.expect_marker("message", &marker).await;
    mallory.subscribe("user:mallory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_brings_its_new_claims() {
    let node = TestNode::memory(configure).await;
    let mut carol = with_token(&node, "carol", &["secure:old"]).await;
    refused(
        &mut carol,
        json!({"type": "subscribe", "channel": "secure:new"}),
    )
    .await;
    carol
        .ok(json!({"type": "refresh", "token": token("carol", &["secure:new"])}))
        .await;
    carol.subscribe("secure:new").await;
    refused(
        &mut carol,
        json!({"type": "subscribe", "channel": "secure:old"}),
    )
    .await;
}
