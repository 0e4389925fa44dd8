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

mod pool;
mod read_loop;
mod repair;
mod shards;
mod slots;
mod streams;
mod subscriber;
mod target;

pub use self::pool::{get as connection, pool, query_all, Pool};
pub use self::target::{ClusterSpec, SentinelSpec, Target};

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};

use self::streams::{publish_lua, Streams, CHANNEL_META_TTL};
use self::subscriber::Subscriber;
use super::envelope;
use super::{Broker, BrokerError, History, HistoryQuery, Notice, Position, Publication};
use crate::config::Settings;
use crate::hub::Hub;
use crate::keys::Keys;
use crate::metrics::{self, Metrics};
use crate::protocol::new_epoch;
use crate::topic::Topic;

pub struct RedisBroker {
    pool: Pool,
    keys: Keys,
    node_id: String,
    timeout: Duration,
    subscriber: Subscriber,
    streams: Arc<Streams>,
    metrics: Arc<Metrics>,
    script: redis::Script,
    /// Replicas that must hold a publish before it is acknowledged.
    wait_replicas: usize,
    /// On a Redis Cluster: sharded pub/sub (SPUBLISH), so a message goes
    /// only to its channel's shard instead of to every node of the cluster.
    sharded: bool,
}

impl RedisBroker {
    /// Start the subscriber task; commands use `pool`. Does not wait for Redis:
    /// a node may start before Redis and becomes ready when it connects.
    /// Of `settings` it reads the node id, `redis_timeout` and
    /// `redis_wait_replicas`.
    pub fn start(
        target: Target,
        pool: Pool,
        keys: Keys,
        settings: &Settings,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<RedisBroker, BrokerError> {
        let node_id = settings.node_id.clone();
        let timeout = settings.redis_timeout;
        let sharded = target.is_cluster();
        let streams = Arc::new(Streams::new(pool.clone(), keys.clone(), timeout));
        let subscriber = Subscriber::start(
            target,
            node_id.clone(),
            hub,
            metrics.clone(),
            timeout,
            streams.clone(),
            keys.clone(),
        );
        Ok(RedisBroker {
            pool,
            keys,
            node_id,
            timeout,
            subscriber,
            streams,
            metrics,
            script: redis::Script::new(&publish_lua(sharded)),
            wait_replicas: settings.redis_wait_replicas,
            sharded,
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

    /// PUBLISH (SPUBLISH on a cluster) a payload under the operation timeout.
    async fn publish_raw(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        self.with_timeout(async {
            let mut conn = self.conn(channel).await?;
            redis::cmd(if self.sharded { "SPUBLISH" } else { "PUBLISH" })
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(redis_error)
        })
        .await
        .map(drop)
    }

    /// With `wait_replicas`, wait until that many replicas hold what this
    /// connection wrote (Redis WAIT, bounded by the operation timeout). A
    /// publish they do not have in time is refused though it was made: a
    /// failover could lose it, and an `ok` is a promise. The client's retry
    /// with its idempotency key then gets the first offset back.
    async fn replicated(&self, conn: &mut pool::Connection, key: &str) -> Result<(), BrokerError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        // Half the operation's budget: the script took some of it.
        let ms = (self.timeout / 2).as_millis().max(1) as u64;
        let acked = pool::wait(conn, key, self.wait_replicas, ms)
            .await
            .map_err(redis_error)?;
        if acked < self.wait_replicas {
            return Err(BrokerError::unavailable(format!(
                "published, but {acked} of {} replicas have it",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    /// A pooled connection for a publishing command on the pub/sub channel
    /// `name`. Refused while this node's subscription to it is down or
    /// still resubscribing: Redis would accept the PUBLISH (the pool
    /// reconnects first) and deliver it to nobody here, and the client
    /// would hold an `ok` for a lost message. On a single Redis that is the
    /// subscriber connection's health; on a cluster, that of the channel's
    /// own subscription, so one shard's failover does not stop the others.
    async fn conn(&self, name: &str) -> Result<pool::Connection, BrokerError> {
        if !self.subscriber.may_publish(name) {
            return Err(BrokerError::NotResubscribed);
        }
        pool::get(&self.pool).await
    }
}

fn redis_error(e: redis::RedisError) -> BrokerError {
    BrokerError::unavailable(e)
}

impl Broker for RedisBroker {
    fn publish<'a>(&'a self, p: Publication<'a>) -> BoxFuture<'a, Result<Position, BrokerError>> {
        async move {
            let head = envelope::channel_head(&self.node_id, p.channel, p.traceparent);
            let history = self.keys.channel_history(p.channel);
            let idempotency = match p.idempotency {
                Some(i) => self.keys.channel_idempotency(p.channel, i.key),
                // Unused by the script, but a key of the channel's slot.
                None => history.clone(),
            };
            let (size, ttl) = p.history.map_or((0, Duration::ZERO), |h| (h.size, h.ttl));
            // The offset must outlive the history it numbers.
            let meta_ttl = CHANNEL_META_TTL.max(ttl).as_secs() + 1;
            let window = p.idempotency.map_or(0, |i| i.window.as_millis() as u64);
            let meta = self.keys.channel_meta(p.channel);
            let pubsub = self.keys.channel_pubsub(p.channel);
            let (offset, epoch): (u64, String) = self
                .with_timeout(async {
                    let mut conn = self.conn(&pubsub).await?;
                    let position = self
                        .script
                        .key(&meta)
                        .key(&pubsub)
                        .key(&history)
                        .key(&idempotency)
                        .arg(&head)
                        .arg(&p.parts.head)
                        .arg(&p.parts.tail)
                        .arg(new_epoch())
                        .arg(meta_ttl)
                        .arg(size)
                        .arg(ttl.as_millis() as u64)
                        .arg(window)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(redis_error)?;
                    self.replicated(&mut conn, &meta).await?;
                    Ok(position)
                })
                .await?;
            Ok(Position { offset, epoch })
        }
        .boxed()
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        async move {
            let read = self.streams.read(channel, query).await;
            if read.is_err() {
                metrics::inc(&self.metrics.broker_errors);
            }
            read
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
            let confirmed = self.subscriber.want(self.keys.topic_pubsub(topic));
            match tokio::time::timeout(self.timeout, confirmed).await {
                Ok(result) => result,
                Err(_) => {
                    metrics::inc(&self.metrics.broker_errors);
                    Err(BrokerError::Timeout(self.timeout))
                }
            }
        }
        .boxed()
    }

    fn unsubscribe(&self, topic: &Topic) {
        self.subscriber.unwant(self.keys.topic_pubsub(topic));
    }

    fn is_healthy(&self) -> bool {
        self.subscriber.is_healthy()
    }

    fn shutdown(&self) {
        self.subscriber.shutdown();
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
