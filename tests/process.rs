//! The real `switchboard` binary as a process: settings from flags,
//! environment and TOML, errors that name the setting, SIGTERM drain, and
//! the seed's Python example client.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{wait_listening, NodeProcess, BIN};
use common::{free_port, Client, Ended, WAIT};
use serde_json::json;

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
    let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
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
    let dir = std::env::temp_dir().join(format!("sb-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchboard.toml");
    std::fs::write(
        &path,
        "heartbeat_interval_ms = 7000\nnode_id = \"from-file\"\n[[namespaces]]\nname = \"chat\"\n",
    )
    .unwrap();
    let node = NodeProcess::spawn(
        &["--config", path.to_str().unwrap(), "--node-id", "from-flag"],
        &[("SWITCHBOARD_HEARTBEAT_INTERVAL_MS", "9000")],
    );
    node.wait_listening().await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{}/ws?user=ann", node.port)).await;
    assert_eq!(c.welcome["node"], "from-flag");
    assert_eq!(c.welcome["heartbeat_ms"], 9000);
    c.subscribe("chat:1").await;
    let r = c
        .request(json!({"type": "subscribe", "channel": "other:1"}))
        .await;
    assert_eq!(r["error"]["code"], "unknown_channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_with_the_shutdown_code_and_exits_cleanly() {
    let mut node = NodeProcess::spawn(&["--drain-delay-ms", "200"], &[]);
    node.wait_listening().await;
    let mut a = Client::connect(&format!("ws://127.0.0.1:{}/ws?user=a", node.port)).await;
    let mut b = Client::connect(&format!("ws://127.0.0.1:{}/", node.port)).await;
    a.subscribe("x").await;
    node.signal("-TERM");
    // While draining, readiness fails so a load balancer stops routing here.
    let deadline = tokio::time::Instant::now() + WAIT;
    while common::http_get(node.port, "/readyz").await.0 != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.ended().await, Ended::Close(3001));
    assert_eq!(b.ended().await, Ended::Close(3001));
    let status = node.wait_exit().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_gets_a_reply_from_a_default_node() {
    let have_websockets = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_websockets {
        // scripts/test installs it; plain `cargo test` may run without it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide python3 with `websockets`"
        );
        eprintln!("SKIPPED: python3 with the `websockets` package is not installed");
        return;
    }
    let node = NodeProcess::spawn(&[], &[]);
    node.wait_listening().await;
    let url = format!("ws://localhost:{}", node.port);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_connection_fields() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("RUST_LOG", "debug")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
            "--node-id",
            "logger",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard");
    wait_listening(port).await;
    let c = Client::connect(&format!("ws://127.0.0.1:{port}/ws?user=ann")).await;
    let conn = c.welcome["conn"].as_str().unwrap().to_owned();
    c.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
        s
    })
    .await
    .unwrap();
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
