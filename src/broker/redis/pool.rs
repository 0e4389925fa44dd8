//! The Redis client and the command pool. The client is built once from
//! the URL and, for `rediss://`, the configured certificates; the pool and
//! the subscriber connection both connect through it. (deadpool-redis's
//! own manager builds its client from a URL only, so it could not carry a
//! custom CA or a client certificate: this is deadpool's generic pool with
//! a manager over our client.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool::Runtime;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Client, ClientTlsConfig, RedisError, TlsCertificates};

use super::super::BrokerError;
use crate::config::RedisTls;

/// The client for `url`, with the certificates of `tls` if any is set.
pub fn client(url: &str, tls: &RedisTls) -> Result<Client, BrokerError> {
    if tls == &RedisTls::default() {
        return Client::open(url).map_err(BrokerError::unavailable);
    }
    let certificates = TlsCertificates {
        client_tls: tls.client.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: tls.ca.clone(),
    };
    Client::build_with_tls(url, certificates).map_err(BrokerError::unavailable)
}

/// Creates multiplexed connections from the client and checks each with
/// a PING carrying a fresh number before it is handed out again.
pub struct Manager {
    client: Client,
    pings: AtomicUsize,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.client.get_multiplexed_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        // A numbered PING: an answer meant for an earlier command (a
        // connection left mid-reply by a timeout) cannot pass for this one.
        let n = self.pings.fetch_add(1, Ordering::Relaxed).to_string();
        let echoed: String = redis::cmd("PING").arg(&n).query_async(conn).await?;
        if echoed == n {
            Ok(())
        } else {
            Err(RecycleError::message("PING answered out of turn"))
        }
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
pub fn pool(client: Client, size: usize, timeout: Duration) -> Result<Pool, BrokerError> {
    let manager = Manager {
        client,
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
