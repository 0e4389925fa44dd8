//! Typed, layered, validated settings.
//!
//! Precedence, highest first: command-line flags, `SWITCHBOARD_*` environment
//! variables, the TOML file given by `--config`, built-in defaults. Clap reads
//! flags and environment together (a flag wins over its variable); the TOML
//! file fills whatever neither set. Every value is validated once, here, so
//! the rest of the node can trust `Settings` and a bad value fails at start
//! with a message that names the setting.
//!
//! * `layers.rs` — every setting declared once (help, flag, env, TOML key,
//!   type, default); flags+env and the file are two values of one type.
//! * `resolve.rs` — the merge and the validation into [`Settings`].
//! * `namespaces.rs` — channel namespaces and the origin allow-list.
//! * this file — the validated [`Settings`] and loading them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Deserialize;

mod layers;
mod namespaces;
mod resolve;
#[cfg(test)]
mod tests;

pub use layers::{Cli, FileSettings, Layer, Merged};
pub use namespaces::{HistoryLimits, Namespace, NamespaceOptions, Rule, MAX_HISTORY_SIZE};

/// A setting that could not be loaded or failed validation.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting `{name}`: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// Where the key that verifies client tokens comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKey {
    HmacSecret(String),
    PublicKeyFile(PathBuf),
    JwksFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub key: JwtKey,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// PEM certificates for TLS to Redis, read at start. Debug shows which
/// are set, never their bytes (the key is a secret).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    /// Client certificate and its key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Validated settings of one node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub redis_url: Option<String>,
    /// Certificates for a `rediss://` URL (all empty: the system's roots, no client certificate).
    pub redis_tls: RedisTls,
    pub node_id: String,
    pub key_prefix: String,
    pub workers: usize,
    pub max_connections: usize,
    pub backlog: u32,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub outbox_capacity: usize,
    pub max_message_bytes: usize,
    pub unsubscribe_delay: Duration,
    /// How long a publish's idempotency key is remembered.
    pub idempotency_window: Duration,
    pub redis_timeout: Duration,
    pub redis_pool_size: usize,
    /// Replicas a publish must reach before its `ok` (Redis WAIT).
    pub redis_wait_replicas: usize,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
    /// The window the shutdown closes are spread over (zero: all at once).
    pub drain_spread: Duration,
    pub allow_anonymous: bool,
    pub node_heartbeat: Duration,
    pub api_key: Option<String>,
    pub log_format: LogFormat,
    pub max_subscriptions_per_connection: usize,
    pub max_connections_per_user: usize,
    /// Handshakes in progress past which upgrades get 503 + Retry-After.
    pub max_pending_handshakes: usize,
    pub max_messages_per_second: u32,
    /// Empty: any origin (and requests without one) may connect.
    pub allowed_origins: Vec<String>,
    /// How client tokens are verified; None: no token authentication.
    pub jwt: Option<JwtSettings>,
    /// Serve the echo WebSocket on `/echo` (conformance testing only).
    pub echo_endpoint: bool,
    pub demo: bool,
    pub default_namespace: NamespaceOptions,
    pub namespaces: Vec<Namespace>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::resolve(Cli::default(), FileSettings::default())
            .expect("built-in defaults are valid")
    }
}

impl Settings {
    /// Parse flags and environment, read the TOML file if one is named, validate.
    pub fn load() -> Result<Settings, ConfigError> {
        Settings::from_cli(Cli::parse())
    }

    pub fn from_cli(cli: Cli) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
            None => FileSettings::default(),
        };
        Settings::resolve(cli, file)
    }

    /// Settings for tests: port 0 on loopback, one worker, no frame-rate
    /// limit (tests publish in bursts), otherwise defaults.
    pub fn for_tests() -> Settings {
        Settings {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            workers: 1,
            max_messages_per_second: 1_000_000,
            ..Settings::default()
        }
    }
}
