//! JSON logs: every line is JSON with a level and a timestamp, and lines
//! inside a connection carry its fields (conn, user, node).

use std::io::Read;

use crate::support::{Client, NodeProcess, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_connection_fields() {
    let mut node = NodeProcess::spawn(BIN, |cmd| {
        cmd.env_clear()
            .env("RUST_LOG", "debug")
            .args(["--log-format", "json", "--node-id", "logger"])
            .stderr(std::process::Stdio::piped());
    })
    .expect("spawn switchboard");
    let mut stderr = node.child().stderr.take().unwrap();
    // Read the log as it comes, so the node never blocks on a full pipe.
    let log = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    node.wait_listening().await;
    let c = Client::connect(&node.ws_url("/ws?user=ann")).await;
    let conn = c.welcome["conn"].as_str().unwrap().to_owned();
    c.close().await;
    // The node logs until it exits; the pipe ends then.
    node.signal("-TERM");
    node.wait_exit().await;
    let out = log.await.unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let in_conn = lines
        .iter()
        .find(|l| l["span"]["name"] == "conn" && l["span"]["conn"] == conn.as_str())
        .unwrap_or_else(|| panic!("no log line inside the connection span: {out}"));
    assert_eq!(in_conn["span"]["user"], "ann");
    assert_eq!(in_conn["span"]["node"], "logger");
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "listening"),
        "{out}"
    );
}
