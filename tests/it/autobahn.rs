//! The Autobahn TestSuite's cases, every one of them, run by kosoku (a
//! Python 3 driver of the Autobahn case files, pinned in scripts/test) against
//! the real `switchboard` binary's echo endpoint; and tests of that
//! endpoint itself. docs/conformance.md has the results and explains every
//! case that is not OK.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{eventually_async, http, NodeProcess, TestNode, BIN, WAIT};

/// The kosoku release the expectations below were written against.
const KOSOKU_VERSION: &str = "0.1.0";
/// How many cases that release runs.
const CASES: usize = 517;
/// Cases run at once. The node's limit is the same for all of them.
const PARALLELISM: &str = "4";
/// The node's `max_message_bytes` for the run: the largest allowed, which
/// is also the largest message the cases send (9.1.6 and 9.2.6: 16 MiB).
const MAX_MESSAGE_BYTES: &str = "16777216";

/// Cases allowed to end other than OK, NON-STRICT or INFORMATIONAL: the id
/// (or `N.*` for a whole section), the verdict they get, and why.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "12.*",
        "UNIMPLEMENTED",
        "permessage-deflate: the node does not offer it",
    ),
    (
        "13.*",
        "UNIMPLEMENTED",
        "permessage-deflate: the node does not offer it",
    ),
];

fn exception(case: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    EXCEPTIONS
        .iter()
        .find(|(pattern, _, _)| match pattern.strip_suffix('*') {
            Some(prefix) => case.starts_with(prefix),
            None => case == *pattern,
        })
}

/// The installed kosoku's version, or None if python3 cannot import it.
fn kosoku_version() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, kosoku; print(m.version('kosoku'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_autobahn_case_through_kosoku() {
    let Some(version) = kosoku_version() else {
        // scripts/test installs it; plain `cargo test` may run without it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide python3 with kosoku {KOSOKU_VERSION}"
        );
        eprintln!("SKIPPED: python3 with the `kosoku` package is not installed (pip install kosoku=={KOSOKU_VERSION})");
        return;
    };
    assert_eq!(
        version, KOSOKU_VERSION,
        "this test's expectations are for kosoku {KOSOKU_VERSION} (pip install kosoku=={KOSOKU_VERSION})"
    );

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("autobahn");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let node = NodeProcess::spawn(BIN, |cmd| {
        cmd.env_clear()
            .env("RUST_LOG", "warn")
            .args(["--echo-endpoint", "true"])
            .args(["--max-message-bytes", MAX_MESSAGE_BYTES])
            .stderr(log);
    })
    .expect("spawn switchboard");
    node.wait_listening().await;
    eventually_async("the node to answer /healthz", || async {
        http::get(node.port(), "/healthz").await.0 == 200
    })
    .await;

    // kosoku's command line is `kosoku._cli:main` (its `kosoku` script),
    // called through python3 so that no script directory has to be on PATH.
    let url = node.ws_url("/echo");
    let outdir = dir.join("report");
    let started = Instant::now();
    let out = {
        let outdir = outdir.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args(["-c", "from kosoku._cli import main; main()"])
                .args(["-p", PARALLELISM, "-o", outdir.to_str().unwrap(), &url])
                .output()
                .expect("run python3")
        })
        .await
        .unwrap()
    };
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let index_path = outdir.join("index.json");
    let index = std::fs::read_to_string(&index_path).unwrap_or_else(|e| {
        panic!(
            "kosoku wrote no {} ({e}); exit {:?}\n{stdout}\n{stderr}",
            index_path.display(),
            out.status
        )
    });
    // {agent: {case id: {behavior, behaviorClose, remoteCloseCode, ...}}}
    let index: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
        serde_json::from_str(&index).expect("index.json");
    assert_eq!(index.len(), 1, "one agent expected: {:?}", index.keys());
    let results = index.into_values().next().unwrap();

    let mut sections: BTreeMap<u32, BTreeMap<String, usize>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (case, r) in &results {
        let behavior = r["behavior"].as_str().unwrap_or("?");
        let close = r["behaviorClose"].as_str().unwrap_or("?");
        let section: u32 = case.split('.').next().unwrap().parse().unwrap();
        *sections
            .entry(section)
            .or_default()
            .entry(behavior.to_owned())
            .or_default() += 1;
        let passed = matches!(behavior, "OK" | "NON-STRICT" | "INFORMATIONAL")
            && matches!(close, "OK" | "INFORMATIONAL");
        let excused = exception(case).is_some_and(|(_, verdict, _)| behavior == *verdict);
        if !passed && !excused {
            wrong.push(format!(
                "{case}: {behavior} / close {close} (remote close code {})",
                r["remoteCloseCode"]
            ));
        }
    }
    println!(
        "kosoku {version}: {} cases in {:.1} s against {BIN}",
        results.len(),
        elapsed.as_secs_f64()
    );
    println!("report: {}", outdir.join("index.html").display());
    for (section, verdicts) in &sections {
        println!("section {section}: {verdicts:?}");
    }
    assert!(
        wrong.is_empty(),
        "{} case(s) neither OK / NON-STRICT / INFORMATIONAL nor excused in EXCEPTIONS \
         (report: {}):\n{}",
        wrong.len(),
        outdir.display(),
        wrong.join("\n")
    );
    assert_eq!(
        results.len(),
        CASES,
        "kosoku {version} ran a different number of cases\n{stdout}\n{stderr}"
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("an answer")
        .expect("open")
        .expect("a frame")
}

/// An echo node: `/echo` on, small messages, one allowed browser origin.
async fn echo_node(enabled: bool) -> TestNode {
    TestNode::memory(|s| {
        s.echo_endpoint = enabled;
        s.max_message_bytes = 1024;
        s.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await
}

#[tokio::test]
async fn echo_is_not_routed_unless_enabled() {
    let node = echo_node(false).await;
    assert_eq!(node.http_get("/echo").await.0, 404);
    let url = format!("ws://127.0.0.1:{}/echo", node.port);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn echo_sends_messages_back_within_the_node_limits() {
    let node = echo_node(true).await;
    let url = format!("ws://127.0.0.1:{}/echo", node.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text("héllo")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 255, 7]));
    ws.send(Message::text("x".repeat(1024))).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("x".repeat(1024)));
    // One byte over max_message_bytes closes with 1009, as on /ws.
    ws.send(Message::text("x".repeat(1025))).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }

    // The same origin check as /ws.
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }
}
