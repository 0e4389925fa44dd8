//! The server API's refusals: a missing or wrong key is 401 before the
//! body is even looked at; with the key, bad bodies get 400 or 413 with a
//! code, and too deeply nested `data` is never delivered.

use serde_json::{json, Value};

use crate::support::http::request;
use crate::support::presence::configure;
use crate::support::{nested_json, RedisServer, TestNode, API_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_missing_or_wrong_keys_and_bad_bodies() {
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
            let (status, text) = request(port, method, path, &headers, body).await;
            assert_eq!(status, 401, "{headers:?} {path}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized", "{text}");
        }
    }
    let (_, text) = request(
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
    let publish =
        |body: Value, status, code| ("POST", "/api/publish", body.to_string(), status, code);
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/api/publish",
            "not json".into(),
            400,
            "bad_request",
        ),
        publish(json!({"channel": "c"}), 400, "bad_request"),
        publish(
            json!({"channel": "c", "data": 1, "extra": 2}),
            400,
            "bad_request",
        ),
        publish(json!({"channel": "a b", "data": 1}), 400, "bad_channel"),
        publish(
            json!({"channel": "nope:1", "data": 1}),
            400,
            "unknown_channel",
        ),
        publish(
            json!({"channel": "c", "data": 1, "from": "{x}"}),
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
        let (status, text) = request(node.port, method, path, &headers, &body).await;
        assert_eq!(status, want_status, "{path} {body:.60}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(v["error"]["code"], want_code, "{path} {body:.60}: {text}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
}

/// A request without the API key (or with a wrong one) got 400 for a bad
/// body and 413 for an oversize one: the body was read and judged before
/// the key. Now every `/api` route answers 401 before looking at the body;
/// with the right key the body errors are as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_checks_the_key_before_the_body() {
    let node = TestNode::memory(|s| s.api_key = Some(API_KEY.into())).await;
    let right = format!("apikey {API_KEY}");
    let wrong = format!("apikey {API_KEY}x");
    let oversize = json!({
        "channel": "c",
        "data": "x".repeat(node.gateway.settings().max_message_bytes + 8192),
    })
    .to_string();
    let call = |path: &'static str, auth: Option<String>, body: String| {
        let port = node.port;
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            let (status, text) = request(port, "POST", path, &headers, &body).await;
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path} {body:.40}: not JSON: {text}"));
            (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    for path in [
        "/api/publish",
        "/api/broadcast",
        "/api/send",
        "/api/disconnect",
    ] {
        for body in ["not json", r#"{"channel":"#, r#"{"nope":1}"#, &oversize] {
            for auth in [None, Some(wrong.clone())] {
                let got = call(path, auth.clone(), body.to_owned()).await;
                assert_eq!(
                    got,
                    (401, "unauthorized".to_owned()),
                    "{path} {auth:?} {body:.40}"
                );
            }
        }
        let got = call(path, Some(right.clone()), "not json".into()).await;
        assert_eq!(got, (400, "bad_request".to_owned()), "{path}");
        let got = call(path, Some(right.clone()), oversize.clone()).await;
        assert_eq!(got, (413, "payload_too_large".to_owned()), "{path}");
    }
    // An unknown endpoint is no exception: no key, no answer about it.
    let got = call("/api/teleport", None, "{}".into()).await;
    assert_eq!(got, (401, "unauthorized".to_owned()));
    let got = call("/api/teleport", Some(right.clone()), "{}".into()).await;
    assert_eq!(got, (404, "not_found".to_owned()));
}

/// Over the server API, `publish`, `broadcast` and `send` with a 10 000-deep
/// `data` get 400 `bad_request` and deliver nothing; at the limit they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_data_is_refused_by_the_api() {
    use switchboard::protocol::MAX_DATA_DEPTH;
    let node = TestNode::memory(|s| s.api_key = Some(API_KEY.into())).await;
    let mut sub = node.connect("sub").await;
    sub.subscribe("jobs").await;
    let auth = format!("apikey {API_KEY}");
    let headers = [("Authorization", auth.as_str())];

    for data in [nested_json(10_000), nested_json(MAX_DATA_DEPTH + 1)] {
        for (path, body) in [
            (
                "/api/publish",
                format!(r#"{{"channel":"jobs","data":{data}}}"#),
            ),
            (
                "/api/broadcast",
                format!(r#"{{"channels":["jobs"],"data":{data}}}"#),
            ),
            ("/api/send", format!(r#"{{"user":"sub","data":{data}}}"#)),
        ] {
            let (status, text) = request(node.port, "POST", path, &headers, &body).await;
            assert_eq!(status, 400, "{path}: {text}");
            let v: Value = serde_json::from_str(&text).expect("JSON error body");
            assert_eq!(v["error"]["code"], "bad_request", "{path}: {text}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("nested"),
                "{path}: {text}"
            );
        }
    }

    // Being the next message and direct, these show nothing above arrived.
    let at_limit: Value = serde_json::from_str(&nested_json(MAX_DATA_DEPTH)).unwrap();
    let publish = json!({"channel": "jobs", "data": at_limit});
    let (status, body) = node.api("POST", "/api/publish", Some(&publish)).await;
    assert_eq!(status, 200, "{body}");
    sub.expect_marker("message", &at_limit).await;
    let send = json!({"user": "sub", "data": at_limit});
    let (status, body) = node.api("POST", "/api/send", Some(&send)).await;
    assert_eq!(status, 200, "{body}");
    sub.expect_marker("direct", &at_limit).await;
}
