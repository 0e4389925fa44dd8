//! What the tests stand on: nodes (in-process `Application`s on port 0, or
//! the real binary), real WebSocket clients, a raw frame client, an HTTP
//! client, the fault tests' publisher, receivers and ledger (`recovery`),
//! and — from the `switchboard-fixtures` crate shared with the load
//! harness — `redis-server` processes and polling.

pub mod client;
pub mod http;
pub mod node;
pub mod presence;
pub mod raw;
pub mod recovery;
pub mod redis_process;
pub mod throttle;
pub mod tools;

pub use client::{Client, Ended};
pub use node::{spawn_node, spawn_node_on, TestNode, BIN};
pub use switchboard_fixtures::{
    eventually, eventually_async, free_port, wait_listening, NodeProcess, RedisServer, WAIT,
};

/// The test API key (set `s.api_key = Some(API_KEY.into())`).
pub const API_KEY: &str = "test-api-key-0123456789";

/// Remove the `name-PID` folders that earlier test processes left (the
/// process is gone: no `/proc/PID`), so runs do not pile them up.
fn remove_stale(name: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(name)?.strip_prefix('-'))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A write-once temporary folder for this test process: `name` under the
/// system's temp dir, suffixed with the pid.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    remove_stale(name);
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// JSON nested `depth` levels: arrays and objects alternating, around a
/// string full of brackets and an escaped quote, which must not count.
pub fn nested_json(depth: usize) -> String {
    let mut open = String::new();
    let mut close = String::new();
    for level in 0..depth {
        if level % 2 == 0 {
            open.push('[');
            close.insert(0, ']');
        } else {
            open.push_str(r#"{"k[":"#);
            close.insert(0, '}');
        }
    }
    format!(r#"{open}"[[{{\"]]}}"{close}"#)
}
