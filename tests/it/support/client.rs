//! A WebSocket client (tokio-tungstenite) that speaks the gateway's JSON
//! protocol and keeps frames it was not waiting for.

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    next_id: u64,
    pub welcome: Value,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Close(u16),
    /// Closed without a close frame (reset or EOF).
    Dropped,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Client::connect_request(url, None).await
    }

    /// Connect with an optional `Authorization: Bearer` token and read the welcome.
    pub async fn connect_request(url: &str, bearer: Option<&str>) -> Client {
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

    /// Connect and read the welcome, or None if the node refuses, is not
    /// there, or ends the connection first (a node going down or draining).
    pub async fn try_connect(url: &str) -> Option<Client> {
        let connecting = tokio_tungstenite::connect_async(url);
        let (ws, _) = tokio::time::timeout(WAIT, connecting).await.ok()?.ok()?;
        let mut client = Client {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
            welcome: Value::Null,
        };
        let welcome = client.try_next_frame().await.ok()?;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client.welcome = welcome;
        Some(client)
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

    /// Send, or false if the connection is already closed (a server that
    /// ends a flood may close before the client has sent it all).
    pub async fn try_send(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// The next message from the socket, pings and pongs included.
    async fn read_message(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("no frame in time")
            .expect("socket ended")
            .expect("socket error")
    }

    /// The next JSON text frame from the socket (not from the pending queue).
    async fn read_frame(&mut self) -> Value {
        loop {
            match self.read_message().await {
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

    /// [`Client::request`] on a connection that may end meanwhile: the
    /// reply, or how the connection ended.
    pub async fn try_request(&mut self, mut frame: Value) -> Result<Value, Ended> {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        if self
            .ws
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            return Err(Ended::Dropped);
        }
        loop {
            let v = match self.next_or_end().await? {
                Message::Text(t) => serde_json::from_str::<Value>(t.as_str()).expect("JSON"),
                _ => continue,
            };
            if v["type"] == "reply" && v["id"] == json!(id) {
                return Ok(v);
            }
            self.pending.push_back(v);
        }
    }

    /// The next JSON frame (pending ones first) or how the connection
    /// ended, with no time limit: the caller bounds the wait. Cancel-safe,
    /// so it can race other events in a `select!`.
    pub async fn frame_or_end(&mut self) -> Result<Value, Ended> {
        if let Some(v) = self.pending.pop_front() {
            return Ok(v);
        }
        loop {
            match self.ws.next().await {
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

    pub async fn unsubscribe(&mut self, channel: &str) {
        self.ok(json!({"type": "unsubscribe", "channel": channel}))
            .await;
    }

    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        self.ok(json!({"type": "publish", "channel": channel, "data": data}))
            .await
    }

    /// Send `data` to every connection of `user`.
    pub async fn send_to(&mut self, user: &str, data: Value) {
        self.ok(json!({"type": "send", "user": user, "data": data}))
            .await;
    }

    /// The next frame, which must be of the given type: nothing is skipped.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let v = self.next_frame().await;
        assert_eq!(v["type"], kind, "{v}");
        v
    }

    /// The next frame must be a `kind` frame carrying `marker`. A marker
    /// sent after something that must not arrive proves its absence: had
    /// it come, it would have come first.
    pub async fn expect_marker(&mut self, kind: &str, marker: &Value) {
        let v = self.next_frame().await;
        assert_eq!(
            (v["type"].as_str(), &v["data"]),
            (Some(kind), marker),
            "expected the marker, got {v}"
        );
    }

    /// Keep reading until `n` server pings have arrived (tungstenite
    /// answers each one); any other frame is a failure.
    pub async fn answer_pings(&mut self, n: usize) {
        if let Some(v) = self.pending.pop_front() {
            panic!("unexpected frame {v}");
        }
        let mut pings = 0;
        while pings < n {
            match self.read_message().await {
                Message::Ping(_) => pings += 1,
                Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next JSON frame, or how the connection ended.
    pub async fn try_next_frame(&mut self) -> Result<Value, Ended> {
        if let Some(v) = self.pending.pop_front() {
            return Ok(v);
        }
        loop {
            match self.next_or_end().await? {
                Message::Text(t) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("server sent JSON"))
                }
                _ => continue,
            }
        }
    }

    /// Read until the connection ends; frames before the end are discarded.
    pub async fn ended(&mut self) -> Ended {
        loop {
            if let Err(ended) = self.next_or_end().await {
                return ended;
            }
        }
    }

    /// The next message, or how the connection ended.
    async fn next_or_end(&mut self) -> Result<Message, Ended> {
        match tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("neither a frame nor the end in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => Err(Ended::Close(u16::from(frame.code))),
            Some(Ok(Message::Close(None))) => Err(Ended::Close(1005)),
            Some(Ok(msg)) => Ok(msg),
            Some(Err(_)) | None => Err(Ended::Dropped),
        }
    }

    /// Send a close frame and wait for the server's.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}
