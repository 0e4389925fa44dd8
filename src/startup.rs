//! Application: bind the listener, wire the gateway, serve, drain.
//!
//! `Application::build` binds before it returns, so tests can ask for port 0
//! and read the real port (zero-to-production's pattern). Shutdown is ours,
//! not actix's: on SIGTERM/SIGINT the node first reports not-ready, waits
//! `drain_delay` for load balancers to notice, closes every client with the
//! reconnect-class `shutdown` code (spread over `drain_spread`, in batches), waits up to `drain_timeout` for them to
//! go (and leave presence and the connection registry), removes the node's
//! record and whatever it still owns from the registries (bounded by
//! `redis_timeout`), then stops the HTTP server.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_server::{Server, ServerHandle};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{web, App};

use crate::auth::Verifier;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{self as redis_broker, RedisBroker};
use crate::broker::{Broker, BrokerError};
use crate::config::Settings;
use crate::disconnect::Disconnect;
use crate::gateway::{Gateway, Services};
use crate::http;
use crate::hub::Hub;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::node_heartbeat::NodeHeartbeat;
use crate::presence::memory::MemorySets;
use crate::presence::redis::RedisSets;
use crate::presence::{ExpiringSets, Presence};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the broker: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the HTTP server: {0}")]
    Server(std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    gateway: Arc<Gateway>,
    heartbeat: Arc<NodeHeartbeat>,
}

/// Triggers the drain sequence from outside (tests, signal handler).
#[derive(Clone)]
pub struct Drainer {
    gateway: Arc<Gateway>,
    server: ServerHandle,
    heartbeat: Arc<NodeHeartbeat>,
}

impl Drainer {
    pub async fn drain(&self) {
        let gw = &self.gateway;
        if gw.is_draining() {
            return;
        }
        gw.start_draining();
        tracing::info!(connections = gw.connection_count(), "draining");
        tokio::time::sleep(gw.settings().drain_delay).await;
        gw.close_spread(Disconnect::Shutdown, gw.settings().drain_spread)
            .await;
        let deadline = tokio::time::Instant::now() + gw.settings().drain_timeout;
        while !gw.settled() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = gw.connection_count();
        if left > 0 {
            tracing::warn!(left, "drain timeout: dropping remaining connections");
        }
        // Out of the registry before the process exits, so the cluster
        // stops listing this node and its clients at once.
        self.heartbeat.leave(gw).await;
        gw.shutdown_broker();
        self.server.stop(true).await;
    }
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let listener = TcpListener::bind(settings.listen).map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let port = listener.local_addr().map_err(StartupError::Server)?.port();
        let workers = settings.workers;
        let max_connections = settings.max_connections;
        let backlog = settings.backlog;
        // Room for the JSON around a message of the largest allowed size.
        let api_body_limit = settings.max_message_bytes + 4096;
        let echo_endpoint = settings.echo_endpoint;
        let demo = settings.demo;
        let auth = settings.jwt.as_ref().map(Verifier::load).transpose()?;
        let services = services(&settings)?;
        let gateway = Gateway::new(settings, auth, services);
        let heartbeat = NodeHeartbeat::start(gateway.clone());
        let data = web::Data::from(gateway.clone());
        // actix-web's `HttpServer`, assembled by hand for one addition: the
        // upgrade hook, which takes WebSocket upgrades with their TCP stream
        // away from the HTTP dispatcher (see `upgrade`). Everything else is
        // the App, as before.
        let addr = listener.local_addr().map_err(StartupError::Server)?;
        let upgrade_gw = gateway.clone();
        let server = Server::build()
            .workers(workers)
            .max_concurrent_connections(max_connections)
            .backlog(backlog)
            .disable_signals()
            // Our drain has already closed the sockets by the time actix stops.
            .shutdown_timeout(1)
            .listen("switchboard", listener, move || {
                let data = data.clone();
                let gw = upgrade_gw.clone();
                let app = App::new()
                    .app_data(data)
                    .configure(|cfg| http::routes(cfg, api_body_limit, echo_endpoint, demo))
                    .into_factory()
                    .map_err(|err: actix_web::Error| err.error_response());
                HttpService::build()
                    // No lingering read after a response (actix's default is
                    // 1 s): a refused upgrade's client waits for the close.
                    .client_disconnect_timeout(Duration::ZERO)
                    .local_addr(addr)
                    .upgrade(fn_service(move |(req, framed)| {
                        let gw = gw.clone();
                        async move {
                            crate::upgrade::serve(gw, echo_endpoint, req, framed).await;
                            Ok::<_, actix_web::Error>(())
                        }
                    }))
                    .finish(map_config(app, |()| AppConfig::default()))
                    .tcp()
            })
            .map_err(StartupError::Server)?
            .run();
        tracing::info!(
            port,
            node = %gateway.node_id(),
            mode = if gateway.settings().redis_url.is_some() { "redis" } else { "memory" },
            "listening"
        );
        Ok(Application {
            port,
            server,
            gateway,
            heartbeat,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    pub fn drainer(&self) -> Drainer {
        Drainer {
            gateway: self.gateway.clone(),
            server: self.server.handle(),
            heartbeat: self.heartbeat.clone(),
        }
    }

    /// Serve until `stop` resolves, then drain.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let drainer = self.drainer();
        let watcher = tokio::spawn(async move {
            stop.await;
            drainer.drain().await;
        });
        let result = self.server.await;
        watcher.abort();
        result
    }

    /// Serve until SIGTERM or SIGINT, then drain.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serve until `Drainer::drain` is called (tests).
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Wire the hub to the broker and presence the settings ask for: the
/// in-process ones on a single node, Redis in a cluster. Must run inside a
/// Tokio runtime (the Redis broker spawns its subscriber).
fn services(settings: &Settings) -> Result<Services, BrokerError> {
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(metrics.clone()));
    // Registry entries live 2.5 heartbeats: a live node refreshes them
    // with room for a late tick, and a dead node's are gone within 2.5
    // intervals of its last refresh (under 3 after it died).
    let ttl = settings.node_heartbeat * 5 / 2;
    let (broker, sets): (Arc<dyn Broker>, Arc<dyn ExpiringSets>) = match &settings.redis_url {
        None => (
            Arc::new(MemoryBroker::new(
                hub.clone(),
                metrics.clone(),
                settings.node_id.clone(),
            )),
            Arc::new(MemorySets::new(ttl)),
        ),
        Some(url) => {
            let keys = Keys::new(settings.key_prefix.clone());
            // Where the command pool and the subscriber connection go: one
            // server (with its TLS certificates, for rediss://), or the
            // master the Sentinels name at each connect.
            let target = redis_broker::Target::new(url, &settings.redis_tls)
                .map_err(crate::broker::BrokerError::unavailable)?;
            let pool = redis_broker::pool(
                target.clone(),
                settings.redis_pool_size,
                settings.redis_timeout,
            )?;
            let broker = RedisBroker::start(
                target,
                pool.clone(),
                keys.clone(),
                settings,
                hub.clone(),
                metrics.clone(),
            )?;
            let sets = RedisSets::new(pool, keys, ttl, settings.redis_timeout);
            (Arc::new(broker), Arc::new(sets))
        }
    };
    Ok(Services {
        hub,
        broker,
        presence: Presence::new(sets),
        metrics,
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
