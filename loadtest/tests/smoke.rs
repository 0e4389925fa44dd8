//! CI smoke run of every scenario against a real 2-node cluster: a real
//! redis-server and two switchboard nodes (in-process, port 0), real
//! WebSocket clients. Small numbers: this checks the harness and the
//! gateway end to end, it does not measure performance.

use std::sync::Arc;

use switchboard::config::Settings;
use switchboard::startup::Application;
use switchboard_fixtures::{eventually, RedisServer};
use switchboard_loadtest::client::Sources;
use switchboard_loadtest::env::Env;
use switchboard_loadtest::{churn, connect, direct, fanout, write_outputs};

async fn cluster(redis: &RedisServer) -> Vec<String> {
    let mut urls = Vec::new();
    for i in 0..2 {
        let mut s = Settings::for_tests();
        s.redis_url = Some(redis.url());
        s.node_id = format!("smoke-{i}");
        let app = Application::build(s).await.expect("node starts");
        let gw = app.gateway();
        urls.push(format!("ws://127.0.0.1:{}/ws", app.port()));
        tokio::spawn(app.run());
        eventually("the node to be ready", || gw.is_ready()).await;
    }
    urls
}

fn env(nodes: Vec<String>) -> Env {
    Env {
        nodes,
        sources: Arc::new(Sources::loopback(0, 0)),
        pids: vec![std::process::id()],
        metrics_urls: Vec::new(),
        connect_concurrency: 64,
        progress: false,
        command: "smoke".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_against_a_two_node_cluster() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis).await;
    let mut env = env(nodes.clone());
    env.metrics_urls = nodes
        .iter()
        .map(|u| u.replace("ws://", "http://").replace("/ws", "/metrics"))
        .collect();

    let params = fanout::FanoutParams {
        connections: 200,
        channels: 10,
        publishers: 2,
        rate: 200.0,
        duration_s: 2.0,
        payload: 32,
        drain_s: 10.0,
    };
    let summary = fanout::run(&env, &params).await.expect("fanout runs");
    let delivery = summary.delivery.clone().unwrap();
    // 400 messages over 10 channels of 20 subscribers each.
    assert_eq!(summary.published, 400, "{:?}", summary.errors);
    assert_eq!(delivery.expected, 400 * 20);
    assert_eq!(
        (delivery.received, delivery.lost, delivery.duplicates),
        (8000, 0, 0),
        "{:?}",
        summary.errors
    );
    assert_eq!(summary.latency.as_ref().unwrap().count, 8000);
    assert!(!summary.samples.is_empty());
    let metrics = summary.metrics.as_ref().unwrap();
    assert_eq!(metrics["switchboard_deliveries_total"], 8000.0, "{metrics}");
    let out = std::env::temp_dir().join(format!("sb-smoke-{}", std::process::id()));
    write_outputs(&out, &summary).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["delivery"]["received"], 8000);

    let summary = direct::run(
        &env,
        &direct::DirectParams {
            users: 50,
            rate: 200.0,
            duration_s: 1.0,
            drain_s: 10.0,
        },
    )
    .await
    .expect("direct runs");
    let delivery = summary.delivery.unwrap();
    assert_eq!(summary.published, 200, "{:?}", summary.errors);
    assert_eq!(
        (
            delivery.expected,
            delivery.received,
            delivery.lost,
            delivery.duplicates
        ),
        (200, 200, 0, 0)
    );

    let summary = churn::run(
        &env,
        &churn::ChurnParams {
            rate: 50.0,
            concurrency: 5,
            channels: 3,
            duration_s: 1.0,
        },
    )
    .await
    .expect("churn runs");
    let c = summary.connect.unwrap();
    assert_eq!(
        (c.attempted, c.established, c.errors),
        (50, 50, 0),
        "{:?}",
        summary.errors
    );

    let summary = connect::run(
        &env,
        &connect::ConnectParams {
            connections: 300,
            rate: 1000.0,
            hold_s: 0.2,
            workers: 1,
            retry_refused: 0,
        },
    )
    .await
    .expect("connect runs");
    let c = summary.connect.unwrap();
    assert_eq!(
        (c.attempted, c.established, c.errors),
        (300, 300, 0),
        "{:?}",
        summary.errors
    );
    assert!(c.handshake.unwrap().count == 300);
    assert!(c.memory_per_connection_bytes.is_some());
}
