//! The JavaScript client (`web/client/switchboard.js`) tested with Node's
//! test runner (`web/test/`) against real nodes started here: a default
//! node with the API key, a node that is full, a node taking JWTs.

use std::process::Command;

use crate::support::{spawn_node, API_KEY};

const JWT_SECRET: &str = "js-client-test-secret-0123456789abcdef";

/// `node`, or None where it is missing and this is not CI (where
/// scripts/test has made sure it is there).
pub fn node_js() -> Option<&'static str> {
    let found = Command::new("node").arg("--version").output().is_ok();
    if !found && std::env::var_os("CI").is_none() {
        eprintln!("skipped: Node.js is not installed (scripts/test installs it)");
        return None;
    }
    assert!(found, "node is not installed");
    Some("node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_passes_its_tests_against_real_nodes() {
    let Some(node_js) = node_js() else { return };
    let main = spawn_node(&["--api-key", API_KEY], &[]);
    let full = spawn_node(&["--max-connections", "1", "--workers", "1"], &[]);
    let jwt = spawn_node(&["--jwt-hmac-secret", JWT_SECRET], &[]);
    for n in [&main, &full, &jwt] {
        n.wait_listening().await;
    }
    // The full node's one place is taken.
    let _holder =
        crate::support::Client::connect(&format!("ws://127.0.0.1:{}/ws?user=holder", full.port()))
            .await;
    let url = |n: &switchboard_fixtures::NodeProcess| format!("ws://127.0.0.1:{}/ws", n.port());
    let root = env!("CARGO_MANIFEST_DIR");
    let mut command = Command::new(node_js);
    command
        .current_dir(root)
        .args(["--experimental-websocket", "--test", "--test-reporter=spec"])
        .arg("web/test/")
        .env("SB_URL", url(&main))
        .env("SB_FULL_URL", url(&full))
        .env("SB_JWT_URL", url(&jwt))
        .env("SB_API_KEY", API_KEY)
        .env("SB_JWT_SECRET", JWT_SECRET);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "node --test web/test/ failed");
    // The spec reporter sums up: no test failed, and the file was not empty.
    assert!(
        stdout.contains("ℹ fail 0") && !stdout.contains("ℹ pass 0"),
        "{stdout}"
    );
}
