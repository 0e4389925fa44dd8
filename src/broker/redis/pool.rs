//! The command pool: deadpool's generic pool with a manager that connects
//! through a `Target` (one server with its TLS certificates, or the master
//! the Sentinels name). deadpool-redis's own manager builds its client
//! from a URL only, so it could carry neither a custom CA nor a client
//! certificate, nor follow a failover.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool::Runtime;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::RedisError;

use super::target::{is_master, Target};
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

pub type Pool = managed::Pool<Manager>;

/// A pooled connection; back to the pool when dropped.
pub struct Connection(managed::Object<Manager>);

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// The command pool shared by the broker and presence: every checkout,
/// create and recycle is bounded by `timeout`.
pub fn pool(target: Target, size: usize, timeout: Duration) -> Result<Pool, BrokerError> {
    let manager = Manager {
        target,
        pings: AtomicUsize::new(0),
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(BrokerError::unavailable)
}

/// A connection from `pool`.
pub async fn get(pool: &Pool) -> Result<Connection, BrokerError> {
    pool.get()
        .await
        .map(Connection)
        .map_err(BrokerError::unavailable)
}
