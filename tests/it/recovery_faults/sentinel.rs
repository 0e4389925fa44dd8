//! Redis Sentinel: a master with two replicas watched by three Sentinels
//! (`redis-server --sentinel`), nodes on a `redis+sentinel://` URL. The
//! master is killed (SIGKILL) mid-stream: the Sentinels promote the
//! replica, the nodes find it, and every acknowledged message reaches
//! every subscriber once, in order. Publishes during the failover are
//! refused with `broker_unavailable`, never lost in silence; each `ok`
//! waited until the replica had the message (`redis_wait_replicas`, 1 by
//! default with Sentinel).

use crate::support::recovery::{verify, Resync};
use crate::support::redis_process::RedisProcess;
use crate::support::{eventually_async, temp_dir, RedisServer, TestNode, WAIT};

const CHANNEL: &str = "feed:failover";
const MASTER: &str = "sbmaster";

async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

async fn node(url: &str, id: &str) -> TestNode {
    TestNode::on_redis(url, id, |s| {
        s.redis_wait_replicas = 1;
        super::with_feed(s);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_nothing_acknowledged() {
    let dir = temp_dir("sb-sentinel");
    let mut master = RedisServer::start().await;
    // Two replicas: after the failover one is left to acknowledge each
    // publish (WAIT 1) while the other is the new master.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let replica = RedisProcess::replica(master.port()).await;
        let port = replica.port;
        replicas.push(replica);
        eventually_async("the replica is in sync", || async {
            let info: String = query(port, redis::cmd("INFO").arg("replication"))
                .await
                .unwrap_or_default();
            info.contains("master_link_status:up")
        })
        .await;
    }
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let failover_fast = format!(
            "sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 5000\n"
        );
        let sentinel = RedisProcess::sentinel(&dir, MASTER, master.port(), 2, &failover_fast).await;
        sentinels.push(sentinel);
    }
    // Each Sentinel knows the replica and the two other Sentinels, or it
    // could not vote for a failover.
    for port in sentinels.iter().map(|s| s.port) {
        eventually_async("the Sentinels know each other and the replica", || async {
            let replicas: Vec<redis::Value> =
                query(port, redis::cmd("SENTINEL").arg("replicas").arg(MASTER))
                    .await
                    .unwrap_or_default();
            let others: Vec<redis::Value> =
                query(port, redis::cmd("SENTINEL").arg("sentinels").arg(MASTER))
                    .await
                    .unwrap_or_default();
            replicas.len() == 2 && others.len() == 2
        })
        .await;
    }
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/{MASTER}", hosts.join(","));

    let a = node(&url, "node-a").await;
    let b = node(&url, "node-b").await;
    let (ledger, publisher, receivers) = super::load(&a, &b, CHANNEL).await;

    master.kill();
    // The Sentinels promote the replica; the nodes ask them again at each
    // reconnect and find it.
    eventually_async("a replica is promoted", || async {
        for port in replicas.iter().map(|r| r.port) {
            let role: Vec<redis::Value> =
                query(port, &redis::cmd("ROLE")).await.unwrap_or_default();
            if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                return true;
            }
        }
        false
    })
    .await;
    a.wait_ready(true).await;
    b.wait_ready(true).await;
    ledger.wait_more(300).await;

    let logs = super::finish(publisher, &ledger, receivers, &b).await;
    verify(&ledger.snapshot(), &logs, Resync::Never);
}

/// `redis_wait_replicas`: a publish no replica holds in time is answered
/// `broker_unavailable`, though Redis made it — so a retry with the same
/// idempotency key, once a replica has caught up, gets its first offset
/// back and publishes nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_no_replica_holds_is_not_acknowledged() {
    let master = RedisServer::start().await;
    let a = TestNode::redis(&master, "node-a", |s| {
        s.redis_wait_replicas = 1;
        super::with_feed(s);
    })
    .await;
    let mut c = a.connect("ann").await;
    c.subscribe(CHANNEL).await;
    let publish = serde_json::json!({
        "type": "publish", "channel": CHANNEL, "data": "once", "idempotency_key": "k-1"
    });
    let refused = c.request(publish.clone()).await;
    assert_eq!(refused["error"]["code"], "broker_unavailable", "{refused}");

    let _replica = RedisProcess::replica(master.port()).await;
    // Each refused retry takes WAIT's whole timeout: the loop paces itself.
    let deadline = tokio::time::Instant::now() + WAIT;
    let retried = loop {
        let r = c.request(publish.clone()).await;
        if r["ok"] == true {
            break r;
        }
        assert_eq!(r["error"]["code"], "broker_unavailable", "{r}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never acknowledged"
        );
    };
    assert_eq!(
        retried["offset"], 1,
        "the first publish's offset: {retried}"
    );
    // Published once: the subscriber got offset 1, and a marker comes next.
    let got = c.expect("message").await;
    assert_eq!(
        (got["offset"].as_u64(), &got["data"]),
        (Some(1), &serde_json::json!("once"))
    );
    c.publish(CHANNEL, serde_json::json!("marker")).await;
    assert_eq!(c.expect("message").await["offset"], 2);
}
