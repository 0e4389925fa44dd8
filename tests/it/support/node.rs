//! Nodes under test: in-process (`TestNode`, port 0) or the real binary.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchboard::config::Settings;
use switchboard::gateway::Gateway;
use switchboard::startup::{Application, Drainer};
use switchboard_fixtures::{NodeProcess, RedisServer};

use super::{http, Client};

/// The `switchboard` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The real binary on a free port, its environment cleared but for
/// `RUST_LOG=info` and `env`; killed on drop.
pub fn spawn_node(args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
    spawn_node_on(switchboard_fixtures::free_port(), args, env)
}

/// [`spawn_node`] on a given port (a node restarted where it was).
pub fn spawn_node_on(port: u16, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
    NodeProcess::spawn_on(port, BIN, |cmd| {
        cmd.env_clear()
            .env("RUST_LOG", "info")
            .args(args)
            .envs(env.iter().copied());
    })
    .expect("spawn switchboard")
}

/// An in-process node on port 0.
pub struct TestNode {
    pub port: u16,
    pub gateway: Arc<Gateway>,
    pub drainer: Drainer,
}

impl TestNode {
    pub async fn start(settings: Settings) -> TestNode {
        let app = Application::build(settings).await.expect("node starts");
        let node = TestNode {
            port: app.port(),
            gateway: app.gateway(),
            drainer: app.drainer(),
        };
        tokio::spawn(app.run());
        node
    }

    /// Memory-mode node with test defaults, adjusted by `tweak`.
    pub async fn memory(tweak: impl FnOnce(&mut Settings)) -> TestNode {
        let mut s = Settings::for_tests();
        tweak(&mut s);
        TestNode::start(s).await
    }

    /// Cluster-mode node on `redis`, named `id`, once ready.
    pub async fn redis(
        redis: &RedisServer,
        id: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestNode {
        TestNode::on_redis(&redis.url(), id, tweak).await
    }

    /// Cluster-mode node on the Redis URL `url` (a server, Sentinels or a
    /// Redis Cluster), named `id`, once ready.
    pub async fn on_redis(url: &str, id: &str, tweak: impl FnOnce(&mut Settings)) -> TestNode {
        let mut s = Settings::for_tests();
        s.redis_url = Some(url.to_owned());
        s.node_id = id.to_owned();
        s.redis_timeout = Duration::from_millis(500);
        s.unsubscribe_delay = Duration::from_millis(100);
        tweak(&mut s);
        let node = TestNode::start(s).await;
        node.wait_ready(true).await;
        node
    }

    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?user={user}", self.port)
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http::get(self.port, path).await
    }

    /// Wait until `/readyz` says ready (or says not ready, if `ready` is false).
    pub async fn wait_ready(&self, ready: bool) {
        http::wait_ready(self.port, ready).await;
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(user)).await
    }

    /// Call the server API with the test key.
    pub async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http::api(self.port, method, path, body).await
    }

    /// The current value of one of the node's counters.
    pub fn counter(
        &self,
        f: impl Fn(&switchboard::metrics::Metrics) -> &switchboard::metrics::Counter,
    ) -> u64 {
        f(self.gateway.metrics()).get()
    }
}
