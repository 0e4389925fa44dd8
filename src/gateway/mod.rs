//! The node's services behind one façade: hub, broker, presence, settings,
//! metrics, the token verifier and the draining flag, with the operations
//! of the wire protocol and the server API as its verbs. Callers (the
//! connection task, the API, startup) use the verbs; the fields are private.
//!
//! The verbs are spread by what they act on: `channels` (subscriptions,
//! publish, join/leave events, presence reads) and `users` (admission,
//! the connection lifecycle, direct messages, disconnects). Names arrive
//! parsed (`ids`); errors are [`Error`](crate::error::Error)s, turned into wire bodies at the edge.

mod channels;
mod users;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use channels::{Caller, Route, Subscribed};

use crate::auth::Verifier;
use crate::broker::Broker;
use crate::config::Settings;
use crate::disconnect::Disconnect;
use crate::handshake::{Handshakes, Permit, Refusal};
use crate::hub::Hub;
use crate::metrics::{self, Gauges, Metrics};
use crate::presence::{now_ms, Presence};

/// Time between two batches of shutdown closes (`drain_spread_ms`).
pub const DRAIN_BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// What the gateway runs on, wired by startup (memory or Redis backends).
pub struct Services {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub presence: Presence,
    pub metrics: Arc<Metrics>,
}

pub struct Gateway {
    settings: Settings,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    presence: Presence,
    metrics: Arc<Metrics>,
    /// Verifies client tokens; None when no JWT key is configured.
    auth: Option<Verifier>,
    started_at: u64,
    draining: AtomicBool,
    handshakes: Arc<Handshakes>,
    /// Detaches still writing to the registry (see `settled`).
    detaching: AtomicUsize,
}

impl Gateway {
    pub fn new(settings: Settings, auth: Option<Verifier>, services: Services) -> Arc<Gateway> {
        let Services {
            hub,
            broker,
            presence,
            metrics,
        } = services;
        Arc::new(Gateway {
            hub,
            broker,
            presence,
            metrics,
            auth,
            started_at: now_ms(),
            draining: AtomicBool::new(false),
            detaching: AtomicUsize::new(0),
            handshakes: Handshakes::new(settings.max_pending_handshakes),
            settings,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The token verifier; None when no JWT key is configured.
    pub(crate) fn auth(&self) -> Option<&Verifier> {
        self.auth.as_ref()
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn presence(&self) -> &Presence {
        &self.presence
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// When this node started (ms since the epoch), for its node record.
    pub(crate) fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Local connections.
    pub fn connection_count(&self) -> usize {
        self.hub.connection_count()
    }

    /// Ask every local connection to close with `reason` (drain).
    pub(crate) fn close_all(&self, reason: Disconnect) {
        self.hub.close_all(reason);
    }

    /// Close every local connection with `reason`, spread over `window` in
    /// batches every [`DRAIN_BATCH_INTERVAL`]: the clients reconnect
    /// elsewhere at about connections / window per second instead of all at
    /// once (Phoenix's drainer does the same). Resolves after the last batch.
    pub(crate) async fn close_spread(&self, reason: Disconnect, window: Duration) {
        let batches = (window.as_millis() / DRAIN_BATCH_INTERVAL.as_millis()).max(1) as usize;
        if batches == 1 {
            return self.close_all(reason);
        }
        let closers = self.hub.closers();
        let per_batch = closers.len().div_ceil(batches).max(1);
        let mut tick = tokio::time::interval(DRAIN_BATCH_INTERVAL);
        for batch in closers.chunks(per_batch) {
            tick.tick().await;
            for closer in batch {
                closer.close(reason);
            }
        }
        // Connections that arrived meanwhile (an upgrade admitted just
        // before the drain began).
        self.close_all(reason);
    }

    /// Whether the broker can publish and deliver right now.
    pub(crate) fn broker_healthy(&self) -> bool {
        self.broker.is_healthy()
    }

    /// Stop the broker's background tasks (shutdown).
    pub(crate) fn shutdown_broker(&self) {
        self.broker.shutdown();
    }

    /// Take a handshake slot, or the 503 to answer (see `handshake::Handshakes`).
    pub(crate) fn admit_handshake(&self) -> Result<Permit, Refusal> {
        self.handshakes.try_admit().inspect_err(|_| {
            metrics::inc(&self.metrics.handshakes_refused);
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready for traffic: not draining and the broker is reachable.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.broker.is_healthy()
    }

    pub fn gauges(&self) -> Gauges {
        let (subscriptions, channels) = self.hub.channel_counts();
        Gauges {
            connections: self.hub.connection_count(),
            subscriptions,
            channels,
            broker_up: self.broker.is_healthy(),
            draining: self.is_draining(),
            ..Gauges::default()
        }
    }

    /// Everything `/metrics` reads from live state (`gauges` plus the
    /// per-namespace counts and the start time).
    pub fn scrape(&self) -> Gauges {
        Gauges {
            namespaces: self.hub.namespace_counts(),
            started_at_ms: self.started_at,
            ..self.gauges()
        }
    }

    /// No connection is attached or still being detached: every closed
    /// connection has left presence and the registry (or tried to).
    pub(crate) fn settled(&self) -> bool {
        self.hub.connection_count() == 0 && self.detaching.load(Ordering::SeqCst) == 0
    }

    /// Count and log a failed presence write; the heartbeat repairs it.
    async fn presence_op(
        &self,
        op: impl std::future::Future<Output = Result<(), crate::presence::PresenceError>>,
    ) {
        metrics::inc(&self.metrics.presence_ops);
        if let Err(e) = op.await {
            metrics::inc(&self.metrics.presence_errors);
            tracing::warn!(error = %e, "presence update failed");
        }
    }
}
