//! The seed's Python example client (examples/hello_client.py) gets its
//! welcome and an error reply from a node with default settings.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::spawn_node;
use crate::support::tools::{available, present};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_gets_a_reply_from_a_default_node() {
    let have = available("python3", &["-c", "import websockets"]);
    if !present(have, "python3 with `websockets`") {
        return;
    }
    let node = spawn_node(&[], &[]);
    node.wait_listening().await;
    let url = format!("ws://localhost:{}", node.port());
    let child = Command::new("python3")
        .args(["examples/hello_client.py", &url])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = BufReader::new(&out.stdout[..])
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["type"], "welcome");
    assert_eq!(lines[1]["type"], "error");
    assert_eq!(lines[1]["error"]["code"], "bad_frame");
}
