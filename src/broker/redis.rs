//! Cluster mode: messages travel through Redis pub/sub.
//!
//! * Commands (the publish script, direct PUBLISH) go through a deadpool
//!   pool, each bounded by `redis_timeout`, so an outage turns into a prompt
//!   `broker_unavailable` reply instead of a hang.
//! * Deliveries arrive on one dedicated subscriber connection that never
//!   comes from the pool. A reconciler compares the topics the hub wants
//!   with those subscribed on the current connection and sends SUBSCRIBE /
//!   UNSUBSCRIBE for the difference; after a reconnect nothing is
//!   subscribed, so the same loop resubscribes everything. `subscribe()`
//!   resolves only when Redis has confirmed the subscription.
//! * Publishing is one Lua script: it bumps the channel's offset, keeps its
//!   epoch, and PUBLISHes the envelope with both spliced in — one round trip,
//!   and Redis orders the messages of a channel by offset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::{Pool, Runtime};

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::envelope::{self, Delivery};
use super::{Broker, BrokerError, Notice, Publication, Published};
use crate::hub::Hub;
use crate::keys::Keys;
use crate::metrics::{self, Metrics};
use crate::protocol::new_epoch;
use crate::telemetry;
use crate::topic::Topic;

/// How long a channel's offset/epoch survive without a publish. After that
/// the next publish starts a new epoch, which clients read as "positions reset".
const CHANNEL_META_TTL_SECS: u64 = 86_400;
/// How often the subscriber connection is probed with PING when idle.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Channels per SUBSCRIBE command when resubscribing many at once.
const SUBSCRIBE_BATCH: usize = 256;

/// The command pool shared by the broker and presence: every checkout,
/// create and recycle is bounded by `timeout`.
pub fn pool(url: &str, size: usize, timeout: Duration) -> Result<Pool, BrokerError> {
    deadpool_redis::Config::from_url(url)
        .builder()
        .map_err(BrokerError::unavailable)?
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(BrokerError::unavailable)
}

const PUBLISH_LUA: &str = r#"
local ep = redis.call('HGET', KEYS[1], 'e')
if not ep then
  ep = ARGV[4]
  redis.call('HSET', KEYS[1], 'e', ep)
end
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[2],
  ARGV[1] .. off .. ',"ep":"' .. ep .. '"}\n' .. ARGV[2] .. off .. ',"epoch":"' .. ep .. '"' .. ARGV[3])
return {off, ep}
"#;

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
}

/// Desired vs actual subscriptions, shared by the callers and the reconciler.
/// A leaf lock: nothing else is locked while holding it.
#[derive(Debug, Default)]
struct Subscriptions {
    topics: Mutex<HashMap<String, TopicState>>,
    changed: Notify,
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TopicState>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct RedisBroker {
    pool: Pool,
    keys: Keys,
    node_id: String,
    timeout: Duration,
    subs: Arc<Subscriptions>,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    script: redis::Script,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RedisBroker {
    /// Start the subscriber task; commands use `pool`. Does not wait for Redis:
    /// a node may start before Redis and becomes ready when it connects.
    pub fn start(
        url: &str,
        pool: Pool,
        keys: Keys,
        node_id: String,
        timeout: Duration,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<RedisBroker, BrokerError> {
        let client = redis::Client::open(url).map_err(BrokerError::unavailable)?;
        let subs = Arc::new(Subscriptions::default());
        let healthy = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(subscriber_loop(
            client,
            node_id.clone(),
            subs.clone(),
            hub,
            healthy.clone(),
            metrics.clone(),
            timeout,
        ));
        Ok(RedisBroker {
            pool,
            keys,
            node_id,
            timeout,
            subs,
            healthy,
            metrics,
            script: redis::Script::new(PUBLISH_LUA),
            task: Mutex::new(Some(task)),
        })
    }

    /// Run one pooled operation under the operation timeout, counting failures.
    async fn with_timeout<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let result = tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or(Err(BrokerError::Timeout(self.timeout)));
        if result.is_err() {
            metrics::inc(&self.metrics.broker_errors);
        }
        result
    }

    /// PUBLISH a payload under the operation timeout.
    async fn publish_raw(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        self.with_timeout(async {
            let mut conn = self.conn().await?;
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(redis_error)
        })
        .await
        .map(drop)
    }

    /// A pooled connection for a publishing command. Refused while this
    /// node's subscriber connection is down or still resubscribing: Redis
    /// would accept the PUBLISH (the pool reconnects first) and deliver it to
    /// nobody here, and the client would hold an `ok` for a lost message.
    async fn conn(&self) -> Result<deadpool_redis::Connection, BrokerError> {
        if !self.is_healthy() {
            return Err(BrokerError::NotResubscribed);
        }
        self.pool.get().await.map_err(BrokerError::unavailable)
    }
}

fn redis_error(e: redis::RedisError) -> BrokerError {
    BrokerError::unavailable(e)
}

impl Broker for RedisBroker {
    fn publish<'a>(&'a self, p: Publication<'a>) -> BoxFuture<'a, Result<Published, BrokerError>> {
        async move {
            let head = envelope::channel_head(&self.node_id, p.channel, p.traceparent);
            let meta = self.keys.channel_meta(p.channel);
            let chan = self.keys.channel_pubsub(p.channel);
            let epoch = new_epoch();
            let (offset, epoch): (u64, String) = self
                .with_timeout(async {
                    let mut conn = self.conn().await?;
                    self.script
                        .key(&meta)
                        .key(&chan)
                        .arg(&head)
                        .arg(&p.parts.head)
                        .arg(&p.parts.tail)
                        .arg(&epoch)
                        .arg(CHANNEL_META_TTL_SECS)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(redis_error)
                })
                .await?;
            Ok(Published { offset, epoch })
        }
        .boxed()
    }

    fn notify<'a>(&'a self, notice: Notice<'a>) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let (channel, payload) = match notice {
                Notice::Direct { user, frame } => (
                    self.keys.user_pubsub(user),
                    envelope::direct(&self.node_id, user, None, &frame),
                ),
                Notice::Event { channel, frame } => (
                    self.keys.channel_pubsub(channel),
                    envelope::event(&self.node_id, channel, &frame),
                ),
                Notice::Disconnect { user, reason } => (
                    self.keys.user_pubsub(user),
                    envelope::control(&self.node_id, user, reason),
                ),
            };
            self.publish_raw(&channel, &payload).await
        }
        .boxed()
    }

    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let name = self.keys.topic_pubsub(topic);
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
            match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(BrokerError::SubscriptionDropped),
                Err(_) => {
                    metrics::inc(&self.metrics.broker_errors);
                    Err(BrokerError::Timeout(self.timeout))
                }
            }
        }
        .boxed()
    }

    fn unsubscribe(&self, topic: &Topic) {
        let name = self.keys.topic_pubsub(topic);
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

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn shutdown(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keep a subscriber connection alive for the life of the node.
async fn subscriber_loop(
    client: redis::Client,
    node_id: String,
    subs: Arc<Subscriptions>,
    hub: Arc<Hub>,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    let mut logged_outage = false;
    loop {
        let pubsub = match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                retry_later(&healthy, &metrics, &mut logged_outage, &mut backoff, &e).await;
                continue;
            }
            Err(_) => {
                retry_later(
                    &healthy,
                    &metrics,
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
        subs.lock().retain(|_, state| {
            state.active = false;
            state.unsubscribing = false;
            state.wanted || !state.waiters.is_empty()
        });
        let (sink, stream) = pubsub.split();
        let reason = tokio::select! {
            () = read_loop(stream, &hub, &metrics, &node_id) => "connection closed".to_owned(),
            e = reconcile_loop(sink, &subs, &healthy, timeout) => e,
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

/// Forward every pub/sub message to the hub. Ends when the connection does.
async fn read_loop(mut stream: PubSubStream, hub: &Hub, metrics: &Metrics, node_id: &str) {
    while let Some(msg) = stream.next().await {
        match envelope::decode(msg.get_payload_bytes()) {
            Ok((header, Delivery::Frame { topic, frame })) => {
                metrics::inc(&metrics.broker_messages_in);
                let channel = header.c.as_deref().unwrap_or_default();
                let span =
                    telemetry::deliver_span(channel, node_id, frame.len(), header.tp.as_deref());
                let recipients = span.in_scope(|| hub.dispatch(&topic, &frame));
                span.record("recipients", recipients);
            }
            Ok((_header, Delivery::Disconnect { user, reason })) => {
                let closed = hub.close_user(&user, reason);
                tracing::debug!(%user, closed, reason = reason.name(), "disconnect requested");
            }
            Err(e) => {
                tracing::warn!(channel = msg.get_channel_name(), error = %e, "dropping malformed envelope");
            }
        }
    }
}

/// Bring the connection's subscriptions in line with what is wanted, then
/// wait for a change or probe the connection. Returns why it gave up.
async fn reconcile_loop(
    mut sink: PubSubSink,
    subs: &Subscriptions,
    healthy: &AtomicBool,
    timeout: Duration,
) -> String {
    loop {
        // Register interest before reading the state so no change is missed.
        let changed = subs.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

        let (to_sub, to_unsub): (Vec<String>, Vec<String>) = {
            let mut topics = subs.lock();
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
        };
        for batch in to_sub.chunks(SUBSCRIBE_BATCH) {
            match tokio::time::timeout(timeout, sink.subscribe(batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return format!("SUBSCRIBE failed: {e}"),
                Err(_) => return "SUBSCRIBE timed out".to_owned(),
            }
            let mut topics = subs.lock();
            for name in batch {
                // An entry dropped meanwhile comes back unwanted but active,
                // so the next round UNSUBSCRIBEs it instead of leaking it.
                let state = topics.entry(name.clone()).or_default();
                state.active = true;
                for waiter in state.waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }
        for batch in to_unsub.chunks(SUBSCRIBE_BATCH) {
            match tokio::time::timeout(timeout, sink.unsubscribe(batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return format!("UNSUBSCRIBE failed: {e}"),
                Err(_) => return "UNSUBSCRIBE timed out".to_owned(),
            }
            let mut topics = subs.lock();
            for name in batch {
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
        healthy.store(true, Ordering::Relaxed);

        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep(PROBE_INTERVAL) => {
                match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("PING failed: {e}"),
                    Err(_) => return "PING timed out".to_owned(),
                }
            }
        }
    }
}
