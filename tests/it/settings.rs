//! Settings from flags, environment and TOML reach the running binary;
//! invalid ones stop it at start with exit code 2 and a message naming
//! the setting (or the file and key).

use std::process::Command;

use serde_json::json;

use crate::support::{spawn_node, temp_dir, Client, BIN};

/// Run the binary to completion and return (exit code, stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_settings_fail_at_start_naming_the_setting() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--listen", "not-an-address"], &[], "`listen`"),
        (
            &[],
            &[("SWITCHBOARD_REDIS_URL", "mysql://nope")],
            "`redis_url`",
        ),
        (
            &[
                "--heartbeat-interval-ms",
                "5000",
                "--heartbeat-timeout-ms",
                "1000",
            ],
            &[],
            "`heartbeat_timeout_ms`",
        ),
        (&[], &[("SWITCHBOARD_NODE_ID", "bad id!")], "`node_id`"),
        (
            &["--config", "/nonexistent/switchboard.toml"],
            &[],
            "/nonexistent/switchboard.toml",
        ),
        (
            &["--jwt-public-key-file", "/nonexistent/key.pem"],
            &[],
            "`jwt_public_key_file`",
        ),
        (&["--jwt-jwks-file", "Cargo.toml"], &[], "`jwt_jwks_file`"),
    ];
    for (args, env, needle) in cases {
        let (code, stderr) = run_to_exit(args, env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?} {env:?}: {stderr}");
    }
    // A flag that does not parse as its type is refused by the parser, naming the flag.
    let (code, stderr) = run_to_exit(&["--workers", "many"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--workers"), "{stderr}");
}

#[test]
fn config_file_errors_name_the_file_and_the_key() {
    let path = temp_dir("sb-config").join("bad.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\nheartbeat_intervall_ms = 5\n",
    )
    .unwrap();
    let (code, stderr) = run_to_exit(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("heartbeat_intervall_ms"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_settings_reach_the_running_node() {
    // TOML sets the heartbeat and a namespace, the environment overrides the
    // heartbeat, a flag sets the node id.
    let path = temp_dir("sb-layers").join("switchboard.toml");
    std::fs::write(
        &path,
        "heartbeat_interval_ms = 7000\nnode_id = \"from-file\"\n[[namespaces]]\nname = \"chat\"\n",
    )
    .unwrap();
    let node = spawn_node(
        &["--config", path.to_str().unwrap(), "--node-id", "from-flag"],
        &[("SWITCHBOARD_HEARTBEAT_INTERVAL_MS", "9000")],
    );
    node.wait_listening().await;
    let mut c = Client::connect(&node.ws_url("/ws?user=ann")).await;
    assert_eq!(c.welcome["node"], "from-flag");
    assert_eq!(c.welcome["heartbeat_ms"], 9000);
    c.subscribe("chat:1").await;
    let r = c
        .request(json!({"type": "subscribe", "channel": "other:1"}))
        .await;
    assert_eq!(r["error"]["code"], "unknown_channel");
}
