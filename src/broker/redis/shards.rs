//! The subscriber on a Redis Cluster: sharded pub/sub. A channel's
//! messages are SPUBLISHed on the master that holds its slot (its offset,
//! history and presence keys share the slot through their hash tag), so
//! the node SSUBSCRIBEs each wanted channel on that master, over one RESP3
//! connection per master it needs — not on every node of the cluster, as
//! plain PUBLISH would broadcast.
//!
//! The same reconcile loop as a single server's (`subscriber`), with a
//! slot map: a wanted channel is subscribed on the master its slot names.
//! A subscription ends without being asked for when
//! * its slot moved to another master (resharding): the old master pushes
//!   `sunsubscribe` for it;
//! * its master's connection dropped (killed, failed over): the connection
//!   reports `Disconnection`, or the probe PING fails;
//! * SSUBSCRIBE is answered `MOVED` (the map was stale).
//!
//! Each time the map is read again and the channel subscribed where it
//! now lives; the read loop's tracker catches it up from history, as after
//! a single server's reconnect. Until everything wanted is subscribed
//! again the broker reports unhealthy and refuses publishes.
//!
//! Replies are checked against what was asked: redis-rs takes a pushed
//! `sunsubscribe` for the reply to the oldest request in flight, so a
//! reply that does not match means the connection's replies are off by
//! one, and it is dropped and its channels subscribed anew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ErrorKind, Msg, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::read_loop::{read_loop, Change, Context};
use super::repair::Tracker;
use super::slots::{slot, SlotMap};
use super::subscriber::{subscribing, Subscriptions};
use super::target::{client, ClusterSpec};
use crate::config::RedisTls;
use crate::metrics::{self, Metrics};

/// How often each shard connection is probed with PING when idle.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// SSUBSCRIBEs in flight at once on one connection (one channel each:
/// channels of one command must share a slot).
const SUBSCRIBE_BATCH: usize = 256;

/// What a shard connection reports besides messages.
enum Event {
    /// The master pushed `sunsubscribe` for a channel (or confirmed ours).
    Sunsubscribed { master: String, name: String },
    /// The connection to a master dropped.
    Down { master: String },
}

/// The cluster subscriber's state between rounds.
struct Shards {
    spec: ClusterSpec,
    tls: RedisTls,
    timeout: Duration,
    map: SlotMap,
    /// The map must be read again before it is used.
    stale: bool,
    /// One connection per master with subscriptions (or about to).
    conns: HashMap<String, MultiplexedConnection>,
    /// Where each subscribed pub/sub name is subscribed.
    on: HashMap<String, String>,
    messages: mpsc::UnboundedSender<Msg>,
    events: mpsc::UnboundedSender<Event>,
}

/// Run the sharded subscriber for the life of the node.
pub(super) async fn cluster_loop(
    spec: ClusterSpec,
    tls: RedisTls,
    cx: Context,
    subs: Arc<Subscriptions>,
    healthy: Arc<AtomicBool>,
    timeout: Duration,
) {
    let (messages, mut inbox) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    let (changes, changed) = mpsc::unbounded_channel();
    let mut shards = Shards {
        spec,
        tls,
        timeout,
        map: SlotMap::default(),
        stale: true,
        conns: HashMap::new(),
        on: HashMap::new(),
        messages,
        events,
    };
    // Outlives every connection: what was delivered before a channel moved
    // is where its catch-up starts.
    let mut tracker = Tracker::default();
    let stream = futures_util::stream::poll_fn(move |task| inbox.poll_recv(task));
    tokio::select! {
        () = read_loop(stream, changed, &cx, &mut tracker) => {}
        () = shards.reconcile_loop(&subs, &healthy, events_rx, &changes, &cx) => {}
    }
}

impl Shards {
    async fn reconcile_loop(
        &mut self,
        subs: &Subscriptions,
        healthy: &AtomicBool,
        mut events: mpsc::UnboundedReceiver<Event>,
        changes: &mpsc::UnboundedSender<Change>,
        cx: &Context,
    ) {
        let metrics = &*cx.metrics;
        let mut backoff = Duration::from_millis(50);
        let mut logged = false;
        loop {
            let changed = subs.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let done = self.round(subs, changes, cx).await;
            match &done {
                Ok(()) => {
                    healthy.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(50);
                    if logged {
                        tracing::info!("redis cluster subscriptions restored");
                        logged = false;
                    }
                }
                Err(why) => {
                    healthy.store(false, Ordering::Relaxed);
                    metrics::inc(&metrics.broker_errors);
                    if !logged {
                        tracing::warn!(%why, "redis cluster subscriptions incomplete; retrying");
                        logged = true;
                    }
                }
            }
            let wait = match done {
                Ok(()) => PROBE_INTERVAL,
                Err(_) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    wait
                }
            };
            tokio::select! {
                () = &mut changed => {}
                Some(event) = events.recv() => {
                    if self.lost(event, subs, metrics) {
                        healthy.store(false, Ordering::Relaxed);
                    }
                }
                () = tokio::time::sleep(wait) => {
                    if done.is_ok() && !self.probe(subs, metrics).await {
                        healthy.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// One reconcile round: read the map if stale, SSUBSCRIBE what is
    /// wanted where its slot lives, SUNSUBSCRIBE what is not. `Err` says
    /// why something wanted is not subscribed yet.
    async fn round(
        &mut self,
        subs: &Subscriptions,
        changes: &mpsc::UnboundedSender<Change>,
        cx: &Context,
    ) -> Result<(), String> {
        if self.stale {
            let known: Vec<String> = self.conns.keys().cloned().collect();
            self.map = SlotMap::load(&self.spec, &self.tls, known, self.timeout).await?;
            self.stale = false;
            // Connections to nodes that master nothing now (demoted, or
            // gone from the cluster) are dropped with what they carried.
            let gone: Vec<String> = self
                .conns
                .keys()
                .filter(|m| !self.map.is_master(m))
                .cloned()
                .collect();
            for master in gone {
                self.drop_master(&master, subs, &cx.metrics);
            }
        }
        let (to_sub, to_unsub) = subs.pending();
        let mut failed = None;
        let mut by_master: HashMap<String, Vec<String>> = HashMap::new();
        for name in to_sub {
            match self.map.master(slot(&name)) {
                Some(master) => by_master.entry(master.to_owned()).or_default().push(name),
                None => {
                    self.stale = true;
                    failed = Some(format!("no master serves the slot of {name}"));
                }
            }
        }
        for (master, names) in by_master {
            if let Err(why) = self.subscribe(&master, &names, subs, changes, cx).await {
                failed = Some(why);
            }
        }
        let mut gone = Vec::new();
        for name in to_unsub {
            let conn = self.on.get(&name).and_then(|m| self.conns.get(m)).cloned();
            if let Some(mut conn) = conn {
                let asked = ask(&mut conn, "SUNSUBSCRIBE", &name, self.timeout).await;
                if !is_confirmation(&asked, PushKind::SUnsubscribe, &name) {
                    let master = self.on.get(&name).cloned().unwrap_or_default();
                    self.drop_master(&master, subs, &cx.metrics);
                    failed = Some(format!("SUNSUBSCRIBE on {master}: {asked:?}"));
                    continue;
                }
            }
            // Not subscribed anywhere any more (its connection is gone):
            // nothing to undo.
            self.on.remove(&name);
            subs.unsubscribed(std::slice::from_ref(&name));
            gone.extend(cx.keys.channel_of_pubsub(&name).map(str::to_owned));
        }
        if !gone.is_empty() {
            let _ = changes.send(Change::Unsubscribed(gone));
        }
        failed.map_or(Ok(()), Err)
    }

    /// SSUBSCRIBE `names` (all of `master`'s slots) on `master`.
    async fn subscribe(
        &mut self,
        master: &str,
        names: &[String],
        subs: &Subscriptions,
        changes: &mpsc::UnboundedSender<Change>,
        cx: &Context,
    ) -> Result<(), String> {
        let conn = match self.conns.get(master) {
            Some(conn) => conn.clone(),
            None => {
                let conn = self.connect(master).await.map_err(|e| {
                    self.stale = true;
                    format!("connect to {master}: {e}")
                })?;
                self.conns.insert(master.to_owned(), conn.clone());
                conn
            }
        };
        let timeout = self.timeout;
        for batch in names.chunks(SUBSCRIBE_BATCH) {
            // A channel whose SSUBSCRIBE fails below is tracked from here
            // all the same; its next attempt catches up from this point.
            let _ = changes.send(subscribing(cx, batch).await);
            let asked = join_all(batch.iter().map(|name| {
                let mut conn = conn.clone();
                async move { ask(&mut conn, "SSUBSCRIBE", name, timeout).await }
            }))
            .await;
            let mut confirmed = Vec::with_capacity(batch.len());
            let mut failed = None;
            for (name, asked) in batch.iter().zip(asked) {
                if is_confirmation(&asked, PushKind::SSubscribe, name) {
                    self.on.insert(name.clone(), master.to_owned());
                    confirmed.push(name.clone());
                } else if matches!(&asked, Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::Moved))
                {
                    // The slot moved: read the map again next round.
                    self.stale = true;
                    failed = Some(format!("SSUBSCRIBE {name} on {master}: moved"));
                } else {
                    failed = Some(format!("SSUBSCRIBE {name} on {master}: {asked:?}"));
                }
            }
            subs.confirmed(&confirmed);
            if let Some(why) = failed {
                if !self.stale {
                    // Not a redirect: the connection is in doubt.
                    self.drop_master(master, subs, &cx.metrics);
                }
                return Err(why);
            }
        }
        Ok(())
    }

    /// A RESP3 connection to `master` whose pushes go to the read loop
    /// (messages) and to the reconciler (unsubscriptions, disconnection).
    async fn connect(&self, master: &str) -> redis::RedisResult<MultiplexedConnection> {
        let url = format!("{}/?protocol=resp3", self.spec.node_url(master));
        let (messages, events, at) = (
            self.messages.clone(),
            self.events.clone(),
            master.to_owned(),
        );
        let pushes = move |push: PushInfo| -> Result<(), ()> {
            match push.kind {
                PushKind::SMessage => {
                    if let Some(msg) = Msg::from_push_info(push) {
                        let _ = messages.send(msg);
                    }
                }
                PushKind::SUnsubscribe => {
                    if let Some(Value::BulkString(name)) = push.data.first() {
                        let name = String::from_utf8_lossy(name).into_owned();
                        let master = at.clone();
                        let _ = events.send(Event::Sunsubscribed { master, name });
                    }
                }
                PushKind::Disconnection => {
                    let _ = events.send(Event::Down { master: at.clone() });
                }
                _ => {}
            }
            Ok(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(pushes);
        let connect = async {
            client(&url, &self.tls)?
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .unwrap_or_else(|_| Err((ErrorKind::Io, "connect timed out").into()))
    }

    /// Take in what a connection reported; whether a wanted subscription
    /// was lost by it.
    fn lost(&mut self, event: Event, subs: &Subscriptions, metrics: &Metrics) -> bool {
        match event {
            Event::Sunsubscribed { master, name } => {
                // Ours (SUNSUBSCRIBE) or stale (it lives elsewhere now)?
                if self.on.get(&name) != Some(&master) || !subs.is_wanted(&name) {
                    return false;
                }
                tracing::debug!(%master, channel = %name, "slot moved; resubscribing where it lives now");
                self.on.remove(&name);
                subs.lost(|n| n == name);
                self.stale = true;
                true
            }
            Event::Down { master } => {
                if !self.conns.contains_key(&master) {
                    return false;
                }
                self.drop_master(&master, subs, metrics);
                true
            }
        }
    }

    /// PING every connection; drop those that do not answer PONG.
    async fn probe(&mut self, subs: &Subscriptions, metrics: &Metrics) -> bool {
        let conns: Vec<(String, MultiplexedConnection)> = self
            .conns
            .iter()
            .map(|(m, c)| (m.clone(), c.clone()))
            .collect();
        let timeout = self.timeout;
        let answers = join_all(conns.into_iter().map(|(master, mut conn)| async move {
            let ping = redis::cmd("PING");
            let ok = matches!(
                tokio::time::timeout(timeout, ping.query_async::<String>(&mut conn)).await,
                Ok(Ok(pong)) if pong == "PONG"
            );
            (master, ok)
        }))
        .await;
        let mut all = true;
        for (master, ok) in answers {
            if !ok {
                self.drop_master(&master, subs, metrics);
                all = false;
            }
        }
        all
    }

    /// Give up the connection to `master`: its subscriptions are pending
    /// again, wherever their slots live now.
    fn drop_master(&mut self, master: &str, subs: &Subscriptions, metrics: &Metrics) {
        if self.conns.remove(master).is_none() {
            return;
        }
        metrics::inc(&metrics.redis_reconnects);
        tracing::warn!(%master, "redis cluster shard connection dropped; resubscribing");
        let mut carried = std::collections::HashSet::new();
        self.on.retain(|name, m| {
            let here = m == master;
            if here {
                carried.insert(name.clone());
            }
            !here
        });
        subs.lost(|name| carried.contains(name));
        self.stale = true;
    }
}

/// `COMMAND name` under the timeout.
async fn ask(
    conn: &mut MultiplexedConnection,
    command: &str,
    name: &str,
    timeout: Duration,
) -> redis::RedisResult<Value> {
    let mut request = redis::cmd(command);
    request.arg(name);
    let answer = tokio::time::timeout(timeout, conn.req_packed_command(&request))
        .await
        .unwrap_or_else(|_| Err((ErrorKind::Io, "timed out").into()))?;
    // An error reply (MOVED) comes as a value.
    answer.extract_error()
}

/// Whether `answer` confirms `kind` for the channel `name`.
fn is_confirmation(answer: &redis::RedisResult<Value>, kind: PushKind, name: &str) -> bool {
    matches!(answer, Ok(Value::Push { kind: k, data }) if *k == kind
        && matches!(data.first(), Some(Value::BulkString(n)) if n == name.as_bytes()))
}
