//! `--trace-fraction` end to end: two in-process nodes export their traces
//! to an OTLP receiver run by this test (tracing is process-global, hence a
//! test binary of its own), with a sampler that keeps only traces whose
//! parent is sampled — so exactly the harness's traced publishes are
//! exported. The run's slowest traced deliveries must be traces the nodes
//! really exported: a `publish` span and a `deliver` span on the node the
//! report names.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use switchboard::config::{LogFormat, Settings};
use switchboard::startup::Application;
use switchboard_fixtures::{eventually, OtlpReceiver, RedisServer};
use switchboard_loadtest::client::Sources;
use switchboard_loadtest::env::Env;
use switchboard_loadtest::traces::TraceParams;
use switchboard_loadtest::{churn, fanout, headline, write_outputs};

/// Whether `trace_id` was exported with a `publish` span and a `deliver`
/// span on `node`.
fn exported(spans: &Spans, trace_id: &str, node: &str) -> bool {
    spans.lock().unwrap().get(trace_id).is_some_and(|s| {
        s.iter().any(|(name, _)| name == "publish")
            && s.iter().any(|(name, n)| name == "deliver" && n == node)
    })
}

/// Per trace id: the (span name, `node` attribute) of its exported spans.
type Spans = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

fn record(spans: &Spans, body: &[u8]) {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut spans = spans.lock().unwrap();
    for s in request
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
    {
        let node = s.attributes.iter().find(|kv| kv.key == "node");
        let node = match node.and_then(|kv| kv.value.as_ref()?.value.as_ref()) {
            Some(Any::StringValue(v)) => v.clone(),
            _ => String::new(),
        };
        let id: String = s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
        spans.entry(id).or_default().push((s.name, node));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowest_traced_deliveries_are_exported_traces() {
    let spans: Spans = Arc::default();
    let store = spans.clone();
    let otlp = OtlpReceiver::start(0, move |body| record(&store, body))
        .await
        .expect("OTLP receiver");
    // Read by `telemetry::init` (the only thread reading the environment yet).
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint());
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    std::env::set_var("OTEL_TRACES_SAMPLER", "parentbased_always_off");
    std::env::set_var("RUST_LOG", "error");
    let _telemetry = switchboard::telemetry::init(LogFormat::Text).expect("telemetry");
    assert!(switchboard::telemetry::enabled());

    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for i in 0..2 {
        let mut s = Settings::for_tests();
        s.redis_url = Some(redis.url());
        s.node_id = format!("trace-{i}");
        let app = Application::build(s).await.expect("node starts");
        let gw = app.gateway();
        nodes.push(format!("ws://127.0.0.1:{}/ws", app.port()));
        tokio::spawn(app.run());
        eventually("the node to be ready", || gw.is_ready()).await;
    }
    let env = Env {
        nodes,
        sources: Arc::new(Sources::loopback(0, 0)),
        pids: Vec::new(),
        redis_pids: Vec::new(),
        metrics_urls: Vec::new(),
        connect_concurrency: 64,
        progress: false,
        command: "trace".into(),
    };
    let params = fanout::FanoutParams {
        connections: 20,
        channels: 4,
        publishers: 2,
        rate: 100.0,
        duration_s: 2.0,
        payload: 64,
        drain_s: 10.0,
        recover: false,
        reconnect_every_s: 0.0,
        reconnect_fraction: 0.0,
        reconnect_delay_s: 0.0,
        trace: TraceParams {
            fraction: 0.5,
            slowest: 5,
            jaeger_url: Some("http://jaeger.example:16686".into()),
        },
    };
    let summary = fanout::run(&env, &params).await.expect("fanout runs");
    let d = summary.delivery.clone().unwrap();
    assert_eq!(summary.published, 200, "{:?}", summary.errors);
    assert_eq!((d.expected, d.received, d.lost), (1000, 1000, 0));
    let t = summary.traces.clone().expect("a traces block");
    assert_eq!(t.fraction, 0.5);
    // 200 publishes, each traced with probability 1/2: 100 ± 7 (σ).
    assert!(
        (50..=150).contains(&t.traced_publishes),
        "{}",
        t.traced_publishes
    );
    // Every channel has 5 subscribers, and nothing was lost.
    assert_eq!(t.traced_deliveries, 5 * t.traced_publishes);
    assert_eq!(t.slowest.len(), 5);
    let ids: HashSet<_> = t.slowest.iter().map(|e| e.trace_id.clone()).collect();
    assert_eq!(ids.len(), 5, "one entry per trace");
    for w in t.slowest.windows(2) {
        assert!(w[0].latency_ms >= w[1].latency_ms, "slowest first");
    }
    for e in &t.slowest {
        assert!(e.trace_id.len() == 32 && e.trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(e.channel.starts_with("lt") && e.offset.is_some(), "{e:?}");
        assert!(e.node == "trace-0" || e.node == "trace-1", "{e:?}");
    }

    // Every traced publish, and nothing else, became an exported trace; the
    // listed ones have their publish span and the reported node's deliver span.
    eventually("every traced publish's trace to be exported", || {
        let published = (spans.lock().unwrap().values())
            .filter(|s| s.iter().any(|(name, _)| name == "publish"))
            .count();
        published as u64 == t.traced_publishes
            && t.slowest
                .iter()
                .all(|e| exported(&spans, &e.trace_id, &e.node))
    })
    .await;

    let out = std::env::temp_dir().join(format!("sb-trace-{}", std::process::id()));
    write_outputs(&out, &summary).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["traces"]["traced_publishes"], t.traced_publishes);
    let listed = json["traces"]["slowest"].as_array().unwrap();
    assert_eq!(listed[0]["trace_id"], t.slowest[0].trace_id.as_str());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let text = headline(&summary);
    for e in &t.slowest {
        let link = format!("http://jaeger.example:16686/trace/{}", e.trace_id);
        assert!(html.contains(&format!("<a href=\"{link}\">")), "{link}");
        assert!(text.contains(&format!("trace {} {:.2} ms", e.trace_id, e.latency_ms)));
    }
    let _ = std::fs::remove_dir_all(&out);

    // Churn's --recover publishers trace too; its clients' live deliveries count.
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
            trace: TraceParams {
                fraction: 1.0,
                slowest: 3,
                jaeger_url: None,
            },
        },
    )
    .await
    .expect("churn runs");
    let t = summary.traces.clone().expect("a traces block");
    assert_eq!(t.traced_publishes, 50, "{:?}", summary.errors);
    assert!(t.traced_deliveries > 0 && !t.slowest.is_empty(), "{t:?}");
    assert!(t.slowest.len() <= 3);
    eventually("the slowest churn traces to be exported", || {
        t.slowest
            .iter()
            .all(|e| exported(&spans, &e.trace_id, &e.node))
    })
    .await;
}
