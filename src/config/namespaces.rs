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
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
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
