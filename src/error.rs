//! Why a gateway operation failed, as a typed error that keeps its cause
//! (a backend's error stays the `source`, for logs), and the one mapping
//! from it to the wire's [`ErrorBody`]: the `code` a client or API caller
//! matches on, and the message it reads. The API maps that code to an HTTP
//! status in one place too (`api`).

use crate::broker::BrokerError;
use crate::hub::HubError;
use crate::ids::{ChannelName, NameError};
use crate::permissions::Action;
use crate::presence::PresenceError;
use crate::protocol::{ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    BadName(#[from] NameError),
    #[error("channel {0:?} is in a namespace this gateway does not define")]
    UnknownChannel(ChannelName),
    #[error("a connection may subscribe to at most {0} channels")]
    TooManySubscriptions(usize),
    #[error(transparent)]
    Subscription(#[from] HubError),
    #[error("not allowed to {} on {channel:?}: {why}", .action.verb())]
    Forbidden {
        action: Action,
        channel: ChannelName,
        why: &'static str,
    },
    #[error("presence is not enabled for the namespace of {0:?}")]
    PresenceNotEnabled(ChannelName),
    #[error("history is not enabled for the namespace of {0:?} (set history_size)")]
    HistoryNotEnabled(ChannelName),
    #[error("the position is from another epoch of {0:?}: its history was reset; read it without `since`")]
    UnrecoverablePosition(ChannelName),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

impl Error {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BadName(NameError::Channel) => ErrorCode::BadChannel,
            Error::BadName(NameError::User) => ErrorCode::BadUser,
            Error::UnknownChannel(_) => ErrorCode::UnknownChannel,
            Error::TooManySubscriptions(_) => ErrorCode::LimitExceeded,
            Error::Subscription(HubError::AlreadySubscribed) => ErrorCode::AlreadySubscribed,
            Error::Subscription(HubError::NotSubscribed) => ErrorCode::NotSubscribed,
            Error::Subscription(HubError::UnknownConn) => ErrorCode::Internal,
            Error::Forbidden { .. } => ErrorCode::Forbidden,
            Error::PresenceNotEnabled(_) | Error::HistoryNotEnabled(_) => ErrorCode::NotEnabled,
            Error::UnrecoverablePosition(_) => ErrorCode::UnrecoverablePosition,
            // Clients and callers see one code for any backend trouble: the
            // message says which, the source stays in the logs.
            Error::Broker(_) | Error::Presence(_) => ErrorCode::BrokerUnavailable,
        }
    }
}

impl From<Error> for ErrorBody {
    fn from(e: Error) -> ErrorBody {
        ErrorBody::new(e.code(), e.to_string())
    }
}

impl From<NameError> for ErrorBody {
    fn from(e: NameError) -> ErrorBody {
        Error::BadName(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_wire_code_and_message() {
        let chat = ChannelName::parse("chat:1").unwrap();
        let cases: Vec<(Error, ErrorCode, &str)> = vec![
            (
                NameError::Channel.into(),
                ErrorCode::BadChannel,
                "channel must be",
            ),
            (NameError::User.into(), ErrorCode::BadUser, "user must be"),
            (
                Error::UnknownChannel(chat.clone()),
                ErrorCode::UnknownChannel,
                "channel \"chat:1\" is in a namespace this gateway does not define",
            ),
            (
                Error::TooManySubscriptions(3),
                ErrorCode::LimitExceeded,
                "at most 3 channels",
            ),
            (
                HubError::AlreadySubscribed.into(),
                ErrorCode::AlreadySubscribed,
                "already subscribed",
            ),
            (
                HubError::NotSubscribed.into(),
                ErrorCode::NotSubscribed,
                "not subscribed",
            ),
            (
                Error::Forbidden {
                    action: Action::Presence,
                    channel: chat.clone(),
                    why: "subscribe first",
                },
                ErrorCode::Forbidden,
                "not allowed to read presence on \"chat:1\": subscribe first",
            ),
            (
                Error::PresenceNotEnabled(chat),
                ErrorCode::NotEnabled,
                "presence is not enabled",
            ),
            (
                BrokerError::NotResubscribed.into(),
                ErrorCode::BrokerUnavailable,
                "broker unavailable",
            ),
            (
                PresenceError::Timeout(std::time::Duration::from_secs(2)).into(),
                ErrorCode::BrokerUnavailable,
                "presence store timed out",
            ),
        ];
        for (error, code, message) in cases {
            let body = ErrorBody::from(error);
            assert_eq!(body.code, code, "{}", body.message);
            assert!(
                body.message.contains(message),
                "{:?} lacks {message:?}",
                body.message
            );
        }
    }
}
