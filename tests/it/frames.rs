//! Bad input on the WebSocket: malformed frames get an error and the
//! connection stays open; oversize messages and too deeply nested `data`
//! are refused without being buffered, published or delivered.

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::raw::{Got, Raw, TEXT};
use crate::support::{nested_json, spawn_node, Client, Ended, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_connection_stays_open() {
    let node = TestNode::memory(|s| {
        s.namespaces = vec![switchboard::config::Namespace {
            name: "chat".into(),
            options: Default::default(),
        }];
    })
    .await;
    let mut c = node.connect("ann").await;

    // Not JSON, not an object, no type: an `error` frame (there is no id to reply to).
    for bad in [
        "Hello, World!",
        "[1,2,3]",
        "{\"channel\":\"x\"}",
        "{\"type\":\"publish\",\"channel\":\"x\"",
    ] {
        c.send_text(bad).await;
        let e = c.expect("error").await;
        assert_eq!(e["error"]["code"], "bad_frame", "{bad} -> {e}");
        assert!(e["error"]["message"].as_str().unwrap().len() > 5);
    }

    // With an id, the error comes as a reply to that id.
    let cases = [
        (json!({"type": "teleport"}), "bad_frame"),
        (json!({"type": "publish", "channel": "x"}), "bad_frame"),
        (json!({"type": "subscribe", "chanel": "x"}), "bad_frame"),
        (
            json!({"type": "subscribe", "channel": "has space"}),
            "bad_channel",
        ),
        (
            json!({"type": "subscribe", "channel": "x".repeat(300)}),
            "bad_channel",
        ),
        (
            json!({"type": "subscribe", "channel": "nope:1"}),
            "unknown_channel",
        ),
        (
            json!({"type": "publish", "channel": "nope:1", "data": 1}),
            "unknown_channel",
        ),
        (
            json!({"type": "unsubscribe", "channel": "never"}),
            "not_subscribed",
        ),
        (json!({"type": "send", "user": "", "data": 1}), "bad_user"),
        (json!({"type": "presence", "channel": "x"}), "not_enabled"),
        (json!({"type": "history", "channel": "x"}), "not_enabled"),
        (
            json!({"type": "publish", "channel": "x", "data": 1, "idempotency_key": "a b"}),
            "bad_frame",
        ),
    ];
    for (frame, code) in cases {
        let r = c.request(frame.clone()).await;
        assert_eq!(r["type"], "reply", "{frame} -> {r}");
        assert_eq!(r["error"]["code"], code, "{frame} -> {r}");
        assert!(r.get("ok").is_none());
    }

    // An id on an otherwise broken frame is still echoed.
    c.send_text(r#"{"type":"publish","id":77,"channel":5}"#)
        .await;
    let r = c.expect("reply").await;
    assert_eq!(r["id"], 77);
    assert_eq!(r["error"]["code"], "bad_frame");

    // Binary frames are refused, not fatal.
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(c.expect("error").await["error"]["code"], "bad_frame");

    // Subscribing twice is an error; the first subscription still works.
    c.subscribe("chat:room").await;
    let r = c
        .request(json!({"type": "subscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(r["error"]["code"], "already_subscribed");
    c.publish("chat:room", json!("still here")).await;
    assert_eq!(c.expect("message").await["data"], "still here");
    assert!(node.counter(|m| &m.bad_frames) >= 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_closes_with_1009_and_others_are_unaffected() {
    let node = TestNode::memory(|s| s.max_message_bytes = 1024).await;
    let mut big = node.connect("big").await;
    let mut other = node.connect("other").await;
    other.subscribe("c").await;
    let data = "x".repeat(2000);
    big.send_text(json!({"type": "publish", "channel": "c", "data": data}).to_string())
        .await;
    assert_eq!(big.ended().await, Ended::Close(1009));
    // Nothing of the oversize frame was published (the next message is a
    // later one), and the node still serves.
    let mut again = node.connect("big").await;
    let marker = json!("small");
    again.publish("c", marker.clone()).await;
    other.expect_marker("message", &marker).await;
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// A header that declares 2^62 bytes must close the connection with 1009
/// before the payload is buffered: streaming 50 MB after it may not grow
/// the node by more than a few MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_declared_frame_closes_with_1009_without_buffering() {
    let node = spawn_node(&["--max-message-bytes", "65536"], &[]);
    node.wait_listening().await;
    let mut ws = Raw::connect_to(node.port(), "/ws?user=mallory").await;
    let before = rss(node.pid());

    let mut header = vec![0x80 | TEXT, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    let (sent, got) = ws.flood(&header, 50 << 20).await;
    let growth = rss(node.pid()).saturating_sub(before);
    assert_eq!(got, Got::Close(Some(1009)), "after {sent} bytes");
    assert!(
        growth < 8 << 20,
        "the node grew by {growth} bytes while {sent} bytes of the frame were streamed"
    );
}

/// The next frame of `client`, which must be the error reply to `id`.
async fn expect_refused(client: &mut Client, id: u64, code: &str) {
    let reply = client.next_frame().await;
    assert_eq!(reply["type"], "reply", "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
}

/// A `data` nested 10 000 levels deep (20 KB) was accepted and fanned out
/// to every subscriber, whose recursive parsers then failed. Over the
/// WebSocket it is now `bad_frame` (`publish` and `send`; the connection
/// stays open) and never delivered; `data` exactly at the limit still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_data_is_refused_over_the_websocket_and_never_delivered() {
    use switchboard::protocol::MAX_DATA_DEPTH;
    let node = TestNode::memory(|_| {}).await;
    let mut sub = node.connect("sub").await;
    let mut publisher = node.connect("pub").await;
    sub.subscribe("jobs").await;

    let deep = nested_json(10_000);
    let over = nested_json(MAX_DATA_DEPTH + 1);
    let frames = [
        format!(r#"{{"type":"publish","id":9001,"channel":"jobs","data":{deep}}}"#),
        format!(r#"{{"type":"send","id":9002,"user":"sub","data":{deep}}}"#),
        format!(r#"{{"type":"publish","id":9003,"channel":"jobs","data":{over}}}"#),
        format!(r#"{{"type":"send","id":9004,"user":"sub","data":{over}}}"#),
    ];
    for (id, frame) in (9001..).zip(frames) {
        publisher.send_text(frame).await;
        expect_refused(&mut publisher, id, "bad_frame").await;
    }

    // Exactly at the limit: accepted and delivered. Being the next message
    // and the next direct the subscriber sees, these show that nothing
    // refused above reached it.
    let at_limit: Value = serde_json::from_str(&nested_json(MAX_DATA_DEPTH)).unwrap();
    publisher.publish("jobs", at_limit.clone()).await;
    sub.expect_marker("message", &at_limit).await;
    publisher.send_to("sub", at_limit.clone()).await;
    sub.expect_marker("direct", &at_limit).await;
}
