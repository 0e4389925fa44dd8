//! The two layers a setting can come from besides the defaults: flags with
//! their environment variables (clap reads both), and the TOML file. Both
//! hold every setting as an `Option`, so an unset value falls through to
//! the next layer; `Settings::resolve` merges and validates them.

use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use super::{LogFormat, Namespace, NamespaceOptions};

/// Command-line flags and their environment variables. Every field is
/// optional so that an unset flag falls through to the TOML file.
#[derive(Debug, Default, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// TOML settings file (lowest precedence after the defaults).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:6789 (default 127.0.0.1:6789).
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<String>,
    /// Redis URL; setting it switches the node to cluster mode.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Node id, unique in the cluster (default: random).
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Prefix of every Redis key and channel (default `sb`).
    #[arg(long, env = "SWITCHBOARD_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// HTTP worker threads (default: number of CPUs).
    #[arg(long, env = "SWITCHBOARD_WORKERS")]
    pub workers: Option<usize>,
    /// Maximum concurrent connections per worker (default 25000).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Listen backlog (default 2048).
    #[arg(long, env = "SWITCHBOARD_BACKLOG")]
    pub backlog: Option<u32>,
    /// Server ping interval in milliseconds (default 25000).
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Close a client silent for this long, in milliseconds (default 60000).
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Frames queued per connection before it is closed as a slow consumer (default 1024).
    #[arg(long, env = "SWITCHBOARD_OUTBOX_CAPACITY")]
    pub outbox_capacity: Option<usize>,
    /// Largest inbound WebSocket message in bytes; larger closes with 1009 (default 65536).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Keep a broker subscription this long after its last local subscriber leaves (default 1000).
    #[arg(long, env = "SWITCHBOARD_UNSUBSCRIBE_DELAY_MS")]
    pub unsubscribe_delay_ms: Option<u64>,
    /// Timeout of one Redis operation, in milliseconds (default 2000).
    #[arg(long, env = "SWITCHBOARD_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Redis command pool size (default 16).
    #[arg(long, env = "SWITCHBOARD_REDIS_POOL_SIZE")]
    pub redis_pool_size: Option<usize>,
    /// Time between /readyz turning 503 and closing clients on shutdown (default 0).
    #[arg(long, env = "SWITCHBOARD_DRAIN_DELAY_MS")]
    pub drain_delay_ms: Option<u64>,
    /// Longest wait for clients to go after the shutdown close (default 5000).
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// HS256 secret for client tokens (at least 32 bytes).
    #[arg(long, env = "SWITCHBOARD_JWT_HMAC_SECRET", hide_env_values = true)]
    pub jwt_hmac_secret: Option<String>,
    /// PEM public key (RSA for RS256 or EC P-256 for ES256) for client tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// JWKS file (RS256/ES256 keys chosen by the token's `kid`).
    #[arg(long, env = "SWITCHBOARD_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Required `aud` claim of client tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim of client tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accept connections without a token, user from `?user=` (default: true
    /// unless a JWT key is configured).
    #[arg(long, env = "SWITCHBOARD_ALLOW_ANONYMOUS")]
    pub allow_anonymous: Option<bool>,
    /// How often the node refreshes its record, its connections and their presence in Redis (default 5000).
    #[arg(long, env = "SWITCHBOARD_NODE_HEARTBEAT_MS")]
    pub node_heartbeat_ms: Option<u64>,
    /// Most channels one connection may subscribe to (default 512).
    #[arg(long, env = "SWITCHBOARD_MAX_SUBSCRIPTIONS_PER_CONNECTION")]
    pub max_subscriptions_per_connection: Option<usize>,
    /// Most connections one user may hold across the cluster (default 100).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// Upgrades in progress (until the welcome frame) before more are answered 503 (default 4096).
    #[arg(long, env = "SWITCHBOARD_MAX_PENDING_HANDSHAKES")]
    pub max_pending_handshakes: Option<usize>,
    /// Frames a connection may send per second before they are refused (default 100).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGES_PER_SECOND")]
    pub max_messages_per_second: Option<u32>,
    /// Browser origins allowed to open WebSockets, comma-separated (default: any).
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Log output: `text` (default) or `json`.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Key for the server HTTP API (`Authorization: apikey KEY`); unset disables the API.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Serve `GET /echo`, a WebSocket that echoes every message, for
    /// conformance testing only (default: false).
    #[arg(long, env = "SWITCHBOARD_ECHO_ENDPOINT")]
    pub echo_endpoint: Option<bool>,
}

/// The TOML file: the same names as the flags, plus namespaces.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<String>,
    pub redis_url: Option<String>,
    pub node_id: Option<String>,
    pub key_prefix: Option<String>,
    pub workers: Option<usize>,
    pub max_connections: Option<usize>,
    pub backlog: Option<u32>,
    pub heartbeat_interval_ms: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    pub outbox_capacity: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub unsubscribe_delay_ms: Option<u64>,
    pub redis_timeout_ms: Option<u64>,
    pub redis_pool_size: Option<usize>,
    pub drain_delay_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub allow_anonymous: Option<bool>,
    pub node_heartbeat_ms: Option<u64>,
    pub api_key: Option<String>,
    pub log_format: Option<LogFormat>,
    pub max_subscriptions_per_connection: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub max_pending_handshakes: Option<usize>,
    pub max_messages_per_second: Option<u32>,
    pub allowed_origins: Option<Vec<String>>,
    pub jwt_hmac_secret: Option<String>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub jwt_jwks_file: Option<PathBuf>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub echo_endpoint: Option<bool>,
    /// Options of channels without a namespace.
    #[serde(default)]
    pub default_namespace: NamespaceOptions,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
}
