//! The command pool: deadpool's generic pool with a manager that connects
//! through a `Target` (one server with its TLS certificates, or the master
//! the Sentinels name). deadpool-redis's own manager builds its client
//! from a URL only, so it could carry neither a custom CA nor a client
//! certificate, nor follow a failover. On a Redis Cluster there is no pool
//! but one cluster connection, which multiplexes over one connection per
//! node and routes each command by its key's slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool::Runtime;
use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::RedisError;
use tokio::sync::OnceCell;

use super::slots::slot;
use super::target::{cluster_client, is_master, Target};
use crate::broker::BrokerError;

/// Creates multiplexed connections to the target and checks each with a
/// PING carrying a fresh number before it is handed out again — and, with
/// Sentinel, that its server is still the master (an old master that came
/// back as a replica would answer PING but refuse every write).
pub struct Manager {
    target: Target,
    pings: AtomicUsize,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.target.connect().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        // A numbered PING: an answer meant for an earlier command (a
        // connection left mid-reply by a timeout) cannot pass for this one.
        // With Sentinel, ROLE rides in the same round trip: this runs at
        // every checkout, so once per publish.
        let n = self.pings.fetch_add(1, Ordering::Relaxed).to_string();
        let echoed: String = if self.target.is_sentinel() {
            let (echoed, role): (String, Vec<redis::Value>) = redis::pipe()
                .cmd("PING")
                .arg(&n)
                .cmd("ROLE")
                .query_async(conn)
                .await?;
            if !is_master(&role) {
                return Err(RecycleError::message("not a master any more"));
            }
            echoed
        } else {
            redis::cmd("PING").arg(&n).query_async(conn).await?
        };
        if echoed != n {
            return Err(RecycleError::message("PING answered out of turn"));
        }
        Ok(())
    }
}

/// Where commands go: a pool of connections to one server, or a Redis
/// Cluster's connection.
#[derive(Clone)]
pub enum Pool {
    Single(managed::Pool<Manager>),
    Cluster(Arc<Cluster>),
}

/// The cluster connection, made at the first command (a node may start
/// before Redis) and kept: it reconnects to nodes and refreshes its slot
/// map by itself.
pub struct Cluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

/// A connection for commands: pooled (back to the pool when dropped), or a
/// handle on the cluster connection.
pub enum Connection {
    Single(managed::Object<Manager>),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Run `commands` and return their answers in order: one pipeline on one
/// server; on a cluster each on its own, all at once (they may live on
/// different slots; the cluster connection still pipelines them per node).
pub async fn query_all(
    conn: &mut Connection,
    commands: Vec<redis::Cmd>,
) -> redis::RedisResult<Vec<redis::Value>> {
    match conn {
        Connection::Single(c) => {
            let mut pipe = redis::pipe();
            for command in commands {
                pipe.add_command(command);
            }
            pipe.query_async(&mut **c).await
        }
        Connection::Cluster(c) => {
            try_join_all(commands.iter().map(|command| {
                let mut c = c.clone();
                async move { command.query_async::<redis::Value>(&mut c).await }
            }))
            .await
        }
    }
}

/// `WAIT replicas ms` on the connection that wrote to `key` last: on a
/// cluster, the one to the master of its slot (WAIT counts what that
/// connection wrote; redis-rs would otherwise ask every master).
pub async fn wait(
    conn: &mut Connection,
    key: &str,
    replicas: usize,
    ms: u64,
) -> redis::RedisResult<usize> {
    let mut wait = redis::cmd("WAIT");
    wait.arg(replicas).arg(ms);
    match conn {
        Connection::Single(c) => wait.query_async(&mut **c).await,
        Connection::Cluster(c) => {
            let master = Route::new(slot(key), SlotAddr::Master);
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(master));
            Ok(redis::from_redis_value(
                c.route_command(wait, route).await?,
            )?)
        }
    }
}

/// The command pool shared by the broker and presence: every checkout,
/// create and recycle is bounded by `timeout`.
pub fn pool(target: Target, size: usize, timeout: Duration) -> Result<Pool, BrokerError> {
    if let Target::Cluster(spec, tls) = &target {
        let client = cluster_client(spec, tls).map_err(BrokerError::unavailable)?;
        return Ok(Pool::Cluster(Arc::new(Cluster {
            client,
            conn: OnceCell::new(),
        })));
    }
    let manager = Manager {
        target,
        pings: AtomicUsize::new(0),
    };
    managed::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map(Pool::Single)
        .map_err(BrokerError::unavailable)
}

/// A connection from `pool`.
pub async fn get(pool: &Pool) -> Result<Connection, BrokerError> {
    match pool {
        Pool::Single(pool) => pool
            .get()
            .await
            .map(Connection::Single)
            .map_err(BrokerError::unavailable),
        Pool::Cluster(cluster) => cluster
            .conn
            .get_or_try_init(|| cluster.client.get_async_connection())
            .await
            .cloned()
            .map(Connection::Cluster)
            .map_err(BrokerError::unavailable),
    }
}
