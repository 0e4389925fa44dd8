//! Every example frame of docs/protocol.md and the README works on a node
//! started with no settings at all — the node a newcomer runs with
//! `cargo run --release` — and every example of a server frame has the
//! fields such a node really sends.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::{spawn_node, Client};

const DOCS: [(&str, &str); 2] = [
    ("docs/protocol.md", include_str!("../../docs/protocol.md")),
    ("README.md", include_str!("../../README.md")),
];

const CLIENT_TYPES: [&str; 8] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "send",
    "presence",
    "history",
    "ping",
    "refresh",
];

/// An example frame and where it came from.
struct Example {
    doc: &'static str,
    frame: Value,
}

/// The examples of one document: each fenced `json` block is one sequence
/// of frames (one per line, sent in order on one connection); each inline
/// code span that is a JSON object with a `type` stands alone. Spans that
/// are not JSON (`{"type":"resync","channel","reason"}` lists fields) are
/// not examples.
fn examples(doc: &'static str, text: &str) -> Vec<Vec<Example>> {
    let mut sequences = Vec::new();
    let mut block: Option<Vec<Example>> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        match &mut block {
            None if trimmed == "```json" => block = Some(Vec::new()),
            Some(frames) if trimmed == "```" => {
                sequences.push(std::mem::take(frames));
                block = None;
            }
            Some(frames) => {
                if !trimmed.is_empty() {
                    let frame = serde_json::from_str(trimmed)
                        .unwrap_or_else(|e| panic!("{doc}: {trimmed}: {e}"));
                    frames.push(Example { doc, frame });
                }
            }
            None => {
                for span in line.split('`').skip(1).step_by(2) {
                    if let Ok(frame @ Value::Object(_)) = serde_json::from_str::<Value>(span) {
                        if frame.get("type").is_some() {
                            sequences.push(vec![Example { doc, frame }]);
                        }
                    }
                }
            }
        }
    }
    sequences
}

/// The key set of a frame, with the keys of a nested `error` object.
fn shape(frame: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (k, v) in frame.as_object().expect("an object") {
        keys.insert(k.clone());
        if k == "error" {
            for inner in v.as_object().expect("error is an object").keys() {
                keys.insert(format!("error.{inner}"));
            }
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_example_frame_works_on_a_default_node() {
    let node = spawn_node(&[], &[]);
    node.wait_listening().await;
    let url = format!("ws://127.0.0.1:{}/ws?user=ann", node.port());
    let mut observed: Vec<Value> = Vec::new();
    let mut server_examples = Vec::new();
    let mut sent = 0;
    for (doc, text) in DOCS {
        for sequence in examples(doc, text) {
            let mut conn: Option<Client> = None;
            for Example { doc, frame } in sequence {
                let kind = frame["type"].as_str().expect("type is a string").to_owned();
                if !CLIENT_TYPES.contains(&kind.as_str()) {
                    server_examples.push((doc, frame));
                    continue;
                }
                let c = match &mut conn {
                    Some(c) => c,
                    None => {
                        let c = Client::connect(&url).await;
                        observed.push(c.welcome.clone());
                        conn.insert(c)
                    }
                };
                // The example's own id, if it has one, comes back.
                c.send_json(&frame).await;
                let answer = loop {
                    let v = c.next_frame().await;
                    if v["type"] == "reply" || v["type"] == "pong" {
                        break v;
                    }
                    observed.push(v);
                };
                if let Some(id) = frame.get("id") {
                    assert_eq!(&answer["id"], id, "{doc}: {frame} -> {answer}");
                }
                let ok = answer["type"] == "pong" || answer["ok"] == true;
                assert!(ok, "{doc}: {frame} was refused: {answer}");
                observed.push(answer);
                sent += 1;
            }
            if let Some(mut c) = conn {
                // What arrived after the last answer (a `message` may come
                // just behind its publish's reply): a ping flushes it out.
                let pong = c.request(json!({"type": "ping"})).await;
                observed.extend(c.take_pending());
                observed.push(pong);
            }
        }
    }
    assert!(sent >= 6, "only {sent} client frames found in the docs");

    // Errors, both ways, for the error examples to be compared with.
    let mut c = Client::connect(&url).await;
    c.send_text("Hello, World!").await;
    observed.push(c.expect("error").await);
    let refused = c
        .request(json!({"type": "subscribe", "channel": "nope:1"}))
        .await;
    observed.push(refused);

    assert!(!server_examples.is_empty());
    for (doc, example) in server_examples {
        let want = shape(&example);
        let real = observed
            .iter()
            .filter(|f| f["type"] == example["type"])
            .map(shape)
            .collect::<Vec<_>>();
        assert!(
            real.contains(&want),
            "{doc}: no frame the node sent has the fields of the example {example}; \
             it sent these of that type: {real:?}"
        );
    }
}
