//! Test harness: real `redis-server` processes on free ports, real nodes
//! (in-process `Application`s on port 0, or the real binary), and real
//! WebSocket clients.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod process;
pub mod raw;

use std::collections::VecDeque;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard::config::Settings;
use switchboard::gateway::Gateway;
use switchboard::startup::{Application, Drainer};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen. Generous: this
/// bounds a hang, it does not measure speed.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A `redis-server` child process on its own port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// A port for a server that is not running yet (see `restart`).
    pub fn not_started() -> RedisServer {
        RedisServer {
            port: free_port(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server); scripts/test installs it");
        self.child = Some(child);
        let what = format!("redis-server to start on port {}", self.port);
        eventually_async(&what, || async { self.ping().await.is_ok() }).await;
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
    }

    /// Run a command against this server.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// SIGKILL the server (an outage, not a clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An in-process node on port 0.
pub struct TestNode {
    pub port: u16,
    pub gateway: Arc<Gateway>,
    pub drainer: Drainer,
}

impl TestNode {
    pub async fn start(settings: Settings) -> TestNode {
        let app = Application::build(settings).await.expect("node starts");
        let node = TestNode {
            port: app.port(),
            gateway: app.gateway(),
            drainer: app.drainer(),
        };
        tokio::spawn(app.run());
        node
    }

    /// Memory-mode node with test defaults, adjusted by `tweak`.
    pub async fn memory(tweak: impl FnOnce(&mut Settings)) -> TestNode {
        let mut s = Settings::for_tests();
        tweak(&mut s);
        TestNode::start(s).await
    }

    /// Cluster-mode node on `redis`, named `id`.
    pub async fn redis(
        redis: &RedisServer,
        id: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestNode {
        let mut s = Settings::for_tests();
        s.redis_url = Some(redis.url());
        s.node_id = id.to_owned();
        s.redis_timeout = Duration::from_millis(500);
        s.unsubscribe_delay = Duration::from_millis(100);
        tweak(&mut s);
        let node = TestNode::start(s).await;
        node.wait_ready(true).await;
        node
    }

    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?user={user}", self.port)
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path).await
    }

    /// Wait until `/readyz` says `ready` (or says not ready, if `ready` is false).
    pub async fn wait_ready(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let what = format!("/readyz to answer {want}");
        eventually_async(&what, || async { self.http_get("/readyz").await.0 == want }).await;
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(user)).await
    }

    pub async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        api(self.port, method, path, body).await
    }
}

/// A minimal HTTP/1.1 GET, enough for the operational endpoints.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, &[], "").await
}

/// A minimal HTTP/1.1 request; returns status and body.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The server may close before reading an oversize body: keep what came.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    // Bodies of JSON answers may come chunked; undo that.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The test API key configured by `with_api`.
pub const API_KEY: &str = "test-api-key-0123456789";

/// Call the server API with the test key; the body is JSON.
pub async fn api(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let auth = format!("apikey {API_KEY}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, text) = http(
        port,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .await;
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text:?}"));
    (status, value)
}

/// A WebSocket client that keeps frames it was not waiting for.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    next_id: u64,
    pub welcome: Value,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Close(u16),
    /// Closed without a close frame (reset or EOF).
    Dropped,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Client::connect_request(url, None).await
    }

    /// Connect with an optional `Authorization: Bearer` token.
    pub async fn connect_request(url: &str, bearer: Option<&str>) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("valid URL");
        if let Some(token) = bearer {
            let value = format!("Bearer {token}").parse().expect("header value");
            request.headers_mut().insert("Authorization", value);
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out")
            .expect("websocket handshake");
        let mut client = Client {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
            welcome: Value::Null,
        };
        let welcome = client.next_frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client.welcome = welcome;
        client
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next JSON text frame from the socket (not from the pending queue).
    async fn read_frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame in time")
                .expect("socket ended")
                .expect("socket error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("server sent JSON")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// The next frame, pending ones first.
    pub async fn next_frame(&mut self) -> Value {
        match self.pending.pop_front() {
            Some(v) => v,
            None => self.read_frame().await,
        }
    }

    /// Send a command with a fresh id and return its reply; other frames
    /// that arrive meanwhile are kept for `next_frame`.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send_json(&frame).await;
        loop {
            let v = self.read_frame().await;
            if (v["type"] == "reply" || v["type"] == "pong") && v["id"] == json!(id) {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// Frames that arrived before the last reply and were set aside.
    pub fn take_pending(&mut self) -> Vec<Value> {
        self.pending.drain(..).collect()
    }

    pub async fn ok(&mut self, frame: Value) -> Value {
        let reply = self.request(frame.clone()).await;
        assert_eq!(reply["ok"], true, "{frame} -> {reply}");
        reply
    }

    pub async fn subscribe(&mut self, channel: &str) {
        self.ok(json!({"type": "subscribe", "channel": channel}))
            .await;
    }

    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        self.ok(json!({"type": "publish", "channel": channel, "data": data}))
            .await
    }

    /// The next frame of the given type, skipping none: anything else is a failure.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let v = self.next_frame().await;
        assert_eq!(v["type"], kind, "{v}");
        v
    }

    /// Assert that no frame arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(v) = self.pending.pop_front() {
            panic!("unexpected frame {v}");
        }
        loop {
            match tokio::time::timeout(d, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next JSON frame, or how the connection ended.
    pub async fn try_next_frame(&mut self) -> Result<Value, Ended> {
        if let Some(v) = self.pending.pop_front() {
            return Ok(v);
        }
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame in time")
            {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("server sent JSON"))
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Err(Ended::Close(u16::from(frame.code)))
                }
                Some(Ok(Message::Close(None))) => return Err(Ended::Close(1005)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Dropped),
            }
        }
    }

    /// Read until the connection ends; frames before the end are discarded.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("connection did not end in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Ended::Close(u16::from(frame.code))
                }
                Some(Ok(Message::Close(None))) => return Ended::Close(1005),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }

    /// Send a close frame and wait for the server's.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

/// Poll `check` until it returns true.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    eventually_async(what, || std::future::ready(check())).await;
}

/// Poll an async `check` until it returns true, failing after `WAIT`
/// with `what` in the message.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn counter(
    gw: &Gateway,
    f: impl Fn(&switchboard::metrics::Metrics) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    f(gw.metrics()).load(std::sync::atomic::Ordering::Relaxed)
}

/// A bare WebSocket client that completes the handshake and then only
/// reads: it never answers pings, like a client whose process hung.
/// Returns the close code the server sent, if any, once the server hangs up.
pub async fn mute_client_close_code(port: u16, user: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "GET /ws?user={user} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes))
        .await
        .expect("server did not hang up")
        .expect("read");
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("handshake response")
        + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 101"), "no upgrade");
    // Walk the (unmasked) server frames; report the close frame's code.
    let mut frames = &bytes[head_end..];
    while frames.len() >= 2 {
        let opcode = frames[0] & 0x0f;
        let (len, header) = match frames[1] & 0x7f {
            126 => (u16::from_be_bytes([frames[2], frames[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frames[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = &frames[header..header + len];
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
        frames = &frames[header + len..];
    }
    None
}
