//! Who gets a connection: browser origins against the allow-list, the
//! per-user connection limit (exact under a burst, across nodes, fail-open
//! during a Redis outage), and the limit on handshakes in progress.

use std::time::Duration;
use switchboard::ids::UserId;

use futures_util::StreamExt;
use serde_json::Value;
use switchboard::config::Settings;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::support::{eventually_async, RedisServer, TestNode, WAIT};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a WebSocket (with this Origin, if any), or the HTTP status it was
/// refused with.
async fn try_upgrade(url: &str, origin: Option<&str>) -> Result<Socket, u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            Ok(ws)
        }
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected handshake error {e}"),
    }
}

/// An upgrade refused with 503, `Retry-After: 1` and this error code.
async fn refused_503(url: &str, code: &str) {
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], code, "{body}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
}

/// The HTTP status an upgrade with this Origin gets (101 = accepted).
async fn upgrade_status(node: &TestNode, user: &str, origin: Option<&str>) -> u16 {
    try_upgrade(&node.ws_url(user), origin)
        .await
        .map_or_else(|status| status, |_| 101)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_outside_the_allow_list_are_refused() {
    let node = TestNode::memory(|s| {
        s.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://*.corp.example".into(),
        ];
    })
    .await;
    for (origin, status) in [
        (Some("https://evil.example"), 403),
        (Some("https://app.example.com.evil.example"), 403),
        (Some("null"), 403),
        (Some("https://app.example.com"), 101),
        (Some("https://eu.corp.example"), 101),
        // Non-browser clients send no Origin.
        (None, 101),
    ] {
        assert_eq!(
            upgrade_status(&node, "a", origin).await,
            status,
            "{origin:?}"
        );
    }
    // Without a list, any origin may connect.
    let open = TestNode::memory(|_| {}).await;
    assert_eq!(
        upgrade_status(&open, "a", Some("https://anywhere.example")).await,
        101
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped_across_nodes() {
    let redis = RedisServer::start().await;
    let cap = |s: &mut Settings| s.max_connections_per_user = 2;
    let a = TestNode::redis(&redis, "node-a", cap).await;
    let b = TestNode::redis(&redis, "node-b", cap).await;
    let first = a.connect("bob").await;
    let _second = b.connect("bob").await;
    assert_eq!(upgrade_status(&a, "bob", None).await, 429);
    assert_eq!(upgrade_status(&b, "bob", None).await, 429);
    // Other users are not affected; a closed connection frees its slot.
    let _carol = a.connect("carol").await;
    first.close().await;
    eventually_async("the slot to be freed", || async {
        upgrade_status(&a, "bob", None).await == 101
    })
    .await;
}

/// The soft limit on open files of this process (`ulimit -n`).
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or(u64::MAX, |soft| soft.parse().unwrap_or(u64::MAX))
}

const USER_LIMIT: usize = 100;
const BURST: usize = 300;

/// Connect `user` BURST times at once, spread over `nodes` (each limited
/// to USER_LIMIT per user): exactly USER_LIMIT get in, the rest get 429.
/// Then a closed one makes room for exactly one more.
async fn burst_admits_exactly_the_limit(nodes: &[&TestNode], user: &str) {
    // BURST sockets here plus their server ends (the nodes are in process).
    let files = open_files_limit();
    assert!(
        files >= 4 * BURST as u64,
        "ulimit -n is {files}; the burst needs more"
    );
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url(user)).collect();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(BURST));
    let attempts: Vec<_> = (0..BURST)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                try_upgrade(&url, None).await
            })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(ws) => admitted.push(ws),
            Err(429) => refused += 1,
            Err(status) => panic!("refused with {status}"),
        }
    }
    assert_eq!(
        (admitted.len(), refused),
        (USER_LIMIT, BURST - USER_LIMIT),
        "(admitted, refused with 429)"
    );
    for node in nodes {
        let registered = node
            .gateway
            .user_connections(&UserId::parse(user).unwrap())
            .await
            .unwrap();
        assert_eq!(registered.len(), USER_LIMIT);
    }

    // Close one: exactly one more fits (the close frame comes after the
    // connection left the registry, so no waiting).
    let mut first = admitted.pop().unwrap();
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(WAIT, first.next())
        .await
        .expect("close handshake in time")
    {}
    let last = urls.last().unwrap();
    let _another = try_upgrade(last, None)
        .await
        .expect("a freed slot is usable");
    assert_eq!(try_upgrade(&urls[0], None).await.err(), Some(429));
}

fn user_limit(s: &mut Settings) {
    s.max_connections_per_user = USER_LIMIT;
    // A timed-out check admits (fail-open): a loaded machine must not turn
    // into extra admissions here.
    s.redis_timeout = Duration::from_secs(5);
}

/// `max_connections_per_user` is exact under a burst: 300 simultaneous
/// connects of one user split across two nodes, limit 100, admit exactly
/// 100 and refuse the rest with 429 (they admitted 280 and more when the
/// registry was read before the connection was registered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_connection_limit_is_exact_under_a_burst() {
    let redis = RedisServer::start().await;
    let a = TestNode::redis(&redis, "node-a", user_limit).await;
    let b = TestNode::redis(&redis, "node-b", user_limit).await;
    burst_admits_exactly_the_limit(&[&a, &b], "burst").await;
}

/// The same on a single node without Redis (check-and-insert under the
/// in-memory registry's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_connection_limit_is_exact_under_a_burst_in_memory() {
    let node = TestNode::memory(user_limit).await;
    burst_admits_exactly_the_limit(&[&node], "burst").await;
}

/// The exact limit keeps the fail-open rule: with Redis down a connect is
/// admitted (a warning, not a lockout), and the next heartbeat after Redis
/// returns puts it in the registry, where it counts against the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_during_a_redis_outage_is_admitted_then_registered() {
    let mut redis = RedisServer::start().await;
    let node = TestNode::redis(&redis, "node-a", |s| {
        s.max_connections_per_user = 1;
        s.node_heartbeat = Duration::from_millis(200);
    })
    .await;
    redis.kill();
    node.wait_ready(false).await;
    let during = node.connect("olga").await;
    let conn = during.welcome["conn"].as_str().unwrap().to_owned();
    redis.restart().await;
    eventually_async(
        "the connection to be registered after the outage",
        || async {
            let registered = node
                .gateway
                .user_connections(&UserId::parse("olga").unwrap())
                .await;
            registered.is_ok_and(|r| r.iter().any(|c| c.conn == conn))
        },
    )
    .await;
    assert_eq!(upgrade_status(&node, "olga", None).await, 429);
}

/// Past `max_pending_handshakes` upgrades in progress, a new one is
/// answered 503 `overloaded` with `Retry-After` at once, and the slot
/// frees when the held handshake completes. A handshake is held here by a
/// dead Redis: registering the connection waits out `redis_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_past_the_admission_limit_get_503_with_retry_after() {
    let mut redis = RedisServer::start().await;
    let node = TestNode::redis(&redis, "node-a", |s| {
        s.max_pending_handshakes = 1;
        s.redis_timeout = Duration::from_secs(3);
    })
    .await;
    redis.kill();
    node.wait_ready(false).await;
    let url = node.ws_url("first");
    // The 101 comes back while the welcome still waits for Redis.
    let (mut first, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    refused_503(&node.ws_url("second"), "overloaded").await;
    // The first handshake completes (welcome) and frees its slot.
    let welcome = tokio::time::timeout(WAIT, first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        welcome.to_text().unwrap().contains("welcome"),
        "{welcome:?}"
    );
    let _third = try_upgrade(&node.ws_url("third"), None)
        .await
        .expect("admitted once the slot is free");
}

/// WebSockets run outside actix's per-worker connection count once
/// upgraded, so the node counts them against `max_connections` × `workers`
/// itself: past it, an upgrade is answered 503 `at_capacity` with
/// `Retry-After`, and a place frees when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_past_the_node_capacity_get_503_at_capacity() {
    let node = TestNode::memory(|s| {
        s.max_connections = 2;
        s.workers = 1;
    })
    .await;
    let first = node.connect("first").await;
    let _second = node.connect("second").await;
    refused_503(&node.ws_url("third"), "at_capacity").await;
    first.close().await;
    eventually_async("a place frees when a connection closes", || async {
        try_upgrade(&node.ws_url("fourth"), None).await.is_ok()
    })
    .await;
}

/// A plain GET on `/ws` answers what an upgrade with the same query and
/// headers would get — the refusal, or 426 `upgrade_required` — without
/// admitting anything: how a browser, which sees only close code 1006 for
/// a refused upgrade, learns why (the JavaScript client asks this way).
/// Pages of allowed origins may read it, `Retry-After` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_on_ws_answers_as_an_upgrade_would() {
    let node = TestNode::memory(|s| {
        s.max_connections = 1;
        s.workers = 1;
        s.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let probe = |query: &'static str, origin: Option<&'static str>| {
        let port = node.port;
        async move {
            let mut request =
                reqwest::Client::new().get(format!("http://127.0.0.1:{port}/ws{query}"));
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            let response = request.send().await.expect("probe answered");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body: Value =
                serde_json::from_str(&response.text().await.expect("a body")).expect("JSON");
            (
                status,
                headers,
                body["error"]["code"].as_str().unwrap().to_owned(),
            )
        }
    };
    // Would be accepted: 426, and probing many times admits nothing.
    for _ in 0..3 {
        let (status, headers, code) = probe("?user=ann", None).await;
        assert_eq!((status, code.as_str()), (426, "upgrade_required"));
        assert_eq!(headers["upgrade"], "websocket");
    }
    assert_eq!(node.gateway.connection_count(), 0);
    let (status, _, code) = probe("?user=%7Bx%7D", None).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    let (status, headers, code) = probe("?user=ann", Some("https://evil.example")).await;
    assert_eq!((status, code.as_str()), (403, "origin_not_allowed"));
    assert!(headers.get("access-control-allow-origin").is_none());
    // The node is full: 503 with Retry-After, readable by an allowed page.
    let _only = node.connect("only").await;
    let (status, headers, code) = probe("?user=ann", Some("https://app.example.com")).await;
    assert_eq!((status, code.as_str()), (503, "at_capacity"));
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-expose-headers"], "retry-after");
}
