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

mod layers;
mod namespaces;
#[cfg(test)]
mod tests;

pub use layers::{Cli, FileSettings};
pub use namespaces::{Namespace, NamespaceOptions, Rule};

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
}
