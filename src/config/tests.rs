//! Settings: defaults, layering, validation and the docs kept in step.

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
    let doc = include_str!("../../docs/configuration.md");
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

/// The declared defaults by TOML key, as `--help` and the docs write them;
/// None: no default (the setting stays unset) or not a plain value.
fn declared_defaults() -> Vec<(String, Option<String>)> {
    let merged = Layer::default().merge(Layer::default());
    let serde_json::Value::Object(map) = serde_json::to_value(merged).unwrap() else {
        unreachable!("Merged is a struct")
    };
    map.into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    Some(value.to_string())
                }
                _ => None,
            };
            (key, text)
        })
        .collect()
}

/// Defaults computed at start, which help and docs describe in words.
const COMPUTED_DEFAULTS: &[&str] = &["node_id", "workers"];

/// The default a help text states: `(default X)`, `(default: X)` or
/// `` `X` (default)``.
fn stated_default(help: &str) -> Option<String> {
    if let Some((before, _)) = help.split_once(" (default)") {
        return before
            .rsplit(' ')
            .next()
            .map(|w| w.trim_matches('`').into());
    }
    let (_, rest) = help.split_once("(default")?;
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    Some(rest.split(')').next()?.trim().trim_matches('`').into())
}

/// A default stated in `--help` or in docs/configuration.md is the one
/// declared in layers.rs, and the docs list exactly the declared TOML keys.
#[test]
fn documented_defaults_and_keys_are_the_declared_ones() {
    use clap::CommandFactory;
    let defaults = declared_defaults();
    let declared = |key: &str| defaults.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let checked = |key: &str| match declared(key) {
        Some(Some(text)) if !COMPUTED_DEFAULTS.contains(&key) => Some(text.clone()),
        _ => None,
    };
    for arg in Cli::command().get_arguments() {
        let key = arg.get_id().as_str();
        if let Some(default) = checked(key) {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert_eq!(
                stated_default(&help),
                Some(default),
                "--help of `{key}` does not state its declared default: {help:?}"
            );
        }
    }
    let doc = include_str!("../../docs/configuration.md");
    let mut documented = Vec::new();
    for line in doc.lines() {
        // The settings table: | `key` | flag / environment | default | meaning |
        let line = line.replace("\\|", "/"); // an escaped `|` inside a cell
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() != 6 || !cells[1].starts_with('`') {
            continue;
        }
        let keys: Vec<&str> = cells[1].split('`').skip(1).step_by(2).collect();
        for key in &keys {
            assert!(
                declared(key).is_some(),
                "docs/configuration.md documents `{key}`, which is not a setting"
            );
            documented.push(key.to_string());
        }
        if let [key] = keys[..] {
            if let Some(default) = checked(key) {
                assert_eq!(
                    cells[3].trim_matches('`'),
                    default,
                    "docs/configuration.md gives `{key}` another default"
                );
            }
        }
    }
    for (key, _) in &defaults {
        assert!(
            documented.contains(key),
            "docs/configuration.md does not document the TOML key `{key}`"
        );
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
        toml::from_str::<FileSettings>("[[namespaces]]\nname = \"x\"\npresense = true\n").is_err()
    );
}

#[test]
fn redis_tls_settings_are_checked_at_start() {
    let dir = std::env::temp_dir().join(format!("sb-tls-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("x.pem");
    std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let pem = pem.to_str().unwrap();
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let resolve = |args: &[&str]| Settings::resolve(cli(args), FileSettings::default());
    let refused = |args: &[&str], setting: &str| {
        let err = resolve(args).unwrap_err().to_string();
        assert!(err.contains(setting), "{args:?}: {err}");
    };
    let tls_url = ["--redis-url", "rediss://redis.example:6380"];
    // Certificates need a rediss:// URL, a certificate its key, files that exist.
    refused(
        &["--redis-url", "redis://r:6379", "--redis-tls-ca-file", pem],
        "redis_tls_ca_file",
    );
    refused(
        &["--redis-tls-cert-file", pem, "--redis-tls-key-file", pem],
        "redis_tls_cert_file",
    );
    refused(
        &[&tls_url[..], &["--redis-tls-cert-file", pem]].concat(),
        "redis_tls_key_file",
    );
    refused(
        &[&tls_url[..], &["--redis-tls-key-file", pem]].concat(),
        "redis_tls_cert_file",
    );
    refused(
        &[&tls_url[..], &["--redis-tls-ca-file", missing]].concat(),
        "redis_tls_ca_file",
    );
    // No certificate check is not an option.
    refused(
        &["--redis-url", "rediss://redis.example:6380/#insecure"],
        "redis_url",
    );
    let s = resolve(
        &[
            &tls_url[..],
            &[
                "--redis-tls-ca-file",
                pem,
                "--redis-tls-cert-file",
                pem,
                "--redis-tls-key-file",
                pem,
            ],
        ]
        .concat(),
    )
    .unwrap();
    assert!(s.redis_tls.ca.is_some() && s.redis_tls.client.is_some());
    // The key's bytes never reach a log line.
    assert!(!format!("{s:?}").contains("BEGIN"));
    let plain = resolve(&tls_url).unwrap();
    assert_eq!(plain.redis_tls, crate::config::RedisTls::default());
}

/// A Sentinel or Cluster URL is checked at start, and makes publishes wait
/// for a replica unless told otherwise; TLS comes from its scheme.
#[test]
fn sentinel_and_cluster_urls_wait_for_a_replica() {
    let resolve = |args: &[&str]| Settings::resolve(cli(args), FileSettings::default());
    let waits = |url: &str| resolve(&["--redis-url", url]).unwrap().redis_wait_replicas;
    assert_eq!(waits("redis://r:6379"), 0);
    assert_eq!(waits("redis+sentinel://s1:26379,s2:26379/main"), 1);
    assert_eq!(waits("redis+cluster://n1:7000,n2:7001"), 1);
    let told = resolve(&[
        "--redis-url",
        "redis+cluster://n1:7000",
        "--redis-wait-replicas",
        "0",
    ])
    .unwrap();
    assert_eq!(told.redis_wait_replicas, 0);
    for bad in [
        "redis+cluster://n1",
        "redis+cluster://n1:7000/2",
        "redis+sentinel://s1:1",
    ] {
        let err = resolve(&["--redis-url", bad]).unwrap_err().to_string();
        assert!(err.contains("`redis_url`"), "{bad}: {err}");
    }
    // Certificates go with a TLS cluster URL, not a plain one.
    let dir = std::env::temp_dir().join(format!("sb-cluster-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let pem = pem.to_str().unwrap();
    assert!(resolve(&[
        "--redis-url",
        "rediss+cluster://n1:7000",
        "--redis-tls-ca-file",
        pem
    ])
    .is_ok());
    let err = resolve(&[
        "--redis-url",
        "redis+cluster://n1:7000",
        "--redis-tls-ca-file",
        pem,
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("redis_tls_ca_file"), "{err}");
}
