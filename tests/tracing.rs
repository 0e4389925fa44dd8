//! One trace per message across nodes: two `switchboard` processes export
//! OTLP/HTTP to a receiver run by this test, which decodes the real
//! protobuf (`ExportTraceServiceRequest`). A message published on node A
//! must show a `publish` span there and a `deliver` span on node B in the
//! same trace, the publish span being the delivery span's parent.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, http_get, Client, RedisServer, WAIT};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

/// A minimal OTLP/HTTP receiver: POST /v1/traces with a protobuf body.
async fn receiver() -> (u16, Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                // Keep-alive: several requests may come on one connection.
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let request =
                        ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
                    let mut decoded = Vec::new();
                    for rs in request.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .map(|kv| text(&kv.value))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for s in ss.spans {
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
                    }
                    store.lock().unwrap().extend(decoded);
                    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    if reader.get_mut().write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, spans)
}

struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn node(id: &str, redis: &RedisServer, otlp_port: u16) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &redis.url(),
            "--node-id",
            id,
        ])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        )
        .env("OTEL_SERVICE_NAME", format!("switchboard-{id}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchboard");
    let node = Node { child, port };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
            && http_get(port, "/readyz").await.0 == 200
        {
            return node;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id} never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `find` matches among the received spans.
async fn wait_for<T>(
    spans: &Mutex<Vec<Span>>,
    what: &str,
    find: impl Fn(&[Span]) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = find(&spans.lock().unwrap()) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} in {:#?}",
            spans.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_message_across_nodes() {
    let (otlp, spans) = receiver().await;
    let redis = RedisServer::start().await;
    let a = node("node-a", &redis, otlp).await;
    let b = node("node-b", &redis, otlp).await;
    let mut subscriber = Client::connect(&format!("ws://127.0.0.1:{}/ws?user=sub", b.port)).await;
    subscriber.subscribe("traced").await;
    let mut publisher = Client::connect(&format!("ws://127.0.0.1:{}/ws?user=pub", a.port)).await;

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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.trace_id == unsampled),
        "spans of an unsampled trace were exported"
    );
}
