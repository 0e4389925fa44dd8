//! Counting every acknowledged message through faults.
//!
//! * A [`Publisher`] publishes numbered messages (`data: {"seq": n}`), each
//!   with its own `idempotency_key`, one at a time; a refusal or a lost
//!   connection makes it retry the same message with the same key
//!   (reconnecting to the next node that answers) until it is
//!   acknowledged. Every acknowledgement goes into the [`Ledger`].
//! * A [`Receiver`] subscribes and logs every message and every resync
//!   notice it gets; whenever its connection ends it reconnects (to any
//!   node that answers) and subscribes again with `since` its position.
//! * [`verify`] holds each receiver's log against the ledger: every
//!   acknowledged message exactly once, in offset order — or, where the
//!   test allows it, a resync notice covering what is missing. Never a
//!   silent loss.

mod receiver;
mod verify;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Client;
use switchboard_fixtures::poll_until;

pub use receiver::{Event, Receiver, ReceiverLog};
pub use verify::{verify, Resync};

/// How long a fault test waits for publishing or delivery to get going
/// again (a bound on a hang, not a measure of speed).
pub const RECOVERY_WAIT: Duration = Duration::from_secs(30);

/// Pause between attempts while a node or Redis is away: a retry
/// back-off, not a wait for something to happen.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One acknowledged publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub seq: u64,
    pub offset: u64,
    pub epoch: String,
}

/// The acknowledged publishes, in the order they were acknowledged.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<Vec<Acked>>>);

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Acked>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn snapshot(&self) -> Vec<Acked> {
        self.lock().clone()
    }

    /// Wait until `n` publishes have been acknowledged in all.
    pub async fn wait_for(&self, n: usize) {
        let reached = poll_until(RECOVERY_WAIT, || std::future::ready(self.len() >= n)).await;
        assert!(
            reached,
            "timed out waiting for {n} acknowledged publishes; {} so far",
            self.len()
        );
    }

    /// Wait until `more` publishes beyond the current count are acknowledged.
    pub async fn wait_more(&self, more: usize) {
        self.wait_for(self.len() + more).await;
    }
}

/// What the publisher went through.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Refusals by error code (each followed by a retry with the same key).
    pub refused: BTreeMap<String, u64>,
    /// Connections lost mid-request or refused (each followed by a retry).
    pub reconnects: u64,
}

/// Publishes numbered messages until stopped; see the module docs.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<PublisherStats>,
}

impl Publisher {
    /// Publish to `channel` through the nodes at `urls` (the first one
    /// while it answers), each message padded with `pad` bytes of data.
    pub fn start(urls: Vec<String>, channel: &str, pad: usize, ledger: &Ledger) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(publish_loop(
            urls,
            channel.to_owned(),
            "x".repeat(pad),
            ledger.clone(),
            stop.clone(),
        ));
        Publisher { stop, task }
    }

    /// Stop after the publish in flight is acknowledged.
    pub async fn stop(self) -> PublisherStats {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(RECOVERY_WAIT, self.task)
            .await
            .expect("the publisher did not stop")
            .expect("the publisher failed")
    }
}

async fn publish_loop(
    urls: Vec<String>,
    channel: String,
    pad: String,
    ledger: Ledger,
    stop: Arc<AtomicBool>,
) -> PublisherStats {
    let mut stats = PublisherStats::default();
    let mut nodes = Nodes::new(urls);
    let mut client: Option<Client> = None;
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let frame = json!({
            "type": "publish",
            "channel": channel,
            "data": {"seq": seq, "pad": pad},
            "idempotency_key": format!("seq-{seq}"),
        });
        let deadline = Instant::now() + RECOVERY_WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "publish #{seq} not acknowledged in {RECOVERY_WAIT:?}: {stats:?}"
            );
            let c = match client.as_mut() {
                Some(c) => c,
                None => client.insert(nodes.connect(deadline).await),
            };
            match c.try_request(frame.clone()).await {
                Ok(reply) if reply["ok"] == true => {
                    let offset = reply["offset"].as_u64().expect("offset in the reply");
                    let epoch = reply["epoch"].as_str().expect("epoch in the reply");
                    ledger.lock().push(Acked {
                        seq,
                        offset,
                        epoch: epoch.to_owned(),
                    });
                    break;
                }
                Ok(reply) => {
                    let code = reply["error"]["code"].as_str().unwrap_or_default();
                    assert!(
                        matches!(code, "broker_unavailable" | "internal" | "rate_limited"),
                        "publish #{seq} refused for good: {reply}"
                    );
                    *stats.refused.entry(code.to_owned()).or_default() += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(_) => {
                    stats.reconnects += 1;
                    client = None;
                }
            }
        }
    }
    stats
}

/// The nodes a client may use: the current one first, then the others.
pub(super) struct Nodes {
    pub(super) urls: Vec<String>,
    pub(super) current: usize,
}

impl Nodes {
    pub(super) fn new(urls: Vec<String>) -> Nodes {
        assert!(!urls.is_empty());
        Nodes { urls, current: 0 }
    }

    /// A connection to the first node that answers, trying each in turn.
    pub(super) async fn connect(&mut self, deadline: Instant) -> Client {
        loop {
            for _ in 0..self.urls.len() {
                if let Some(client) = Client::try_connect(&self.urls[self.current]).await {
                    return client;
                }
                self.current = (self.current + 1) % self.urls.len();
            }
            assert!(
                Instant::now() < deadline,
                "no node answered at {:?}",
                self.urls
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Move on from the current node (it failed us).
    pub(super) fn skip(&mut self) {
        self.current = (self.current + 1) % self.urls.len();
    }
}

/// A counter of a node's `/metrics` text (`name{labels} value`).
pub fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let key = key.split_once('{').map_or(key, |(key, _)| key);
            (key == name).then(|| value.trim().parse::<u64>().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{metrics}"))
}
