//! `Settings::resolve`: the one merge of the layers (flags/env over the
//! TOML file over the defaults, see layers.rs), then validation. Checks run
//! in the order of the settings and the first failure is reported, naming
//! the setting by its TOML key (the flag and variable derive from it).

use std::{fmt::Debug, net::SocketAddr, ops::RangeInclusive, path::PathBuf, time::Duration};

use super::{
    invalid, Cli, ConfigError, FileSettings, JwtKey, JwtSettings, NamespaceOptions, RedisTls,
    Settings, MAX_HISTORY_SIZE,
};

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

fn at_least_one<T: PartialEq + From<u8>>(name: &'static str, value: T) -> Result<T, ConfigError> {
    if value == T::from(0) {
        return Err(invalid(name, "must be at least 1"));
    }
    Ok(value)
}

fn within<T: PartialOrd + Debug>(
    name: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if !range.contains(&value) {
        return Err(invalid(name, format!("{value:?} must be {range:?}")));
    }
    Ok(value)
}

impl Settings {
    /// Merge the layers and validate the result.
    pub fn resolve(cli: Cli, file: FileSettings) -> Result<Settings, ConfigError> {
        let m = cli.layer.merge(file);
        let listen: SocketAddr = m.listen.parse().map_err(|e| {
            invalid(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:6789 ({e})", m.listen),
            )
        })?;

        let redis_url = m.redis_url.filter(|u| !u.is_empty());
        // Whether the URL names Sentinels or a cluster's nodes (either has
        // replicas to fail over to), and whether it asks for TLS.
        let (mut replicated, mut tls) = (false, false);
        if let Some(url) = &redis_url {
            let bad = |e: &dyn std::fmt::Display| invalid("redis_url", format!("{url:?}: {e}"));
            let spec = match crate::broker::redis::SentinelSpec::parse(url) {
                Some(spec) => Some(spec.map(|s| s.tls)),
                None => crate::broker::redis::ClusterSpec::parse(url).map(|s| s.map(|s| s.tls)),
            };
            match spec {
                Some(spec) => {
                    replicated = true;
                    tls = spec.map_err(|e| bad(&e))?;
                }
                None => {
                    let info = redis::Client::open(url.as_str()).map_err(|e| bad(&e))?;
                    tls = matches!(
                        info.get_connection_info().addr(),
                        redis::ConnectionAddr::TcpTls { .. }
                    );
                    // The redis crate would accept it here and fail every
                    // connect: this build verifies Redis's certificate, always.
                    if tls && url.ends_with("#insecure") {
                        return Err(invalid(
                            "redis_url",
                            "#insecure (no certificate check) is not supported; give Redis's CA with redis_tls_ca_file",
                        ));
                    }
                }
            }
        }
        // With Sentinel or a cluster a failover promotes a replica: a
        // publish it does not have yet would be lost with its `ok`, so
        // wait for one.
        let redis_wait_replicas = m.redis_wait_replicas.unwrap_or(usize::from(replicated));
        let redis_tls = redis_tls(
            tls,
            m.redis_tls_ca_file,
            m.redis_tls_cert_file,
            m.redis_tls_key_file,
        )?;
        check_name("node_id", &m.node_id)?;
        check_name("key_prefix", &m.key_prefix)?;

        let workers = within("workers", m.workers, 1..=256)?;
        let max_connections = at_least_one("max_connections", m.max_connections)?;
        let backlog = at_least_one("backlog", m.backlog)?;

        let heartbeat_interval = millis("heartbeat_interval_ms", m.heartbeat_interval_ms, 10)?;
        let heartbeat_timeout = millis("heartbeat_timeout_ms", m.heartbeat_timeout_ms, 10)?;
        if heartbeat_timeout <= heartbeat_interval {
            return Err(invalid(
                "heartbeat_timeout_ms",
                "must be greater than heartbeat_interval_ms, or every client would time out",
            ));
        }

        let outbox_capacity = within("outbox_capacity", m.outbox_capacity, 1..=1_000_000)?;
        let max_message_bytes = m.max_message_bytes;
        if !(128..=16 << 20).contains(&max_message_bytes) {
            return Err(invalid(
                "max_message_bytes",
                format!("{max_message_bytes} must be between 128 and 16777216"),
            ));
        }
        let unsubscribe_delay = millis("unsubscribe_delay_ms", m.unsubscribe_delay_ms, 0)?;
        let redis_timeout = millis("redis_timeout_ms", m.redis_timeout_ms, 10)?;
        let redis_pool_size = within("redis_pool_size", m.redis_pool_size, 1..=1024)?;
        let drain_delay = millis("drain_delay_ms", m.drain_delay_ms, 0)?;
        let drain_timeout = millis("drain_timeout_ms", m.drain_timeout_ms, 0)?;
        let drain_spread = millis("drain_spread_ms", m.drain_spread_ms, 0)?;

        let jwt_key = match (
            m.jwt_hmac_secret.filter(|s| !s.is_empty()),
            m.jwt_public_key_file,
            m.jwt_jwks_file,
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
            audience: m.jwt_audience,
            issuer: m.jwt_issuer,
        });
        // With tokens configured, anonymous access must be asked for.
        let allow_anonymous = m.allow_anonymous.unwrap_or(jwt.is_none());
        let node_heartbeat = millis("node_heartbeat_ms", m.node_heartbeat_ms, 50)?;
        let api_key = m.api_key.filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "api_key",
                    "must be at least 16 characters without spaces (it guards the server API)",
                ));
            }
        }

        let max_subscriptions_per_connection = at_least_one(
            "max_subscriptions_per_connection",
            m.max_subscriptions_per_connection,
        )?;
        let max_connections_per_user =
            at_least_one("max_connections_per_user", m.max_connections_per_user)?;
        let max_pending_handshakes =
            at_least_one("max_pending_handshakes", m.max_pending_handshakes)?;
        let max_messages_per_second =
            at_least_one("max_messages_per_second", m.max_messages_per_second)?;
        let allowed_origins: Vec<String> = m
            .allowed_origins
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

        let mut namespaces = m.namespaces;
        for ns in &namespaces {
            check_name("namespaces.name", &ns.name)?;
            check_history("namespaces.history_size", &ns.options)?;
        }
        check_history("default_namespace.history_size", &m.default_namespace)?;
        let idempotency_window = millis("idempotency_window_ms", m.idempotency_window_ms, 1)?;
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
            redis_tls,
            redis_wait_replicas,
            node_id: m.node_id,
            key_prefix: m.key_prefix,
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
            drain_spread,
            allow_anonymous,
            node_heartbeat,
            api_key,
            log_format: m.log_format,
            max_subscriptions_per_connection,
            max_connections_per_user,
            max_pending_handshakes,
            max_messages_per_second,
            allowed_origins,
            jwt,
            echo_endpoint: m.echo_endpoint,
            demo: m.demo,
            idempotency_window,
            default_namespace: m.default_namespace,
            namespaces,
        })
    }
}

/// A namespace's history bounds make sense: at most `MAX_HISTORY_SIZE`
/// messages, kept for a positive time.
fn check_history(setting: &'static str, options: &NamespaceOptions) -> Result<(), ConfigError> {
    if options.history_size > MAX_HISTORY_SIZE {
        return Err(invalid(
            setting,
            format!("{} is more than {MAX_HISTORY_SIZE}", options.history_size),
        ));
    }
    if options.history_size > 0 && options.history_ttl_ms == 0 {
        return Err(invalid(
            setting,
            "history_ttl_ms must be above 0 when history_size is set".to_owned(),
        ));
    }
    Ok(())
}

/// The certificates for TLS to Redis: only with a `rediss://` URL, a
/// client certificate only with its key, each file read now so that a
/// wrong path stops the node at start, naming the setting.
fn redis_tls(
    tls_url: bool,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<RedisTls, ConfigError> {
    let read = |setting: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| invalid(setting, format!("{}: {e}", path.display())))
    };
    let any = ca.is_some() || cert.is_some() || key.is_some();
    if any && !tls_url {
        let setting = match (&ca, &cert) {
            (Some(_), _) => "redis_tls_ca_file",
            (None, Some(_)) => "redis_tls_cert_file",
            (None, None) => "redis_tls_key_file",
        };
        return Err(invalid(setting, "needs a rediss:// redis_url".to_string()));
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((
            read("redis_tls_cert_file", &cert)?,
            read("redis_tls_key_file", &key)?,
        )),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "redis_tls_key_file",
                "redis_tls_cert_file needs its key".to_string(),
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "redis_tls_cert_file",
                "redis_tls_key_file needs its certificate".to_string(),
            ))
        }
    };
    Ok(RedisTls {
        ca: ca.map(|p| read("redis_tls_ca_file", &p)).transpose()?,
        client,
    })
}
