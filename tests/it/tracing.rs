//! One trace per message across nodes: two `switchboard` processes export
//! OTLP/HTTP to a receiver run by this test, which decodes the real
//! protobuf (`ExportTraceServiceRequest`). A message published on node A
//! must show a `publish` span there and a `deliver` span on node B in the
//! same trace, the publish span being the delivery span's parent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::json;

use crate::support::http::wait_ready;
use crate::support::{eventually, spawn_node, Client, NodeProcess, RedisServer};
use switchboard_fixtures::OtlpReceiver;

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// The spans of one export request.
fn decode(body: &[u8]) -> Vec<Span> {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut decoded = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            decoded.push(Span {
                service: service.clone(),
                name: s.name.clone(),
                trace_id: hex(&s.trace_id),
                span_id: hex(&s.span_id),
                parent_span_id: hex(&s.parent_span_id),
                attributes: s
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(&kv.value)))
                    .collect(),
            });
        }
    }
    decoded
}

/// A receiver that keeps every span it is sent.
async fn receiver() -> (OtlpReceiver, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    let receiver = OtlpReceiver::start(0, move |body| store.lock().unwrap().extend(decode(body)))
        .await
        .expect("OTLP receiver");
    (receiver, spans)
}

/// A node exporting its traces to `otlp`, once ready.
async fn node(id: &str, redis: &RedisServer, otlp: &OtlpReceiver) -> NodeProcess {
    let node = spawn_node(
        &["--redis-url", &redis.url(), "--node-id", id],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
            ("OTEL_SERVICE_NAME", &format!("switchboard-{id}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    wait_ready(node.port(), true).await;
    node
}

/// Wait until `find` matches among the received spans.
async fn wait_for<T>(
    spans: &Mutex<Vec<Span>>,
    what: &str,
    find: impl Fn(&[Span]) -> Option<T>,
) -> T {
    let mut found = None;
    eventually(what, || {
        found = find(&spans.lock().unwrap());
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_message_across_nodes() {
    let (otlp, spans) = receiver().await;
    let redis = RedisServer::start().await;
    let a = node("node-a", &redis, &otlp).await;
    let b = node("node-b", &redis, &otlp).await;
    let mut subscriber = Client::connect(&b.ws_url("/ws?user=sub")).await;
    subscriber.subscribe("traced").await;
    let mut publisher = Client::connect(&a.ws_url("/ws?user=pub")).await;

    // 1. The client's own trace context is continued.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    publisher
        .ok(json!({"type": "publish", "channel": "traced", "data": 1,
                   "traceparent": format!("00-{client_trace}-{client_span}-01")}))
        .await;
    assert_eq!(subscriber.expect("message").await["data"], 1);
    let publish = wait_for(&spans, "publish span", |s| {
        s.iter()
            .find(|s| s.name == "publish" && s.trace_id == client_trace)
            .cloned()
    })
    .await;
    assert_eq!(
        publish.parent_span_id, client_span,
        "publish span is a child of the client's span"
    );
    assert_eq!(publish.service, "switchboard-node-a");
    assert_eq!(publish.attributes["channel"], "traced");
    assert_eq!(publish.attributes["node"], "node-a");
    let deliver = wait_for(&spans, "deliver span on node-b", |s| {
        s.iter()
            .find(|s| s.name == "deliver" && s.trace_id == client_trace)
            .cloned()
    })
    .await;
    assert_eq!(deliver.service, "switchboard-node-b");
    assert_eq!(
        deliver.parent_span_id, publish.span_id,
        "the publish span is the delivery's parent"
    );
    assert_eq!(deliver.attributes["node"], "node-b");
    assert_eq!(deliver.attributes["channel"], "traced");
    assert_eq!(deliver.attributes["recipients"], "1");
    assert!(deliver.attributes["bytes"].parse::<u64>().unwrap() > 50);

    // 2. Without a client context the publish starts a trace of its own.
    publisher
        .ok(json!({"type": "publish", "channel": "traced", "data": 2}))
        .await;
    assert_eq!(subscriber.expect("message").await["data"], 2);
    let (publish, deliver) = wait_for(&spans, "second trace", |s| {
        let publish = s
            .iter()
            .find(|s| s.name == "publish" && s.trace_id != client_trace)?;
        let deliver = s
            .iter()
            .find(|d| d.name == "deliver" && d.trace_id == publish.trace_id)?;
        Some((publish.clone(), deliver.clone()))
    })
    .await;
    assert!(
        publish.parent_span_id.is_empty(),
        "a root span: {publish:?}"
    );
    assert_eq!(deliver.parent_span_id, publish.span_id);

    // 3. A client that did not sample its trace gets none exported (parent-based sampling).
    let unsampled = "11111111111111111111111111111111";
    publisher
        .ok(json!({"type": "publish", "channel": "traced", "data": 3,
                   "traceparent": format!("00-{unsampled}-{client_span}-00")}))
        .await;
    assert_eq!(subscriber.expect("message").await["data"], 3);
    // A sampled trace published after it: once both its spans are in, the
    // unsampled ones would have been exported before them.
    let marker = "22222222222222222222222222222222";
    publisher
        .ok(json!({"type": "publish", "channel": "traced", "data": 4,
                   "traceparent": format!("00-{marker}-{client_span}-01")}))
        .await;
    assert_eq!(subscriber.expect("message").await["data"], 4);
    for (name, service) in [
        ("publish", "switchboard-node-a"),
        ("deliver", "switchboard-node-b"),
    ] {
        wait_for(&spans, &format!("the marker's {name} span"), |s| {
            s.iter()
                .find(|s| s.name == name && s.trace_id == marker && s.service == service)
                .cloned()
        })
        .await;
    }
    assert!(
        !spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.trace_id == unsampled),
        "spans of an unsampled trace were exported"
    );

    // 4. Connection lifecycle: the upgrade and the connection with its close reason.
    subscriber.close().await;
    wait_for(&spans, "conn span with its close reason", |s| {
        s.iter()
            .find(|s| {
                s.name == "conn" && s.attributes.get("user").map(String::as_str) == Some("sub")
            })
            .filter(|s| {
                s.attributes.get("close_reason").map(String::as_str) == Some("client_closed")
            })
            .cloned()
    })
    .await;
    wait_for(&spans, "upgrade span", |s| {
        s.iter()
            .find(|s| {
                s.name == "upgrade" && s.attributes.get("status").map(String::as_str) == Some("101")
            })
            .cloned()
    })
    .await;
}
