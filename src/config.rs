//! Typed, layered, validated settings.
//!
//! Precedence, highest first: command-line flags, `SWITCHBOARD_*` environment
//! variables, the TOML file given by `--config`, built-in defaults. Clap reads
//! flags and environment together (a flag wins over its variable); the TOML
//! file fills whatever neither set. Every value is validated once, here, so
//! the rest of the node can trust `Settings` and a bad value fails at start
//! with a message that names the setting.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Deserialize;

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

/// A channel namespace: channels named `name:rest` belong to it. Channels
/// without a colon belong to the default namespace, which always exists; a
/// channel whose namespace is not configured is refused as `unknown_channel`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(flatten)]
    pub options: NamespaceOptions,
}

/// What a namespace's channels offer beyond publish/subscribe.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Track subscribers in the channel's presence set (`presence` command, `/api/presence`).
    #[serde(default)]
    pub presence: bool,
    /// Send `join` / `leave` frames to the channel's subscribers.
    #[serde(default)]
    pub join_leave: bool,
    /// Who may subscribe.
    #[serde(default)]
    pub subscribe: Rule,
    /// Who may publish from a WebSocket (the server API always may).
    #[serde(default)]
    pub publish: Rule,
    /// Who may read presence over the WebSocket.
    #[serde(default)]
    pub presence_for: Rule,
}

/// Who may do something on a namespace's channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// Every connection, anonymous ones included.
    #[default]
    Any,
    /// Connections authenticated with a token.
    Token,
    /// Tokens whose `channels` claim lists the channel (exactly, or by a
    /// `prefix*` pattern).
    Claim,
    /// Connections subscribed to the channel (for publish and presence).
    Subscribers,
    /// Nobody over the WebSocket: only the server API.
    Server,
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
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Validated settings of one node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub redis_url: Option<String>,
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
    pub redis_timeout: Duration,
    pub redis_pool_size: usize,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
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
    pub default_namespace: NamespaceOptions,
    pub namespaces: Vec<Namespace>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::resolve(Cli::default(), FileSettings::default())
            .expect("built-in defaults are valid")
    }
}

/// Node ids, prefixes and namespace names end up in Redis names and JSON:
/// keep them to a safe, readable alphabet.
fn check_name(name: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            name,
            format!("{value:?} must be 1-64 characters of [A-Za-z0-9-_.]"),
        ))
    }
}

fn millis(name: &'static str, value: u64, min: u64) -> Result<Duration, ConfigError> {
    if value < min {
        return Err(invalid(
            name,
            format!("{value} ms is below the minimum {min} ms"),
        ));
    }
    Ok(Duration::from_millis(value))
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

    /// Merge the layers and validate the result.
    pub fn resolve(cli: Cli, file: FileSettings) -> Result<Settings, ConfigError> {
        let listen_text = cli
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:6789".into());
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:6789 ({e})"),
            )
        })?;

        let redis_url = cli.redis_url.or(file.redis_url).filter(|u| !u.is_empty());
        if let Some(url) = &redis_url {
            redis::Client::open(url.as_str())
                .map_err(|e| invalid("redis_url", format!("{url:?}: {e}")))?;
        }

        let node_id = cli
            .node_id
            .or(file.node_id)
            .unwrap_or_else(|| format!("node-{:08x}", fastrand::u32(..)));
        check_name("node_id", &node_id)?;
        let key_prefix = cli
            .key_prefix
            .or(file.key_prefix)
            .unwrap_or_else(|| "sb".into());
        check_name("key_prefix", &key_prefix)?;

        let workers = cli
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if workers == 0 || workers > 256 {
            return Err(invalid("workers", format!("{workers} must be 1..=256")));
        }
        let max_connections = cli
            .max_connections
            .or(file.max_connections)
            .unwrap_or(25_000);
        if max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let backlog = cli.backlog.or(file.backlog).unwrap_or(2048);
        if backlog == 0 {
            return Err(invalid("backlog", "must be at least 1"));
        }

        let heartbeat_interval = millis(
            "heartbeat_interval_ms",
            cli.heartbeat_interval_ms
                .or(file.heartbeat_interval_ms)
                .unwrap_or(25_000),
            10,
        )?;
        let heartbeat_timeout = millis(
            "heartbeat_timeout_ms",
            cli.heartbeat_timeout_ms
                .or(file.heartbeat_timeout_ms)
                .unwrap_or(60_000),
            10,
        )?;
        if heartbeat_timeout <= heartbeat_interval {
            return Err(invalid(
                "heartbeat_timeout_ms",
                "must be greater than heartbeat_interval_ms, or every client would time out",
            ));
        }

        let outbox_capacity = cli.outbox_capacity.or(file.outbox_capacity).unwrap_or(1024);
        if !(1..=1_000_000).contains(&outbox_capacity) {
            return Err(invalid(
                "outbox_capacity",
                format!("{outbox_capacity} must be 1..=1000000"),
            ));
        }
        let max_message_bytes = cli
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(65_536);
        if !(128..=16 << 20).contains(&max_message_bytes) {
            return Err(invalid(
                "max_message_bytes",
                format!("{max_message_bytes} must be between 128 and 16777216"),
            ));
        }
        let unsubscribe_delay = millis(
            "unsubscribe_delay_ms",
            cli.unsubscribe_delay_ms
                .or(file.unsubscribe_delay_ms)
                .unwrap_or(1000),
            0,
        )?;
        let redis_timeout = millis(
            "redis_timeout_ms",
            cli.redis_timeout_ms
                .or(file.redis_timeout_ms)
                .unwrap_or(2000),
            10,
        )?;
        let redis_pool_size = cli.redis_pool_size.or(file.redis_pool_size).unwrap_or(16);
        if !(1..=1024).contains(&redis_pool_size) {
            return Err(invalid(
                "redis_pool_size",
                format!("{redis_pool_size} must be 1..=1024"),
            ));
        }
        let drain_delay = millis(
            "drain_delay_ms",
            cli.drain_delay_ms.or(file.drain_delay_ms).unwrap_or(0),
            0,
        )?;
        let drain_timeout = millis(
            "drain_timeout_ms",
            cli.drain_timeout_ms
                .or(file.drain_timeout_ms)
                .unwrap_or(5000),
            0,
        )?;
        let jwt_key = match (
            cli.jwt_hmac_secret
                .or(file.jwt_hmac_secret)
                .filter(|s| !s.is_empty()),
            cli.jwt_public_key_file.or(file.jwt_public_key_file),
            cli.jwt_jwks_file.or(file.jwt_jwks_file),
        ) {
            (None, None, None) => None,
            (Some(secret), None, None) => {
                if secret.len() < 32 {
                    return Err(invalid("jwt_hmac_secret", "must be at least 32 bytes"));
                }
                Some(JwtKey::HmacSecret(secret))
            }
            (None, Some(path), None) => Some(JwtKey::PublicKeyFile(path)),
            (None, None, Some(path)) => Some(JwtKey::JwksFile(path)),
            _ => {
                return Err(invalid(
                    "jwt_hmac_secret",
                    "set only one of jwt_hmac_secret, jwt_public_key_file and jwt_jwks_file",
                ))
            }
        };
        let jwt = jwt_key.map(|key| JwtSettings {
            key,
            audience: cli.jwt_audience.or(file.jwt_audience),
            issuer: cli.jwt_issuer.or(file.jwt_issuer),
        });
        // With tokens configured, anonymous access must be asked for.
        let allow_anonymous = cli
            .allow_anonymous
            .or(file.allow_anonymous)
            .unwrap_or(jwt.is_none());
        let node_heartbeat = millis(
            "node_heartbeat_ms",
            cli.node_heartbeat_ms
                .or(file.node_heartbeat_ms)
                .unwrap_or(5000),
            50,
        )?;
        let api_key = cli.api_key.or(file.api_key).filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "api_key",
                    "must be at least 16 characters without spaces (it guards the server API)",
                ));
            }
        }

        let max_subscriptions_per_connection = cli
            .max_subscriptions_per_connection
            .or(file.max_subscriptions_per_connection)
            .unwrap_or(512);
        if max_subscriptions_per_connection == 0 {
            return Err(invalid(
                "max_subscriptions_per_connection",
                "must be at least 1",
            ));
        }
        let max_connections_per_user = cli
            .max_connections_per_user
            .or(file.max_connections_per_user)
            .unwrap_or(100);
        if max_connections_per_user == 0 {
            return Err(invalid("max_connections_per_user", "must be at least 1"));
        }
        let max_pending_handshakes = cli
            .max_pending_handshakes
            .or(file.max_pending_handshakes)
            .unwrap_or(4096);
        if max_pending_handshakes == 0 {
            return Err(invalid("max_pending_handshakes", "must be at least 1"));
        }
        let max_messages_per_second = cli
            .max_messages_per_second
            .or(file.max_messages_per_second)
            .unwrap_or(100);
        if max_messages_per_second == 0 {
            return Err(invalid("max_messages_per_second", "must be at least 1"));
        }
        let allowed_origins: Vec<String> = cli
            .allowed_origins
            .or(file.allowed_origins)
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &allowed_origins {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin[8..].contains('/');
            if !ok {
                return Err(invalid(
                    "allowed_origins",
                    format!("{origin:?} must be scheme://host[:port], optionally with a leading *. wildcard"),
                ));
            }
        }

        let mut namespaces = file.namespaces;
        for ns in &namespaces {
            check_name("namespaces.name", &ns.name)?;
        }
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = namespaces.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(invalid(
                "namespaces.name",
                format!("{:?} is defined twice", w[0].name),
            ));
        }

        Ok(Settings {
            listen,
            redis_url,
            node_id,
            key_prefix,
            workers,
            max_connections,
            backlog,
            heartbeat_interval,
            heartbeat_timeout,
            outbox_capacity,
            max_message_bytes,
            unsubscribe_delay,
            redis_timeout,
            redis_pool_size,
            drain_delay,
            drain_timeout,
            allow_anonymous,
            node_heartbeat,
            api_key,
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            max_subscriptions_per_connection,
            max_connections_per_user,
            max_pending_handshakes,
            max_messages_per_second,
            allowed_origins,
            jwt,
            echo_endpoint: cli.echo_endpoint.or(file.echo_endpoint).unwrap_or(false),
            default_namespace: file.default_namespace,
            namespaces,
        })
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

    /// The options of a channel's namespace, or None if the namespace is
    /// not configured. Channels without a colon are in the default namespace.
    pub fn namespace(&self, channel: &str) -> Option<&NamespaceOptions> {
        match channel.split_once(':') {
            None => Some(&self.default_namespace),
            // `user:` always exists: personal channels, owner-only (see permissions).
            Some(("user", _)) => Some(
                self.namespaces
                    .iter()
                    .find(|n| n.name == "user")
                    .map_or(&crate::permissions::PERSONAL_NAMESPACE, |n| &n.options),
            ),
            Some((ns, _)) => self
                .namespaces
                .iter()
                .find(|n| n.name == ns)
                .map(|n| &n.options),
        }
    }

    pub fn namespace_exists(&self, channel: &str) -> bool {
        self.namespace(channel).is_some()
    }

    /// May a browser page from `origin` open a WebSocket here? Entries are
    /// exact (`https://app.example.com`) or wildcard subdomains
    /// (`https://*.example.com`); an empty list allows every origin.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|allowed| match allowed.split_once("://*.") {
                Some((scheme, domain)) => origin
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_prefix("://"))
                    .and_then(|host| host.strip_suffix(domain))
                    .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                None => allowed.eq_ignore_ascii_case(origin),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["switchboard"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).expect("flags parse")
    }

    /// Every flag of `--help` is documented in docs/configuration.md with
    /// its environment variable, and the docs name no flag that is gone.
    #[test]
    fn configuration_docs_and_help_list_the_same_settings() {
        use clap::CommandFactory;
        let doc = include_str!("../docs/configuration.md");
        let mut flags = Vec::new();
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            flags.push(format!("--{long}"));
            assert!(
                doc.contains(&format!("`--{long}")),
                "docs/configuration.md does not document --{long}"
            );
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                // A row may cover a family, as `SWITCHBOARD_JWT_*`.
                let covered = doc.contains(&format!("`{env}`"))
                    || doc.split('`').any(|word| {
                        word.strip_suffix('*')
                            .is_some_and(|prefix| !prefix.is_empty() && env.starts_with(prefix))
                    });
                assert!(covered, "docs/configuration.md does not name {env}");
            }
        }
        for word in doc.split('`') {
            let flag = word.split_whitespace().next().unwrap_or_default();
            if flag.starts_with("--") && flag.len() > 2 {
                assert!(
                    flags.iter().any(|f| f == flag),
                    "docs/configuration.md names {flag}, which --help does not list"
                );
            }
        }
    }

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let s = Settings::resolve(Cli::default(), FileSettings::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:6789");
        assert!(s.redis_url.is_none());
        assert_eq!(s.key_prefix, "sb");
        assert!(s.allow_anonymous);
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileSettings = toml::from_str(
            "listen = \"0.0.0.0:7000\"\nkey_prefix = \"file\"\nheartbeat_interval_ms = 500\n",
        )
        .unwrap();
        let s = Settings::resolve(cli(&["--listen", "127.0.0.1:7001"]), file).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(s.key_prefix, "file");
        assert_eq!(s.heartbeat_interval, Duration::from_millis(500));
    }

    #[test]
    fn errors_name_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "nowhere"], "`listen`"),
            (&["--redis-url", "http://x"], "`redis_url`"),
            (&["--node-id", "has space"], "`node_id`"),
            (
                &[
                    "--heartbeat-interval-ms",
                    "1000",
                    "--heartbeat-timeout-ms",
                    "900",
                ],
                "`heartbeat_timeout_ms`",
            ),
            (&["--max-message-bytes", "1"], "`max_message_bytes`"),
            (&["--outbox-capacity", "0"], "`outbox_capacity`"),
            (&["--api-key", "short"], "`api_key`"),
            (&["--jwt-hmac-secret", "short"], "`jwt_hmac_secret`"),
            (
                &[
                    "--jwt-hmac-secret",
                    &"s".repeat(40),
                    "--jwt-jwks-file",
                    "x.json",
                ],
                "`jwt_hmac_secret`",
            ),
            (&["--node-heartbeat-ms", "1"], "`node_heartbeat_ms`"),
        ];
        for (args, name) in cases {
            let err = Settings::resolve(cli(args), FileSettings::default()).unwrap_err();
            assert!(err.to_string().contains(name), "{args:?}: {err}");
        }
    }

    #[test]
    fn echo_endpoint_is_off_unless_asked_for() {
        let off = Settings::resolve(Cli::default(), FileSettings::default()).unwrap();
        assert!(!off.echo_endpoint);
        let file: FileSettings = toml::from_str("echo_endpoint = true\n").unwrap();
        assert!(
            Settings::resolve(Cli::default(), file)
                .unwrap()
                .echo_endpoint
        );
        let flag = cli(&["--echo-endpoint", "true"]);
        let file: FileSettings = toml::from_str("echo_endpoint = false\n").unwrap();
        assert!(Settings::resolve(flag, file).unwrap().echo_endpoint);
    }

    #[test]
    fn file_rejects_unknown_keys_and_duplicate_namespaces() {
        assert!(toml::from_str::<FileSettings>("lisen = \"x\"").is_err());
        let file: FileSettings =
            toml::from_str("[[namespaces]]\nname = \"chat\"\n[[namespaces]]\nname = \"chat\"\n")
                .unwrap();
        let err = Settings::resolve(Cli::default(), file).unwrap_err();
        assert!(err.to_string().contains("namespaces.name"), "{err}");
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let s = Settings::resolve(
            cli(&[
                "--allowed-origins",
                "https://app.example.com,https://*.corp.example",
            ]),
            FileSettings::default(),
        )
        .unwrap();
        assert!(s.origin_allowed("https://app.example.com"));
        assert!(s.origin_allowed("https://app.example.com/"));
        assert!(s.origin_allowed("https://eu.corp.example"));
        assert!(!s.origin_allowed("https://corp.example"));
        assert!(!s.origin_allowed("http://eu.corp.example"));
        assert!(!s.origin_allowed("https://evil.com"));
        assert!(!s.origin_allowed("https://app.example.com.evil.com"));
        assert!(!s.origin_allowed("https://evilcorp.example"));
        assert!(Settings::resolve(Cli::default(), FileSettings::default())
            .unwrap()
            .origin_allowed("https://x"));
        let err = Settings::resolve(
            cli(&["--allowed-origins", "example.com"]),
            FileSettings::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`allowed_origins`"));
    }

    #[test]
    fn namespaces_decide_known_channels() {
        let file: FileSettings = toml::from_str(
            "[default_namespace]\njoin_leave = true\n[[namespaces]]\nname = \"chat\"\npresence = true\n",
        )
        .unwrap();
        let s = Settings::resolve(Cli::default(), file).unwrap();
        assert_eq!(
            s.namespace("lobby"),
            Some(&NamespaceOptions {
                presence: false,
                join_leave: true,
                ..NamespaceOptions::default()
            })
        );
        assert_eq!(
            s.namespace("chat:room-1"),
            Some(&NamespaceOptions {
                presence: true,
                join_leave: false,
                ..NamespaceOptions::default()
            })
        );
        assert!(s.namespace_exists("chat:room-1"));
        assert!(!s.namespace_exists("files:1"));
        assert!(
            toml::from_str::<FileSettings>("[[namespaces]]\nname = \"x\"\npresense = true\n")
                .is_err()
        );
    }
}
