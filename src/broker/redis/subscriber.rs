//! The subscriber connection of the Redis broker: one dedicated pub/sub
//! connection (never from the pool) that forwards every delivery to the
//! hub, and a reconciler that compares the topics the hub wants with those
//! subscribed on the current connection and sends SUBSCRIBE / UNSUBSCRIBE
//! for the difference. After a reconnect nothing is subscribed, so the same
//! loop resubscribes everything; the broker counts as healthy (and may
//! publish) only once a round has confirmed every wanted topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::PubSubSink;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::shards::cluster_loop;
use super::target::Target;

use super::read_loop::{read_loop, Change, Context};
use super::repair::Tracker;
use super::streams::Streams;
use crate::broker::BrokerError;
use crate::hub::Hub;
use crate::keys::Keys;
use crate::metrics::{self, Metrics};

/// How often the subscriber connection is probed with PING when idle.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Channels per SUBSCRIBE command when resubscribing many at once.
const SUBSCRIBE_BATCH: usize = 256;

#[derive(Debug, Default)]
struct TopicState {
    /// The hub has local subscribers (or is about to).
    wanted: bool,
    /// Confirmed by Redis on the current subscriber connection.
    active: bool,
    /// An UNSUBSCRIBE is on its way: `active` will not last, so a new
    /// `subscribe()` must wait for the SUBSCRIBE that follows it.
    unsubscribing: bool,
    /// `subscribe()` calls waiting for `active`.
    waiters: Vec<oneshot::Sender<()>>,
    /// Was active, and its subscription was lost (connection dropped,
    /// slot moved): publishes must wait until it is active again.
    lost: bool,
}

/// Desired vs actual subscriptions, shared by the callers and the reconciler.
/// A leaf lock: nothing else is locked while holding it.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    topics: Mutex<HashMap<String, TopicState>>,
    pub(super) changed: Notify,
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TopicState>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a reconcile round must do: the topics wanted but not active
    /// (to subscribe), and those active but no longer wanted (to
    /// unsubscribe; marked as on their way out).
    pub(super) fn pending(&self) -> (Vec<String>, Vec<String>) {
        let mut topics = self.lock();
        let to_sub = topics
            .iter()
            .filter(|(_, s)| s.wanted && !s.active)
            .map(|(n, _)| n.clone())
            .collect();
        let to_unsub = topics
            .iter_mut()
            .filter(|(_, s)| !s.wanted && s.active)
            .map(|(n, s)| {
                s.unsubscribing = true;
                n.clone()
            })
            .collect();
        (to_sub, to_unsub)
    }

    /// Redis confirmed the subscriptions: their waiters are answered.
    pub(super) fn confirmed(&self, names: &[String]) {
        let mut topics = self.lock();
        for name in names {
            // An entry dropped meanwhile comes back unwanted but active,
            // so the next round UNSUBSCRIBEs it instead of leaking it.
            let state = topics.entry(name.clone()).or_default();
            state.active = true;
            state.lost = false;
            for waiter in state.waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Redis confirmed the unsubscriptions.
    pub(super) fn unsubscribed(&self, names: &[String]) {
        let mut topics = self.lock();
        for name in names {
            if let Some(state) = topics.get_mut(name) {
                if state.wanted {
                    // Wanted again meanwhile: the next round resubscribes,
                    // and its waiters are answered only then.
                    state.active = false;
                    state.unsubscribing = false;
                } else {
                    topics.remove(name);
                }
            }
        }
    }

    /// The subscriptions of `lost` are gone with their connection (or
    /// their slot moved): what is still wanted is pending again.
    pub(super) fn lost(&self, lost: impl Fn(&str) -> bool) {
        self.lock().retain(|name, state| {
            if lost(name) {
                state.lost |= state.active && state.wanted;
                state.active = false;
                state.unsubscribing = false;
            }
            state.active || state.wanted || !state.waiters.is_empty()
        });
    }

    /// Whether `name` is wanted, and not on its way out.
    pub(super) fn is_wanted(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|s| s.wanted && !s.unsubscribing)
    }
}

/// The running subscriber: its wanted topics, health and task.
pub(super) struct Subscriber {
    subs: Arc<Subscriptions>,
    healthy: Arc<AtomicBool>,
    /// One subscription per channel on its shard (Redis Cluster), rather
    /// than all on one connection.
    sharded: bool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Subscriber {
    /// Start the subscriber task. Does not wait for Redis: a node may start
    /// before Redis and becomes healthy when it connects.
    pub(super) fn start(
        target: Target,
        node_id: String,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        timeout: Duration,
        streams: Arc<Streams>,
        keys: Keys,
    ) -> Subscriber {
        let subs = Arc::new(Subscriptions::default());
        let healthy = Arc::new(AtomicBool::new(false));
        let cx = Context {
            node_id,
            hub,
            metrics,
            streams,
            keys,
        };
        let sharded = target.is_cluster();
        let task = match target {
            Target::Cluster(spec, tls) => tokio::spawn(cluster_loop(
                spec,
                tls,
                cx,
                subs.clone(),
                healthy.clone(),
                timeout,
            )),
            target => tokio::spawn(subscriber_loop(
                target,
                cx,
                subs.clone(),
                healthy.clone(),
                timeout,
            )),
        };
        Subscriber {
            subs,
            healthy,
            sharded,
            task: Mutex::new(Some(task)),
        }
    }

    /// Want the pub/sub channel `name`; resolves once Redis has confirmed
    /// the subscription on the current connection.
    pub(super) async fn want(&self, name: String) -> Result<(), BrokerError> {
        let rx = {
            let mut topics = self.subs.lock();
            let state = topics.entry(name).or_default();
            state.wanted = true;
            if state.active && !state.unsubscribing {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push(tx);
            rx
        };
        self.subs.changed.notify_one();
        rx.await.map_err(|_| BrokerError::SubscriptionDropped)
    }

    /// Stop wanting `name`. Never blocks (the hub calls it under its lock).
    pub(super) fn unwant(&self, name: String) {
        let mut topics = self.subs.lock();
        if let Some(state) = topics.get_mut(&name) {
            state.wanted = false;
            // Waiters whose subscribe() gave up (timeout) left closed senders.
            state.waiters.retain(|w| !w.is_closed());
            if !state.active && state.waiters.is_empty() {
                // Never confirmed on this connection: nothing to UNSUBSCRIBE.
                topics.remove(&name);
                return;
            }
        }
        drop(topics);
        self.subs.changed.notify_one();
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether a publish on the pub/sub channel `name` would reach this
    /// node's subscribers: on one connection, whether it is up and
    /// resubscribed; sharded, whether this node's subscription to `name`
    /// (if it has one) is not lost and waiting to be made again.
    pub(super) fn may_publish(&self, name: &str) -> bool {
        if !self.sharded {
            return self.is_healthy();
        }
        !self
            .subs
            .lock()
            .get(name)
            .is_some_and(|s| s.wanted && s.lost)
    }

    pub(super) fn shutdown(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Keep a subscriber connection alive for the life of the node.
async fn subscriber_loop(
    target: Target,
    cx: Context,
    subs: Arc<Subscriptions>,
    healthy: Arc<AtomicBool>,
    timeout: Duration,
) {
    let metrics = &*cx.metrics;
    // Outlives each connection: what was delivered before a drop is what
    // the next connection's catch-up starts from.
    let mut tracker = Tracker::default();
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    let mut logged_outage = false;
    loop {
        // With Sentinel, asked anew at each connect: after a failover this
        // is the promoted replica.
        let connect = async { target.client().await?.get_async_pubsub().await };
        let pubsub = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                retry_later(&healthy, metrics, &mut logged_outage, &mut backoff, &e).await;
                continue;
            }
            Err(_) => {
                retry_later(
                    &healthy,
                    metrics,
                    &mut logged_outage,
                    &mut backoff,
                    &"connect timed out",
                )
                .await;
                continue;
            }
        };
        if connected_before {
            metrics::inc(&metrics.redis_reconnects);
            tracing::info!("redis subscriber reconnected; resubscribing");
        }
        connected_before = true;
        logged_outage = false;
        backoff = Duration::from_millis(50);

        // A new connection has no subscriptions: everything wanted is pending again.
        subs.lost(|_| true);
        let (sink, stream) = pubsub.split();
        let (changes, changed) = mpsc::unbounded_channel();
        let reason = tokio::select! {
            () = read_loop(stream, changed, &cx, &mut tracker) => "connection closed".to_owned(),
            e = reconcile_loop(sink, &subs, &healthy, timeout, &changes, &cx) => e,
        };
        healthy.store(false, Ordering::Relaxed);
        metrics::inc(&metrics.broker_errors);
        tracing::warn!(%reason, "redis subscriber connection lost");
    }
}

async fn retry_later(
    healthy: &AtomicBool,
    metrics: &Metrics,
    logged: &mut bool,
    backoff: &mut Duration,
    err: &(dyn std::fmt::Display + Sync),
) {
    healthy.store(false, Ordering::Relaxed);
    metrics::inc(&metrics.broker_errors);
    if !*logged {
        tracing::warn!(error = %err, "redis unreachable; retrying");
        *logged = true;
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
}

/// Bring the connection's subscriptions in line with what is wanted, then
/// wait for a change or probe the connection. Returns why it gave up.
async fn reconcile_loop(
    mut sink: PubSubSink,
    subs: &Subscriptions,
    healthy: &AtomicBool,
    timeout: Duration,
    changes: &mpsc::UnboundedSender<Change>,
    cx: &Context,
) -> String {
    loop {
        // Register interest before reading the state so no change is missed.
        let changed = subs.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

        let (to_sub, to_unsub) = subs.pending();
        for batch in to_sub.chunks(SUBSCRIBE_BATCH) {
            let _ = changes.send(subscribing(cx, batch).await);
            if let Err(why) = bounded("SUBSCRIBE", timeout, sink.subscribe(batch)).await {
                return why;
            }
            subs.confirmed(batch);
        }
        for batch in to_unsub.chunks(SUBSCRIBE_BATCH) {
            if let Err(why) = bounded("UNSUBSCRIBE", timeout, sink.unsubscribe(batch)).await {
                return why;
            }
            subs.unsubscribed(batch);
            let gone = batch
                .iter()
                .filter_map(|name| cx.keys.channel_of_pubsub(name))
                .map(str::to_owned)
                .collect();
            let _ = changes.send(Change::Unsubscribed(gone));
        }
        healthy.store(true, Ordering::Relaxed);

        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep(PROBE_INTERVAL) => {
                if let Err(why) = bounded("PING", timeout, sink.ping::<redis::Value>()).await {
                    return why;
                }
            }
        }
    }
}

/// The news for the read loop that the channels among the pub/sub `names`
/// are about to be subscribed, each with its position read now: the
/// tracker catches up those it delivered before, up to there, and starts
/// new ones there. Sent before the SUBSCRIBE, so that the read loop (which
/// takes news before messages) has it before any message the new
/// subscription brings: a position read before the SUBSCRIBE is behind
/// what arrives live after it, and news that came later would take that
/// for Redis having wound the channel back. A failed read leaves the
/// positions unknown.
pub(super) async fn subscribing(cx: &Context, names: &[String]) -> Change {
    let channels: Vec<&str> = names
        .iter()
        .filter_map(|name| cx.keys.channel_of_pubsub(name))
        .collect();
    let positions = match channels.is_empty() {
        true => Vec::new(),
        false => cx.streams.positions(&channels).await.unwrap_or_default(),
    };
    let mut positions = positions.into_iter();
    Change::Subscribed(
        channels
            .iter()
            .map(|channel| (channel.to_string(), positions.next()))
            .collect(),
    )
}

/// One command on the subscriber connection under the timeout; `Err` says
/// why the connection is given up.
async fn bounded<T>(
    command: &str,
    timeout: Duration,
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{command} failed: {e}")),
        Err(_) => Err(format!("{command} timed out")),
    }
}
