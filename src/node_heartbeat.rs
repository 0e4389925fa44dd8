//! The node's heartbeat: every `node_heartbeat` it rewrites this node's
//! record, its clients' registry entries and their channel presence, each
//! with a TTL of 2.5 heartbeats, so a node that dies without a word drops
//! out of the cluster's lists by itself. On a graceful exit the node leaves
//! instead: the heartbeat stops (an in-flight write is waited for, not
//! interrupted, so it cannot land after the removal) and the entries are
//! withdrawn at once.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::gateway::Gateway;
use crate::metrics;
use crate::presence::{now_ms, NodeInfo, PresenceError, Snapshot};

/// The running heartbeat of one node.
pub struct NodeHeartbeat {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl NodeHeartbeat {
    /// Start refreshing; the first write happens at once.
    pub fn start(gw: Arc<Gateway>) -> Arc<NodeHeartbeat> {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(gw, stopped));
        Arc::new(NodeHeartbeat {
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Leave the cluster on a graceful exit: stop refreshing, then remove
    /// what this node still owns — its record, and any connection still
    /// attached with its presence — so other nodes stop listing it at once
    /// instead of 2.5 heartbeats later. Bounded by `redis_timeout`: with
    /// Redis unreachable, shutdown goes on and the entries expire as after
    /// a crash.
    pub async fn leave(&self, gw: &Gateway) {
        let timeout = gw.settings().redis_timeout;
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let left = tokio::time::timeout(timeout, async {
            if let Some(task) = task {
                // An in-flight write finishes first (its own timeout bounds it).
                let _ = task.await;
            }
            gw.presence().withdraw(&snapshot(gw)).await
        })
        .await
        .unwrap_or(Err(PresenceError::Timeout(timeout)));
        metrics::inc(&gw.metrics().presence_ops);
        match left {
            Ok(()) => tracing::info!("left the cluster registry"),
            Err(e) => {
                metrics::inc(&gw.metrics().presence_errors);
                tracing::warn!(error = %e, "node not removed from the registry; its entries expire");
            }
        }
    }
}

impl Drop for NodeHeartbeat {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Refresh every interval until told to stop; a write, once begun, ends
/// before the stop is looked at.
async fn run(gw: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(gw.settings().node_heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            _ = tick.tick() => {}
        }
        if *stopped.borrow() {
            return;
        }
        match gw.presence().heartbeat(&snapshot(&gw)).await {
            Ok(()) => failing = false,
            Err(e) => {
                metrics::inc(&gw.metrics().presence_errors);
                if !failing {
                    tracing::warn!(error = %e, "node heartbeat failed; retrying every interval");
                }
                failing = true;
            }
        }
    }
}

/// What this node owns: its record, its clients, their presence.
pub fn snapshot(gw: &Gateway) -> Snapshot {
    let gauges = gw.gauges();
    let mut snapshot = Snapshot {
        node: Some(NodeInfo {
            id: gw.node_id().to_owned(),
            connections: gauges.connections,
            subscriptions: gauges.subscriptions,
            channels: gauges.channels,
            started_at: gw.started_at(),
            updated_at: now_ms(),
        }),
        ..Snapshot::default()
    };
    for (client, channels) in gw.hub().snapshot() {
        for channel in channels {
            if gw
                .settings()
                .namespace(&channel)
                .is_some_and(|ns| ns.presence)
            {
                snapshot.presence.push((channel, client.clone()));
            }
        }
        snapshot.clients.push(client);
    }
    snapshot
}
