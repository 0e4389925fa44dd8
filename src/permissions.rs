//! Who may do what on a channel, as pure functions of their inputs: the
//! namespace's rule for the action, and the personal-channel rule —
//! `user:ID[:...]` belongs to user ID alone, whatever the namespace's rules.
//! Everything about `user:` channels lives here: their owner check and the
//! options of the `user` namespace when none is configured.
//! `Gateway::authorize` supplies the inputs; the tests are a table.

use crate::auth::Access;
use crate::config::{NamespaceOptions, Rule};

/// What a connection asks to do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
    Presence,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::Presence => "read presence",
        }
    }
}

/// The `user` namespace when the settings do not configure one: anyone may
/// act on their own personal channels, no presence or join/leave events.
pub static PERSONAL_NAMESPACE: NamespaceOptions = NamespaceOptions::OFF;

/// The owner of a personal channel `user:ID[:...]`, if it is one.
pub fn personal_owner(channel: &str) -> Option<&str> {
    let rest = channel.strip_prefix("user:")?;
    Some(rest.split(':').next().unwrap_or_default())
}

/// What the asking connection is: its user, its token's grants, and
/// whether it is subscribed to the channel (asked only if a rule needs it).
pub struct Asker<'a, F: FnOnce() -> bool> {
    pub user: &'a str,
    pub access: &'a Access,
    pub subscribed: F,
}

/// May `asker` do `action` on `channel` of namespace `ns`? `Err` says why not.
pub fn check<F: FnOnce() -> bool>(
    ns: &NamespaceOptions,
    channel: &str,
    action: Action,
    asker: Asker<'_, F>,
) -> Result<(), &'static str> {
    if personal_owner(channel).is_some_and(|owner| owner != asker.user) {
        return Err("a personal channel is for its owner only");
    }
    let rule = match action {
        Action::Subscribe => ns.subscribe,
        Action::Publish => ns.publish,
        Action::Presence => ns.presence_for,
    };
    match rule {
        Rule::Any => Ok(()),
        Rule::Token if asker.access.authenticated => Ok(()),
        Rule::Token => Err("a token is required"),
        Rule::Claim if asker.access.claim_allows(channel) => Ok(()),
        Rule::Claim => Err("the token's `channels` claim does not list it"),
        Rule::Subscribers if action == Action::Subscribe => Ok(()),
        Rule::Subscribers if (asker.subscribed)() => Ok(()),
        Rule::Subscribers => Err("subscribe first"),
        Rule::Server => Err("only the server API may"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ns(rule: Rule) -> NamespaceOptions {
        NamespaceOptions {
            subscribe: rule,
            publish: rule,
            presence_for: rule,
            ..NamespaceOptions::default()
        }
    }

    #[test]
    fn rules_by_action_and_access() {
        let anonymous = Access::default();
        let token = Access {
            authenticated: true,
            channels: None,
        };
        let claims = Access {
            authenticated: true,
            channels: Some(Arc::from(vec!["chat:team-*".to_owned()])),
        };
        use Action::*;
        use Rule::*;
        // (rule, action, access, subscribed, channel, allowed)
        let table: &[(Rule, Action, &Access, bool, &str, bool)] = &[
            (Any, Subscribe, &anonymous, false, "chat:a", true),
            (Any, Publish, &anonymous, false, "chat:a", true),
            (Token, Subscribe, &anonymous, false, "chat:a", false),
            (Token, Subscribe, &token, false, "chat:a", true),
            (Claim, Subscribe, &token, false, "chat:team-1", false),
            (Claim, Subscribe, &claims, false, "chat:team-1", true),
            (Claim, Publish, &claims, false, "chat:other", false),
            (Subscribers, Subscribe, &anonymous, false, "chat:a", true),
            (Subscribers, Publish, &anonymous, false, "chat:a", false),
            (Subscribers, Publish, &anonymous, true, "chat:a", true),
            (Subscribers, Presence, &anonymous, true, "chat:a", true),
            (Server, Publish, &token, true, "chat:a", false),
            (Server, Subscribe, &token, false, "chat:a", false),
            // Personal channels: the owner alone, whatever the rule.
            (Any, Subscribe, &anonymous, false, "user:ann", true),
            (Any, Subscribe, &anonymous, false, "user:ann:inbox", true),
            (Any, Subscribe, &anonymous, false, "user:bob", false),
            (Any, Publish, &token, true, "user:bob:inbox", false),
            (Token, Subscribe, &anonymous, false, "user:ann", false),
        ];
        for &(rule, action, access, subscribed, channel, allowed) in table {
            let asker = Asker {
                user: "ann",
                access,
                subscribed: || subscribed,
            };
            let got = check(&ns(rule), channel, action, asker);
            assert_eq!(
                got.is_ok(),
                allowed,
                "{rule:?} {action:?} {channel} subscribed={subscribed}: {got:?}"
            );
        }
    }

    #[test]
    fn personal_owner_is_the_first_segment() {
        assert_eq!(personal_owner("user:ann"), Some("ann"));
        assert_eq!(personal_owner("user:ann:x:y"), Some("ann"));
        assert_eq!(personal_owner("users:ann"), None);
        assert_eq!(personal_owner("chat:user:ann"), None);
    }
}
