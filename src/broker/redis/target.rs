//! Which Redis a connection goes to. A plain URL names one server; a
//! Sentinel URL names the Sentinels and a master's name, and every new
//! connection asks the Sentinels where that master is now — so after a
//! failover the pool's new connections and the subscriber's reconnect land
//! on the promoted replica. A connection to a server that is not (or no
//! longer) a master is refused: the Sentinels may not have noticed yet, or
//! the old master came back as a replica. A Cluster URL names seed nodes
//! of a Redis Cluster; commands then go through redis-rs's cluster
//! connection and deliveries through one subscriber per shard (`shards`).
//!
//! `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`
//! (`rediss+sentinel://` for TLS to the master). The password is the
//! master's; Sentinels are asked without one.
//!
//! `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]`
//! (`rediss+cluster://` for TLS): any reachable seed serves the slot map.

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::{Client, ClientTlsConfig, ErrorKind, RedisError, RedisResult, TlsCertificates};

use crate::config::RedisTls;

/// A parsed Sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSpec {
    /// `host:port` of each Sentinel, asked in this order.
    pub sentinels: Vec<String>,
    pub master: String,
    pub tls: bool,
    /// `user:password@` or `:password@`, kept as written for the master's URL.
    pub auth: String,
    pub db: u32,
}

impl SentinelSpec {
    /// `Some` for a `redis+sentinel://` or `rediss+sentinel://` URL (or
    /// why it is malformed), `None` for any other URL.
    pub fn parse(url: &str) -> Option<Result<SentinelSpec, String>> {
        let (tls, rest) = scheme(url, "sentinel")?;
        Some(Self::parse_rest(tls, rest))
    }

    fn parse_rest(tls: bool, rest: &str) -> Result<SentinelSpec, String> {
        let (auth, sentinels, path) = hosts(rest)?;
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or_default().to_owned();
        let db = match parts.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse()
                .map_err(|_| format!("{db:?} is not a database number"))?,
        };
        if parts.next().is_some() {
            return Err("expected HOSTS/MASTER[/DB]".into());
        }
        if master.is_empty() {
            return Err("the master's name is missing (.../MASTER)".into());
        }
        Ok(SentinelSpec {
            sentinels,
            master,
            tls,
            auth,
            db,
        })
    }
}

/// A parsed Redis Cluster URL: the seed nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// `host:port` of each seed node.
    pub seeds: Vec<String>,
    pub tls: bool,
    /// `user:password@` or `:password@`, kept as written for node URLs.
    pub auth: String,
}

impl ClusterSpec {
    /// `Some` for a `redis+cluster://` or `rediss+cluster://` URL (or why
    /// it is malformed), `None` for any other URL.
    pub fn parse(url: &str) -> Option<Result<ClusterSpec, String>> {
        let (tls, rest) = scheme(url, "cluster")?;
        Some(hosts(rest).and_then(|(auth, seeds, path)| {
            if !path.is_empty() {
                return Err("a Redis Cluster has only database 0: no /PATH".into());
            }
            Ok(ClusterSpec { seeds, tls, auth })
        }))
    }

    /// The URL of the node at `host:port`, with this spec's scheme and auth.
    pub fn node_url(&self, address: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}{address}", self.auth)
    }
}

/// Whether `url` has the scheme `redis+KIND://` (false) or
/// `rediss+KIND://` (true: TLS), and what follows it.
fn scheme<'a>(url: &'a str, kind: &str) -> Option<(bool, &'a str)> {
    let rest = url.strip_prefix("redis")?;
    let (tls, rest) = match rest.strip_prefix('s') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    Some((
        tls,
        rest.strip_prefix('+')?
            .strip_prefix(kind)?
            .strip_prefix("://")?,
    ))
}

/// `[auth@]HOST:PORT,HOST:PORT[/PATH]` into the auth (with its `@`), the
/// hosts and the path.
fn hosts(rest: &str) -> Result<(String, Vec<String>, &str), String> {
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    let valid = |h: &String| {
        h.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if !hosts.iter().all(valid) {
        return Err("the hosts must be HOST:PORT,HOST:PORT,...".into());
    }
    Ok((auth, hosts, path))
}

/// Where connections go: one server, the master the Sentinels name, or a
/// Redis Cluster.
#[derive(Clone)]
pub enum Target {
    Direct(Client),
    Sentinel(SentinelSpec, RedisTls),
    Cluster(ClusterSpec, RedisTls),
}

impl Target {
    /// The target of `url`, with the certificates of `tls` for TLS.
    pub fn new(url: &str, tls: &RedisTls) -> RedisResult<Target> {
        if let Some(spec) = ClusterSpec::parse(url) {
            let spec = spec.map_err(|e| {
                RedisError::from((ErrorKind::InvalidClientConfig, "bad Cluster URL", e))
            })?;
            return Ok(Target::Cluster(spec, tls.clone()));
        }
        match SentinelSpec::parse(url) {
            Some(spec) => {
                let spec = spec.map_err(|e| {
                    RedisError::from((ErrorKind::InvalidClientConfig, "bad Sentinel URL", e))
                })?;
                Ok(Target::Sentinel(spec, tls.clone()))
            }
            None => Ok(Target::Direct(client(url, tls)?)),
        }
    }

    /// Whether this is a Redis Cluster (sharded pub/sub, a subscriber per
    /// master, the cluster connection for commands).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(..))
    }

    /// Whether connections must be checked for being on a master.
    pub fn is_sentinel(&self) -> bool {
        matches!(self, Target::Sentinel(..))
    }

    /// A client for the server connections should go to now.
    pub async fn client(&self) -> RedisResult<Client> {
        match self {
            Target::Direct(client) => Ok(client.clone()),
            Target::Cluster(..) => Err(RedisError::from((
                ErrorKind::Client,
                "a Redis Cluster has no single server",
            ))),
            Target::Sentinel(spec, tls) => {
                let (host, port) = master_address(spec).await?;
                let scheme = if spec.tls { "rediss" } else { "redis" };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                client(
                    &format!("{scheme}://{}{host}:{port}/{}", spec.auth, spec.db),
                    tls,
                )
            }
        }
    }

    /// A multiplexed connection to the target; with Sentinel, only if the
    /// server says it is a master.
    pub async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let mut conn = self
            .client()
            .await?
            .get_multiplexed_async_connection()
            .await?;
        if self.is_sentinel() {
            ensure_master(&mut conn).await?;
        }
        Ok(conn)
    }
}

/// A `ROLE` answer says `master`.
pub fn is_master(role: &[redis::Value]) -> bool {
    matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master")
}

/// A cluster-aware command client for the seeds of `spec`: it follows
/// MOVED and ASK, retries TRYAGAIN and refreshes its slot map itself.
pub fn cluster_client(spec: &ClusterSpec, tls: &RedisTls) -> RedisResult<ClusterClient> {
    let seeds: Vec<String> = spec.seeds.iter().map(|s| spec.node_url(s)).collect();
    let mut builder = ClusterClient::builder(seeds);
    if let Some(certificates) = certificates(tls) {
        builder = builder.certs(certificates);
    }
    builder.build()
}

/// `ROLE` says `master`, or an error.
async fn ensure_master(conn: &mut MultiplexedConnection) -> RedisResult<()> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    if is_master(&role) {
        return Ok(());
    }
    Err(RedisError::from((
        ErrorKind::Client,
        "not a master (failover in progress?)",
    )))
}

/// Ask each Sentinel in turn where the master is; the first answer wins.
async fn master_address(spec: &SentinelSpec) -> RedisResult<(String, u16)> {
    let mut last = None;
    for sentinel in &spec.sentinels {
        let ask = async {
            let client = Client::open(format!("redis://{sentinel}"))?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&spec.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match ask.await {
            Ok(Some(address)) => return Ok(address),
            Ok(None) => {
                last = Some(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "a Sentinel does not know the master",
                    spec.master.clone(),
                )))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no Sentinel"))))
}

/// The client for a plain URL, with the certificates of `tls` if any is set.
pub fn client(url: &str, tls: &RedisTls) -> RedisResult<Client> {
    match certificates(tls) {
        None => Client::open(url),
        Some(certificates) => Client::build_with_tls(url, certificates),
    }
}

/// The certificates of `tls`, if any is set.
fn certificates(tls: &RedisTls) -> Option<TlsCertificates> {
    if tls == &RedisTls::default() {
        return None;
    }
    Some(TlsCertificates {
        client_tls: tls.client.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: tls.ca.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let spec = SentinelSpec::parse("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2")
            .unwrap()
            .unwrap();
        assert_eq!(spec.sentinels, ["s1:26379", "s2:26380"]);
        assert_eq!(
            (spec.master.as_str(), spec.db, spec.tls),
            ("mymaster", 2, false)
        );
        assert_eq!(spec.auth, ":pw@");
        assert!(
            SentinelSpec::parse("rediss+sentinel://s1:26379/m")
                .unwrap()
                .unwrap()
                .tls
        );
        assert!(SentinelSpec::parse("redis://h:6379").is_none());
        assert!(SentinelSpec::parse("redis+cluster://h:6379").is_none());
        for bad in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1/m",
            "redis+sentinel://s1:x/m",
            "redis+sentinel://s1:26379/m/x",
            "redis+sentinel:///m",
        ] {
            assert!(SentinelSpec::parse(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_urls_parse() {
        let spec = ClusterSpec::parse("rediss+cluster://u:pw@a:7000,b:7001")
            .unwrap()
            .unwrap();
        assert_eq!(spec.seeds, ["a:7000", "b:7001"]);
        assert!(spec.tls);
        assert_eq!(spec.node_url("c:7002"), "rediss://u:pw@c:7002");
        let plain = ClusterSpec::parse("redis+cluster://a:7000")
            .unwrap()
            .unwrap();
        assert_eq!(plain.node_url("a:7000"), "redis://a:7000");
        assert!(ClusterSpec::parse("redis+sentinel://a:1/m").is_none());
        assert!(ClusterSpec::parse("redis://a:7000").is_none());
        for bad in [
            "redis+cluster://a",
            "redis+cluster://a:7000/1",
            "redis+cluster://",
        ] {
            assert!(ClusterSpec::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
