//! Settings and readings shared by the presence, registry and API tests.

use std::time::Duration;

use serde_json::Value;
use switchboard::config::{Namespace, NamespaceOptions, Settings};

use super::{eventually_async, TestNode, API_KEY};

/// `chat:` has presence and join/leave, `files:` presence only, the default
/// namespace neither. The API is on; nodes heartbeat every 200 ms.
pub fn configure(s: &mut Settings) {
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

/// (user, node) pairs of a member or connection list, sorted.
pub fn who(members: &Value) -> Vec<(String, String)> {
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

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, n)| (u.to_string(), n.to_string()))
        .collect()
}

/// Milliseconds since the Unix epoch (the clock of the nodes' records).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Wait until every node `via` lists has written its heartbeat record at
/// `after_ms` or later: their entries have been refreshed since then.
pub async fn heartbeats_since(via: &TestNode, after_ms: u64) {
    let what = format!("every node to heartbeat after {after_ms} ms");
    eventually_async(&what, || async {
        let (status, body) = via.api("GET", "/api/nodes", None).await;
        assert_eq!(status, 200, "{body}");
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["updated_at"].as_u64().unwrap() >= after_ms)
    })
    .await;
}
