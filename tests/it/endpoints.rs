//! The node's HTTP side: `/` upgrades or describes itself, anonymous and
//! bad `?user=` names, upgrades to other paths, and Prometheus `/metrics`
//! that move with traffic.

use serde_json::json;

use crate::support::{Client, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_accepts_upgrades_and_describes_itself_otherwise() {
    let node = TestNode::memory(|_| {}).await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{}/?user=root", node.port)).await;
    assert_eq!(c.welcome["user"], "root");
    c.subscribe("a").await;
    // A plain GET on `/` is the demo page (see `web`), or a line of text.
    let (status, body) = node.http_get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("/client/v1/switchboard.js"), "{body}");
    let plain = TestNode::memory(|s| s.demo = false).await;
    let (status, body) = plain.http_get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("connect a WebSocket to /ws"), "{body}");
    // Anonymous users get a generated name; a bad ?user= is refused before the upgrade.
    let anon = Client::connect(&format!("ws://127.0.0.1:{}/ws", node.port)).await;
    assert!(anon.welcome["user"].as_str().unwrap().starts_with("anon-"));
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws?user=%7Bx%7D", node.port))
            .await;
    assert!(refused.is_err());
}

/// WebSocket upgrades are served at `/ws`, `/` (and `/echo` when enabled)
/// only: one to any other path is a 404, and the connection closes. A plain
/// GET on `/ws` is 426 (see `admission` for what else it can answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_elsewhere_are_404_and_a_plain_get_on_ws_is_426() {
    let node = TestNode::memory(|_| {}).await;
    for path in ["/api/publish", "/healthz", "/echo", "/nowhere"] {
        match tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}{path}", node.port)).await
        {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 404, "{path}")
            }
            other => panic!("{path}: expected 404, got {other:?}"),
        }
    }
    let (status, _) = node.http_get("/ws").await;
    assert_eq!(status, 426);
    // The node still serves plain requests and upgrades after those.
    let (status, _) = node.http_get("/healthz").await;
    assert_eq!(status, 200);
    node.connect("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_text_and_move() {
    let node = TestNode::memory(|_| {}).await;
    let mut c = node.connect("ann").await;
    c.subscribe("m").await;
    c.publish("m", json!(1)).await;
    c.expect("message").await;
    let (status, body) = node.http_get("/metrics").await;
    assert_eq!(status, 200);
    let node_label = format!("{{node=\"{}\"}}", node.gateway.node_id());
    for (name, value) in [
        ("switchboard_connections", 1),
        ("switchboard_subscriptions", 1),
        ("switchboard_channels", 1),
        ("switchboard_messages_published_total", 1),
        ("switchboard_deliveries_total", 1),
    ] {
        let line = format!("{name}{node_label} {value}\n");
        assert!(body.contains(&line), "missing {line:?} in\n{body}");
    }
    assert!(
        body.contains("# TYPE switchboard_deliveries counter"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    // Per namespace (the default one is ""), and the process's own figures.
    let ns = format!(
        "switchboard_namespace_subscriptions{{node=\"{}\",namespace=\"\"}} 1\n",
        node.gateway.node_id()
    );
    assert!(body.contains(&ns), "missing {ns:?} in\n{body}");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            body.contains(&format!("\n{name}{node_label} ")),
            "missing {name} in\n{body}"
        );
    }
    // The broker publish latency histogram counted the one publish.
    assert!(body.contains("# TYPE switchboard_broker_publish_duration_seconds histogram"));
    let count = format!("switchboard_broker_publish_duration_seconds_count{node_label} 1\n");
    assert!(body.contains(&count), "{body}");
    let inf = format!(
        "switchboard_broker_publish_duration_seconds_bucket{{node=\"{}\",le=\"+Inf\"}} 1\n",
        node.gateway.node_id()
    );
    assert!(body.contains(&inf), "{body}");
    // Counters move with traffic.
    c.publish("m", json!(2)).await;
    c.expect("message").await;
    let (_, after) = node.http_get("/metrics").await;
    let line = format!("switchboard_deliveries_total{node_label} 2\n");
    assert!(after.contains(&line), "{after}");
}

/// Every metric the shipped Grafana dashboard queries is one a node serves,
/// so the dashboard cannot drift from `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_served_metrics() {
    let node = TestNode::memory(|_| {}).await;
    let (_, body) = node.http_get("/metrics").await;
    let dashboard = include_str!("../../deploy/grafana/switchboard.json");
    let mut queried = std::collections::BTreeSet::new();
    for prefix in ["switchboard_", "process_"] {
        for (at, _) in dashboard.match_indices(prefix) {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        // A family: its samples, or (with none yet) its TYPE line.
        let family = ["_total", "_bucket"]
            .iter()
            .fold(name.as_str(), |n, suffix| {
                n.strip_suffix(suffix).unwrap_or(n)
            });
        let served =
            body.contains(&format!("\n{name}{{")) || body.contains(&format!("# TYPE {family} "));
        assert!(
            served,
            "the dashboard queries {name}, which /metrics does not serve"
        );
    }
}

/// Every node serves the JavaScript client and its declarations at the
/// versioned path, byte for byte the files in `web/client/`, importable
/// from a page of another origin (an ES module is fetched with CORS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_is_served_at_a_versioned_path() {
    let node = TestNode::memory(|s| s.demo = false).await;
    for (path, file, kind) in [
        (
            "/client/v1/switchboard.js",
            include_str!("../../web/client/switchboard.js"),
            "text/javascript",
        ),
        (
            "/client/v1/switchboard.d.ts",
            include_str!("../../web/client/switchboard.d.ts"),
            "application/typescript",
        ),
    ] {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", node.port))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert_eq!(response.text().await.unwrap(), file, "{path}");
    }
    // Without the demo, its files are not served either.
    let (status, _) = node.http_get("/demo/demo.js").await;
    assert_eq!(status, 404);
}
