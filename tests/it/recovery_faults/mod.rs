//! History and recovery under faults (issue 11): every acknowledged
//! message is counted, per subscriber, through a fault. A `Publisher`
//! publishes numbered messages with idempotency keys, retrying each until
//! it is acknowledged; `Receiver`s log what they get and, when their
//! connection ends, subscribe again (to any live node) with `since` their
//! position; `verify` then demands each acknowledged message exactly once
//! and in offset order — or, only where Redis lost the channel's state, a
//! resync notice (`recovered: false` or a `resync` frame) where messages
//! are missing. Never a silent loss.
//!
//! * `nodes::a_killed_node_s_subscribers_recover_on_another_node` — SIGKILL
//!   one of three node processes mid-stream: its subscribers' positions,
//!   resumed on a surviving node, give back exactly what they missed
//!   (`recovered: true`, with messages to replay); the other nodes'
//!   subscribers see no hiccup. (This is how a late live copy of the last
//!   replayed message was found: the hub now drops it.)
//! * `nodes::a_stopped_node_repairs_the_gap_after_redis_dropped_it` —
//!   with Redis's pub/sub output-buffer limit lowered to `32kb 16kb 1`,
//!   SIGSTOP a node under a flood of 2 kB messages and keep it stopped until
//!   Redis has dropped its subscriber connection (seen in `CLIENT LIST`, so
//!   the fault is proven, not assumed; that takes a few seconds); after
//!   SIGCONT the node reconnects and fills the gap from the channel's
//!   history: its clients, which stayed connected, lose nothing, and its
//!   `switchboard_redis_reconnects_total` and `switchboard_gap_repairs_total`
//!   rose.
//! * `nodes::a_rolling_restart_loses_nothing` — SIGTERM, wait, restart
//!   (same port) each of three nodes in turn under load: subscribers and
//!   the publisher move between nodes; the publisher's retries with the
//!   same key never duplicate, the subscribers' `since` never loses.
//! * `redis::a_persistent_redis_restart_loses_nothing` — Redis with an
//!   fsynced append-only file is killed and restarted mid-stream: the epoch
//!   survives; connected subscribers are repaired by their node from
//!   history, and a client that reconnects during the outage recovers.
//! * `redis::a_redis_restart_without_persistence_tells_clients_to_resync`
//!   — the same without persistence: the epoch changes and every client is
//!   told to resync; whatever it did not get is covered by that notice.
//! * `sentinel::a_sentinel_failover_loses_nothing_acknowledged` — a master
//!   with two replicas and three Sentinels, killed mid-stream: the nodes
//!   follow the failover, nothing acknowledged is lost or duplicated.

mod cluster;
mod nodes;
mod redis;
mod sentinel;

use std::path::PathBuf;

use switchboard::config::{Namespace, NamespaceOptions, Settings};

use crate::support::recovery::{Ledger, Publisher, Receiver, ReceiverLog};
use crate::support::{temp_dir, TestNode};

/// The `feed` namespace with a history of 10 000 messages, and outboxes
/// that hold a whole run, for the Redis fault tests' in-process nodes.
pub fn with_feed(s: &mut Settings) {
    s.namespaces.push(Namespace {
        name: "feed".into(),
        options: NamespaceOptions {
            history_size: 10_000,
            ..NamespaceOptions::default()
        },
    });
    s.outbox_capacity = 100_000;
}

/// The load of the Redis fault tests: a receiver on each of `a` and `b`
/// (moving to the other node if its own goes), the publisher on `a`, once
/// 200 messages are acknowledged.
async fn load(a: &TestNode, b: &TestNode, channel: &str) -> (Ledger, Publisher, Vec<Receiver>) {
    let receivers = vec![
        Receiver::start("on-a", vec![a.ws_url("on-a"), b.ws_url("on-a")], channel).await,
        Receiver::start("on-b", vec![b.ws_url("on-b"), a.ws_url("on-b")], channel).await,
    ];
    let ledger = Ledger::default();
    let publisher = Publisher::start(vec![a.ws_url("publisher")], channel, 0, &ledger);
    ledger.wait_for(200).await;
    (ledger, publisher, receivers)
}

/// Stop the publisher and the receivers after a Redis fault; their logs.
/// The publisher must have met the fault (`broker_unavailable`), and
/// `witness` must have reconnected to Redis.
async fn finish(
    publisher: Publisher,
    ledger: &Ledger,
    receivers: Vec<Receiver>,
    witness: &TestNode,
) -> Vec<ReceiverLog> {
    let stats = publisher.stop().await;
    let last = ledger.snapshot().last().cloned().expect("acknowledged");
    let mut logs = Vec::new();
    for r in receivers {
        logs.push(r.finish(&last).await);
    }
    let reconnects = witness.counter(|m| &m.redis_reconnects);
    eprintln!(
        "{} acknowledged; publisher {stats:?}; {} redis reconnects {reconnects}, gap repairs {}",
        ledger.len(),
        witness.gateway.node_id(),
        witness.counter(|m| &m.gap_repairs)
    );
    assert!(
        stats
            .refused
            .get("broker_unavailable")
            .is_some_and(|n| *n > 0),
        "the publisher never met the fault: {stats:?}"
    );
    assert!(
        reconnects >= 1,
        "{} never reconnected",
        witness.gateway.node_id()
    );
    logs
}

/// A settings file with the `feed` namespace keeping `history_size`
/// messages per channel; `name` makes it this test's own.
fn feed_config(name: &str, history_size: usize) -> PathBuf {
    let path = temp_dir(name).join("switchboard.toml");
    let toml = format!("[[namespaces]]\nname = \"feed\"\nhistory_size = {history_size}\n");
    std::fs::write(&path, toml).expect("write the settings file");
    path
}
