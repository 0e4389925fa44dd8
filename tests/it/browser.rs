//! The demo chat end to end in headless Chromium: `web/e2e/chat.e2e.mjs`
//! (playwright-core, from `web/e2e/package-lock.json`) against two real
//! nodes on a real Redis started here, one of them also behind a slow
//! proxy (`support::throttle`). The script stops node-a itself.
//! Screenshots go to `target/e2e-artifacts/`.

use std::path::Path;

use crate::support::tools::{available, node_tests, present};
use crate::support::{spawn_node, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_chat_works_in_a_real_browser_across_two_nodes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let have = Path::new(&chromium).exists()
        && root.join("web/e2e/node_modules/playwright-core").exists()
        && available("node", &["--version"]);
    if !present(have, "chromium, Node.js and web/e2e/node_modules") {
        return;
    }
    let redis = RedisServer::start().await;
    let node = |id: &str| spawn_node(&["--redis-url", &redis.url(), "--node-id", id], &[]);
    let (a, b) = (node("node-a"), node("node-b"));
    a.wait_listening().await;
    b.wait_listening().await;
    // carol's link to node-b: 8 KiB/s each way.
    let slow = crate::support::throttle::slow_proxy(b.port(), 8 * 1024).await;
    let artifacts = root.join("target/e2e-artifacts");
    node_tests(
        &root.join("web/e2e"),
        &["chat.e2e.mjs"],
        &[
            ("SB_A", format!("http://127.0.0.1:{}", a.port())),
            ("SB_B", format!("http://127.0.0.1:{}", b.port())),
            ("SB_B_SLOW", format!("http://127.0.0.1:{slow}")),
            ("SB_A_PID", a.pid().to_string()),
            ("CHROMIUM", chromium),
            ("ARTIFACTS", artifacts.display().to_string()),
        ],
        4,
    )
    .await;
    for shot in [
        "1-chat-ann-on-node-a",
        "3-caught-up-on-node-b",
        "4-slow-network",
    ] {
        let path = artifacts.join(format!("{shot}.png"));
        assert!(path.exists(), "no screenshot {}", path.display());
    }
}
