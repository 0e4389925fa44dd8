//! The JavaScript client (`web/client/switchboard.js`) tested with Node's
//! test runner (`web/test/`) against real nodes started here: a default
//! node with the API key, a node that is full, a node taking JWTs.

use std::path::Path;

use crate::support::tools::{available, node_tests, present};
use crate::support::{spawn_node, Client, API_KEY};

const JWT_SECRET: &str = "js-client-test-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_passes_its_tests_against_real_nodes() {
    if !present(available("node", &["--version"]), "Node.js") {
        return;
    }
    let main = spawn_node(&["--api-key", API_KEY], &[]);
    let full = spawn_node(&["--max-connections", "1", "--workers", "1"], &[]);
    let jwt = spawn_node(&["--jwt-hmac-secret", JWT_SECRET], &[]);
    for n in [&main, &full, &jwt] {
        n.wait_listening().await;
    }
    // The full node's one place is taken.
    let _holder = Client::connect(&format!("ws://127.0.0.1:{}/ws?user=holder", full.port())).await;
    let url = |n: &switchboard_fixtures::NodeProcess| format!("ws://127.0.0.1:{}/ws", n.port());
    node_tests(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["--experimental-websocket", "web/test/"],
        &[
            ("SB_URL", url(&main)),
            ("SB_FULL_URL", url(&full)),
            ("SB_JWT_URL", url(&jwt)),
            ("SB_API_KEY", API_KEY.into()),
            ("SB_JWT_SECRET", JWT_SECRET.into()),
        ],
        11,
    )
    .await;
}
