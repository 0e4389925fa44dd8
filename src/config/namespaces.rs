//! Channel namespaces: the options a namespace's channels get, and which
//! namespace a channel name belongs to. Also the origin allow-list, the
//! other per-request lookup in the settings.

use serde::Deserialize;

use super::Settings;

/// A channel namespace: channels named `name:rest` belong to it. Channels
/// without a colon belong to the default namespace, which always exists; a
/// channel whose namespace is not configured is refused as `unknown_channel`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(flatten)]
    pub options: NamespaceOptions,
}

/// What a namespace's channels offer beyond publish/subscribe.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
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
    /// Messages kept per channel for `history` and recovery (0: none).
    #[serde(default)]
    pub history_size: usize,
    /// How long a channel's history lives after its last publish, in ms.
    #[serde(default = "default_history_ttl_ms")]
    pub history_ttl_ms: u64,
}

/// Most messages one channel may keep (`history_size`).
pub const MAX_HISTORY_SIZE: usize = 100_000;

/// Five minutes: long enough for a reconnect after a deploy or a network
/// change, short enough that idle channels do not keep memory for long.
pub const DEFAULT_HISTORY_TTL_MS: u64 = 300_000;

fn default_history_ttl_ms() -> u64 {
    DEFAULT_HISTORY_TTL_MS
}

impl NamespaceOptions {
    /// The options of a namespace nobody configured: everything off.
    pub const OFF: NamespaceOptions = NamespaceOptions {
        presence: false,
        join_leave: false,
        subscribe: Rule::Any,
        publish: Rule::Any,
        presence_for: Rule::Any,
        history_size: 0,
        history_ttl_ms: DEFAULT_HISTORY_TTL_MS,
    };

    /// How much history the channels keep, if any.
    pub fn history(&self) -> Option<HistoryLimits> {
        (self.history_size > 0).then(|| HistoryLimits {
            size: self.history_size,
            ttl: std::time::Duration::from_millis(self.history_ttl_ms),
        })
    }
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions::OFF
    }
}

/// The namespaces a node has when its settings list none: one per use the
/// gateway is built for, so the demo at `/` and the examples in
/// docs/protocol.md work on a node started with no settings at all. A
/// settings file with a `namespaces` list (even an empty one) replaces them.
///
/// * `chat`: rooms. Presence and join/leave; only a room's subscribers post
///   to it or read who is there; the last 100 messages are kept for 10
///   minutes, so a reconnecting page catches up.
/// * `files`: file-sync notifications, published by the backend through
///   the server API; 1000 kept for an hour, so a laptop that slept resumes.
/// * `tasks`: task push, published by the backend; 1000 kept for an hour.
pub fn builtin_namespaces() -> Vec<Namespace> {
    let chat = NamespaceOptions {
        presence: true,
        join_leave: true,
        subscribe: Rule::Any,
        publish: Rule::Subscribers,
        presence_for: Rule::Subscribers,
        history_size: 100,
        history_ttl_ms: 600_000,
    };
    let pushed = NamespaceOptions {
        publish: Rule::Server,
        history_size: 1000,
        history_ttl_ms: 3_600_000,
        ..NamespaceOptions::OFF
    };
    [("chat", chat), ("files", pushed.clone()), ("tasks", pushed)]
        .into_iter()
        .map(|(name, options)| Namespace {
            name: name.into(),
            options,
        })
        .collect()
}

/// A namespace's history bounds: at most `size` messages per channel, and
/// the whole history dropped `ttl` after the channel's last publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub size: usize,
    pub ttl: std::time::Duration,
}

/// Who may do something on a namespace's channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
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

impl Settings {
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
