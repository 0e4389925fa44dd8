//! A subscriber that reconnects with its position and logs what it gets.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Acked, Nodes, RECOVERY_WAIT, RETRY_PAUSE};
use crate::support::Client;

/// What a receiver got, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message {
        offset: u64,
        epoch: String,
        seq: u64,
    },
    /// The client was told to resync: a `resync` frame, or a subscription
    /// answered `recovered: false`.
    Notice(String),
    /// It subscribed again, at `url`, with `since` its position; the
    /// reply's offset and `recovered`.
    Resubscribed {
        url: String,
        since: u64,
        top: u64,
        recovered: bool,
    },
}

/// A receiver's log once it is done.
#[derive(Debug)]
pub struct ReceiverLog {
    pub name: String,
    pub events: Vec<Event>,
    /// Times its connection ended and it subscribed again with `since`.
    pub reconnects: u32,
    /// For each `recovered: true`: the offset it resumed from and the
    /// channel's offset then (above it: messages were replayed).
    pub resumed: Vec<(u64, u64)>,
    /// Whether it got as far as the last acknowledged message.
    pub finished: bool,
    /// Where it stood at the end.
    pub position: (u64, String),
}

impl ReceiverLog {
    /// How many messages its `recovered: true` subscriptions replayed.
    pub fn replayed(&self) -> u64 {
        self.resumed.iter().map(|(since, top)| top - since).sum()
    }

    pub fn notices(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Notice(n) => Some(n.as_str()),
                Event::Message { .. } | Event::Resubscribed { .. } => None,
            })
            .collect()
    }
}

/// A subscriber that survives its connection; see the module docs.
pub struct Receiver {
    target: watch::Sender<Option<(u64, String)>>,
    bounce: Arc<Notify>,
    task: JoinHandle<ReceiverLog>,
}

impl Receiver {
    /// Connect to the first node of `urls` (each a `/ws?user=...` URL) and
    /// subscribe to `channel`; returns once subscribed, so every message
    /// acknowledged from now on is owed to it.
    pub async fn start(name: &str, urls: Vec<String>, channel: &str) -> Receiver {
        let mut client = Client::connect(&urls[0]).await;
        let reply = client
            .ok(json!({"type": "subscribe", "channel": channel}))
            .await;
        let position = position_of(&reply);
        let (target, target_rx) = watch::channel(None);
        let bounce = Arc::new(Notify::new());
        let state = ReceiverState {
            log: ReceiverLog {
                name: name.to_owned(),
                events: Vec::new(),
                reconnects: 0,
                resumed: Vec::new(),
                finished: false,
                position,
            },
            channel: channel.to_owned(),
            nodes: Nodes::new(urls),
        };
        let task = tokio::spawn(state.run(client, target_rx, bounce.clone()));
        Receiver {
            target,
            bounce,
            task,
        }
    }

    /// Drop the connection now and reconnect with the position, as a
    /// client whose network changed would.
    pub fn bounce(&self) {
        self.bounce.notify_one();
    }

    /// Wait until it has received `last` (the last acknowledged message),
    /// or [`RECOVERY_WAIT`] passes; its log either way.
    pub async fn finish(self, last: &Acked) -> ReceiverLog {
        self.target
            .send(Some((last.offset, last.epoch.clone())))
            .expect("receiver running");
        self.task.await.expect("the receiver failed")
    }
}

struct ReceiverState {
    log: ReceiverLog,
    channel: String,
    nodes: Nodes,
}

impl ReceiverState {
    async fn run(
        mut self,
        mut client: Client,
        mut target: watch::Receiver<Option<(u64, String)>>,
        bounce: Arc<Notify>,
    ) -> ReceiverLog {
        // Unbounded until the test names the last message; then bounded.
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some((offset, epoch)) = target.borrow().clone() {
                let (at, at_epoch) = &self.log.position;
                if *at_epoch == epoch && *at >= offset {
                    self.log.finished = true;
                    return self.log;
                }
                deadline.get_or_insert_with(|| Instant::now() + RECOVERY_WAIT);
            }
            let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = bounce.notified() => {
                    drop(client);
                    client = self.resubscribe(until).await;
                }
                Ok(()) = target.changed() => {}
                frame = client.frame_or_end() => match frame {
                    Ok(frame) => self.on_frame(&frame),
                    Err(_) => client = self.resubscribe(until).await,
                },
                () = tokio::time::sleep_until(until) => return self.log,
            }
        }
    }

    fn on_frame(&mut self, frame: &Value) {
        match frame["type"].as_str() {
            Some("message") if frame["channel"] == self.channel.as_str() => {
                let offset = frame["offset"].as_u64().expect("offset");
                let epoch = frame["epoch"].as_str().expect("epoch").to_owned();
                let seq = frame["data"]["seq"].as_u64().expect("seq");
                self.log.position = (offset, epoch.clone());
                self.log.events.push(Event::Message { offset, epoch, seq });
            }
            Some("resync") if frame["channel"] == self.channel.as_str() => {
                let reason = frame["reason"].as_str().unwrap_or_default();
                self.log
                    .events
                    .push(Event::Notice(format!("resync {reason}")));
            }
            _ => panic!("{}: unexpected frame {frame}", self.log.name),
        }
    }

    /// Connect to any node and subscribe with `since` the position,
    /// retrying while nodes or Redis are away.
    async fn resubscribe(&mut self, deadline: Instant) -> Client {
        self.log.reconnects += 1;
        let deadline = deadline.min(Instant::now() + RECOVERY_WAIT);
        loop {
            let mut client = self.nodes.connect(deadline).await;
            let (offset, epoch) = &self.log.position;
            let frame = json!({
                "type": "subscribe",
                "channel": self.channel,
                "since": {"offset": offset, "epoch": epoch},
            });
            loop {
                assert!(
                    Instant::now() < deadline,
                    "{}: could not subscribe again in time",
                    self.log.name
                );
                match client.try_request(frame.clone()).await {
                    Ok(reply) if reply["ok"] == true => {
                        let since = *offset;
                        let top = position_of(&reply).0;
                        let recovered = reply["recovered"] == true;
                        self.log.events.push(Event::Resubscribed {
                            url: self.nodes.urls[self.nodes.current].clone(),
                            since,
                            top,
                            recovered,
                        });
                        if recovered {
                            self.log.resumed.push((since, top));
                        } else {
                            assert_eq!(reply["recovered"], false, "{reply}");
                            self.log
                                .events
                                .push(Event::Notice("recovered:false".into()));
                            self.log.position = position_of(&reply);
                        }
                        return client;
                    }
                    Ok(reply) => {
                        let code = reply["error"]["code"].as_str().unwrap_or_default();
                        assert_eq!(code, "broker_unavailable", "{}: {reply}", self.log.name);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Err(_) => {
                        self.nodes.skip();
                        break;
                    }
                }
            }
        }
    }
}

/// The (offset, epoch) of a subscribe reply.
fn position_of(reply: &Value) -> (u64, String) {
    let offset = reply["offset"].as_u64();
    let epoch = reply["epoch"].as_str();
    match (offset, epoch) {
        (Some(offset), Some(epoch)) => (offset, epoch.to_owned()),
        _ => panic!("no position in {reply} (does the channel keep history?)"),
    }
}
