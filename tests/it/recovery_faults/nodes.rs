//! Node faults: SIGKILL, SIGSTOP until Redis drops the node, and a rolling
//! restart — real node processes on one Redis.

use std::path::PathBuf;

use crate::support::http::{self, wait_ready};
use crate::support::recovery::{
    metric, verify, Ledger, Publisher, Receiver, ReceiverLog, Resync, RECOVERY_WAIT,
};
use crate::support::{spawn_node_on, NodeProcess, RedisServer};
use switchboard_fixtures::{free_port, poll_until};

const CHANNEL: &str = "feed:faults";

/// Node processes sharing one Redis, each restartable on its own port.
struct Cluster {
    config: PathBuf,
    redis_url: String,
    ports: Vec<u16>,
    nodes: Vec<NodeProcess>,
}

impl Cluster {
    async fn start(redis: &RedisServer, name: &str, size: usize) -> Cluster {
        let mut cluster = Cluster {
            config: super::feed_config(name, 10_000),
            redis_url: redis.url(),
            ports: (0..size).map(|_| free_port()).collect(),
            nodes: Vec::new(),
        };
        for i in 0..size {
            let node = cluster.spawn(i);
            cluster.nodes.push(node);
        }
        for &port in &cluster.ports {
            wait_ready(port, true).await;
        }
        cluster
    }

    fn spawn(&self, i: usize) -> NodeProcess {
        let id = format!("node-{i}");
        let args = [
            "--config",
            self.config.to_str().expect("UTF-8 path"),
            "--node-id",
            &id,
            // The publisher is one client sending as fast as it is answered.
            "--max-messages-per-second",
            "1000000",
            // A gap repaired at once must not overflow a client's queue.
            "--outbox-capacity",
            "100000",
        ];
        spawn_node_on(
            self.ports[i],
            &args,
            &[("SWITCHBOARD_REDIS_URL", self.redis_url.as_str())],
        )
    }

    fn url(&self, i: usize, user: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?user={user}", self.ports[i])
    }

    /// Node `first` and then every other node, for `user`.
    fn urls(&self, first: usize, user: &str) -> Vec<String> {
        let n = self.ports.len();
        (0..n).map(|k| self.url((first + k) % n, user)).collect()
    }

    /// Stop node `i` with SIGTERM, wait for it to exit, start it again on
    /// the same port and wait until it is ready.
    async fn restart(&mut self, i: usize) {
        self.nodes[i].signal("-TERM");
        let status = self.nodes[i].wait_exit().await;
        assert!(status.success(), "node-{i} exited with {status:?}");
        self.nodes[i] = self.spawn(i);
        wait_ready(self.ports[i], true).await;
    }

    /// A counter from node `i`'s `/metrics`.
    async fn metric(&self, i: usize, name: &str) -> u64 {
        let (status, body) = http::get(self.ports[i], "/metrics").await;
        assert_eq!(status, 200, "{body}");
        metric(&body, name)
    }
}

/// Stop the publisher, then collect every receiver's log up to the last
/// acknowledged message.
async fn finish(
    publisher: Publisher,
    ledger: &Ledger,
    receivers: Vec<Receiver>,
) -> Vec<ReceiverLog> {
    let stats = publisher.stop().await;
    let acked = ledger.snapshot();
    let last = acked.last().expect("something was acknowledged").clone();
    let mut logs = Vec::new();
    for r in receivers {
        logs.push(r.finish(&last).await);
    }
    let moves: Vec<_> = logs
        .iter()
        .map(|l| (&l.name, l.reconnects, l.replayed()))
        .collect();
    eprintln!(
        "{} acknowledged, up to offset {}; publisher {stats:?}; \
         (receiver, reconnects, replayed) {moves:?}",
        acked.len(),
        last.offset,
    );
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_subscribers_recover_on_another_node() {
    let redis = RedisServer::start().await;
    let mut cluster = Cluster::start(&redis, "sb-faults-kill", 3).await;
    // Two subscribers on node-1, which will be killed; one on each other node.
    let mut receivers = Vec::new();
    for (name, node) in [("on-1a", 1), ("on-1b", 1), ("on-0", 0), ("on-2", 2)] {
        receivers.push(Receiver::start(name, cluster.urls(node, name), CHANNEL).await);
    }
    let ledger = Ledger::default();
    let publisher = Publisher::start(cluster.urls(0, "publisher"), CHANNEL, 0, &ledger);

    ledger.wait_for(200).await;
    cluster.nodes[1].kill();
    // Publishing goes on while node-1's subscribers move to node-2.
    ledger.wait_more(300).await;
    let logs = finish(publisher, &ledger, receivers).await;

    verify(&ledger.snapshot(), &logs, Resync::Never);
    let reconnects: Vec<u32> = logs.iter().map(|l| l.reconnects).collect();
    assert_eq!(
        reconnects,
        [1, 1, 0, 0],
        "only node-1's subscribers reconnected"
    );
    // Their positions were behind when they came back: recovery replayed.
    assert!(
        logs[0].replayed() + logs[1].replayed() > 0,
        "nothing was published between the kill and the resubscriptions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_repairs_the_gap_after_redis_dropped_it() {
    let redis = RedisServer::start().await;
    // A subscriber connection more than 16 kB behind for a second, or
    // 32 kB behind at all, is dropped.
    let _: () = redis
        .query(
            ::redis::cmd("CONFIG")
                .arg("SET")
                .arg("client-output-buffer-limit")
                .arg("pubsub 32kb 16kb 1"),
        )
        .await;
    let cluster = Cluster::start(&redis, "sb-faults-stop", 2).await;
    // node-0's subscriber connection enters pub/sub mode with its first
    // subscription, node-1's after: which one is node-1's is known.
    let on_0 = Receiver::start("on-0", cluster.urls(0, "on-0"), CHANNEL).await;
    let node_0_only = pubsub_clients(&redis).await;
    // Subscribers on node-1 only ever use node-1: they must stay connected.
    let mut receivers = Vec::new();
    for name in ["on-1a", "on-1b"] {
        receivers.push(Receiver::start(name, vec![cluster.url(1, name)], CHANNEL).await);
    }
    receivers.push(on_0);
    let node_1: Vec<String> = pubsub_clients(&redis)
        .await
        .into_iter()
        .filter(|id| !node_0_only.contains(id))
        .collect();
    assert_eq!(
        node_1.len(),
        1,
        "node-1's subscriber connection: {node_1:?}"
    );
    let ledger = Ledger::default();
    // 2 kB messages: the stopped node's socket buffers fill quickly.
    let publisher = Publisher::start(vec![cluster.url(0, "publisher")], CHANNEL, 2048, &ledger);
    ledger.wait_for(100).await;
    let reconnects_before = cluster
        .metric(1, "switchboard_redis_reconnects_total")
        .await;
    let repairs_before = cluster.metric(1, "switchboard_gap_repairs_total").await;

    cluster.nodes[1].signal("-STOP");
    let stopped = std::time::Instant::now();
    // Stopped until Redis drops its subscriber connection for its buffer.
    let dropped = poll_until(RECOVERY_WAIT, || async {
        !pubsub_clients(&redis).await.contains(&node_1[0])
    })
    .await;
    cluster.nodes[1].signal("-CONT");
    assert!(
        dropped,
        "Redis never dropped the stopped node's subscriber connection ({} acknowledged)",
        ledger.len()
    );
    let stopped = stopped.elapsed();
    ledger.wait_more(200).await;
    let logs = finish(publisher, &ledger, receivers).await;

    verify(&ledger.snapshot(), &logs, Resync::Never);
    let reconnects: Vec<u32> = logs.iter().map(|l| l.reconnects).collect();
    assert_eq!(reconnects, [0, 0, 0], "the clients stayed connected");
    let reconnects_after = cluster
        .metric(1, "switchboard_redis_reconnects_total")
        .await;
    let repairs_after = cluster.metric(1, "switchboard_gap_repairs_total").await;
    eprintln!(
        "node-1, stopped for {stopped:?}: redis reconnects {reconnects_before} -> \
         {reconnects_after}, gap repairs {repairs_before} -> {repairs_after}"
    );
    assert!(
        reconnects_after > reconnects_before,
        "node-1's subscriber connection was not re-established"
    );
    assert!(
        repairs_after > repairs_before,
        "node-1 repaired no gap from history"
    );
}

/// Ids of Redis's pub/sub client connections.
async fn pubsub_clients(redis: &RedisServer) -> Vec<String> {
    let list: String = redis
        .query(::redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"))
        .await;
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    let redis = RedisServer::start().await;
    let mut cluster = Cluster::start(&redis, "sb-faults-rolling", 3).await;
    let mut receivers = Vec::new();
    for (name, node) in [
        ("r0", 0),
        ("r1", 1),
        ("r2", 2),
        ("r3", 0),
        ("r4", 1),
        ("r5", 2),
    ] {
        receivers.push(Receiver::start(name, cluster.urls(node, name), CHANNEL).await);
    }
    let ledger = Ledger::default();
    let publisher = Publisher::start(cluster.urls(0, "publisher"), CHANNEL, 0, &ledger);
    ledger.wait_for(100).await;
    for i in 0..3 {
        cluster.restart(i).await;
        ledger.wait_more(150).await;
    }
    let logs = finish(publisher, &ledger, receivers).await;

    verify(&ledger.snapshot(), &logs, Resync::Never);
    for log in &logs {
        assert!(log.reconnects >= 1, "{} never had to move", log.name);
    }
    let replayed: u64 = logs.iter().map(|l| l.replayed()).sum();
    assert!(replayed > 0, "no resubscription had anything to recover");
}
