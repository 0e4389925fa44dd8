//! CI smoke run of every scenario against a real 2-node cluster: a real
//! redis-server and two switchboard nodes (in-process, port 0), real
//! WebSocket clients. Small numbers: this checks the harness and the
//! gateway end to end, it does not measure performance.

use std::sync::Arc;

use switchboard::config::Settings;
use switchboard::startup::Application;
use switchboard_fixtures::{eventually, RedisCluster, RedisServer};
use switchboard_loadtest::client::Sources;
use switchboard_loadtest::env::Env;
use switchboard_loadtest::{churn, connect, direct, fanout, headline, write_outputs};

/// Two in-process nodes on the Redis at `redis_url`, adjusted by `configure`.
async fn cluster_with(redis_url: &str, configure: impl Fn(&mut Settings)) -> Vec<String> {
    let mut urls = Vec::new();
    for i in 0..2 {
        let mut s = Settings::for_tests();
        s.redis_url = Some(redis_url.to_owned());
        s.node_id = format!("smoke-{i}");
        configure(&mut s);
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
        redis_pids: Vec::new(),
        metrics_urls: Vec::new(),
        connect_concurrency: 64,
        progress: false,
        command: "smoke".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_against_a_two_node_cluster() {
    let redis = RedisServer::start().await;
    let nodes = cluster_with(&redis.url(), |_| {}).await;
    let json = every_scenario(nodes, redis.pid().into_iter().collect()).await;
    // Redis CPU over the run, of the one redis-server.
    assert_eq!(json["redis"]["processes"][0]["pid"], redis.pid().unwrap());
}

/// The same on a Redis Cluster of three masters (what `--redis-shards 3`
/// starts): sharded pub/sub, Redis CPU of every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_on_a_redis_cluster() {
    let redis = RedisCluster::try_start(3, 0)
        .await
        .expect("a Redis Cluster");
    // No replicas to wait for.
    let nodes = cluster_with(&redis.url(), |s| s.redis_wait_replicas = 0).await;
    let json = every_scenario(nodes, redis.pids()).await;
    let processes = json["redis"]["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 3, "{processes:?}");
}

/// Run fanout, direct, churn and connect against `nodes`, each asserting
/// no loss and no error; the fanout's summary.json.
async fn every_scenario(nodes: Vec<String>, redis_pids: Vec<u32>) -> serde_json::Value {
    let mut env = env(nodes.clone());
    env.redis_pids = redis_pids;
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
        recover: false,
        reconnect_every_s: 0.0,
        reconnect_fraction: 0.0,
        reconnect_delay_s: 0.0,
        trace: Default::default(),
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
    assert!(
        summary.traces.is_none(),
        "--trace-fraction 0: nothing traced"
    );
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
    assert!(summary.redis.as_ref().unwrap().cpu_s >= 0.0);

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
            recover: false,
            publishers: 0,
            publish_rate: 0.0,
            receive_s: 0.0,
            trace: Default::default(),
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
    json
}

/// `--recover` end to end: history on the default namespace (the harness's
/// channels), subscribers dropped on purpose while publishing and away long
/// enough to miss messages, which the recovery replays; then churn clients
/// that come back with their position. Nothing may be lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_resumes_without_loss_or_duplicates() {
    let redis = RedisServer::start().await;
    let nodes = cluster_with(&redis.url(), |s| s.default_namespace.history_size = 1000).await;
    let env = env(nodes);

    let params = fanout::FanoutParams {
        connections: 20,
        channels: 4,
        publishers: 2,
        rate: 100.0,
        duration_s: 2.0,
        payload: 16,
        drain_s: 10.0,
        recover: true,
        // 4 of the 20 per 0.5 s: a drop every 125 ms, 15 in the run.
        reconnect_every_s: 0.5,
        reconnect_fraction: 0.2,
        // A channel gets a message every 40 ms: each drop misses some.
        reconnect_delay_s: 0.1,
        trace: Default::default(),
    };
    let summary = fanout::run(&env, &params).await.expect("fanout runs");
    let d = summary.delivery.clone().unwrap();
    let r = summary.recovery.clone().unwrap();
    // 200 messages over 4 channels of 5 subscribers each.
    assert_eq!(summary.published, 200, "{:?}", summary.errors);
    assert_eq!(
        (d.expected, d.received, d.lost, d.duplicates),
        (1000, 1000, 0, 0),
        "{r:?} {:?}",
        summary.errors
    );
    assert!(r.dropped >= 1 && r.reconnects >= r.dropped, "{r:?}");
    assert_eq!(r.subscribes_with_since, r.reconnects, "{r:?}");
    assert_eq!(r.recovered, r.reconnects, "{r:?}");
    assert_eq!(
        (
            r.not_recovered,
            r.resyncs,
            r.without_position,
            r.unrecoverable
        ),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert!(r.replayed > 0, "the drops missed messages: {r:?}");
    assert_eq!(r.recovery.as_ref().unwrap().count, r.recovered);
    assert_eq!(r.catch_up.as_ref().unwrap().count, r.recovered);
    // Replayed messages are not publish→deliver latency samples.
    assert_eq!(
        summary.latency.as_ref().unwrap().count,
        1000 - r.replayed,
        "{r:?}"
    );
    let out = std::env::temp_dir().join(format!("sb-smoke-recover-{}", std::process::id()));
    write_outputs(&out, &summary).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["recovery"]["recovered"], r.recovered);
    assert_eq!(json["delivery"]["lost"], 0);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Recovery time by percentile") && html.contains("recovered: false"));
    assert!(headline(&summary).contains("recovery: "));

    let summary = churn::run(
        &env,
        &churn::ChurnParams {
            rate: 20.0,
            concurrency: 4,
            channels: 2,
            duration_s: 1.0,
            recover: true,
            publishers: 1,
            publish_rate: 50.0,
            receive_s: 0.1,
            trace: Default::default(),
        },
    )
    .await
    .expect("churn runs");
    let d = summary.delivery.clone().unwrap();
    let r = summary.recovery.clone().unwrap();
    let c = summary.connect.unwrap();
    assert_eq!(
        (c.attempted, c.established, c.errors, summary.publish_errors),
        (20, 20, 0, 0),
        "{:?}",
        summary.errors
    );
    assert!(d.expected > 0 && d.received == d.expected, "{d:?} {r:?}");
    assert_eq!((d.lost, d.duplicates), (0, 0), "{d:?} {r:?}");
    // Each of the 4 clients comes back 4 times, always with a position
    // (history names the channel's top at the first subscribe).
    assert_eq!((r.reconnects, r.recovered), (16, 16), "{r:?}");
    assert_eq!((r.not_recovered, r.unrecoverable), (0, 0), "{r:?}");
}
