//! The demo chat end to end in headless Chromium: `web/e2e/chat.e2e.mjs`
//! (playwright-core, from `web/e2e/package-lock.json`) against two real
//! nodes on a real Redis started here. The script stops node-a itself.
//! Screenshots go to `target/e2e-artifacts/`.

use std::path::Path;
use std::process::Command;

use crate::support::{spawn_node, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_chat_works_in_a_real_browser_across_two_nodes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let have = Path::new(&chromium).exists()
        && root.join("web/e2e/node_modules/playwright-core").exists()
        && crate::js_client::node_js().is_some();
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium, node or web/e2e/node_modules missing (scripts/test installs them)"
        );
        eprintln!("skipped: chromium or playwright-core not installed (run scripts/test)");
        return;
    }
    let redis = RedisServer::start().await;
    let node = |id: &str| spawn_node(&["--redis-url", &redis.url(), "--node-id", id], &[]);
    let (a, b) = (node("node-a"), node("node-b"));
    a.wait_listening().await;
    b.wait_listening().await;
    let artifacts = root.join("target/e2e-artifacts");
    let mut command = Command::new("node");
    command
        .current_dir(root.join("web/e2e"))
        .args(["--test", "--test-reporter=spec", "chat.e2e.mjs"])
        .env("SB_A", format!("http://127.0.0.1:{}", a.port()))
        .env("SB_B", format!("http://127.0.0.1:{}", b.port()))
        .env("SB_A_PID", a.pid().to_string())
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run node --test chat.e2e.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser tests failed");
    assert!(
        stdout.contains("ℹ fail 0") && stdout.contains("ℹ pass 4"),
        "{stdout}"
    );
    for shot in [
        "1-chat-ann-on-node-a",
        "3-caught-up-on-node-b",
        "4-slow-network",
    ] {
        let path = artifacts.join(format!("{shot}.png"));
        assert!(path.exists(), "no screenshot {}", path.display());
    }
}
