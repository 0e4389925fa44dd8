//! Client authentication: JSON Web Tokens checked at the handshake (and on
//! `refresh`), before any WebSocket traffic.
//!
//! Keys: an HS256 secret, a PEM public key (RSA → RS256, EC P-256 → ES256),
//! or a JWKS file whose keys are chosen by the token's `kid`. Keys are
//! loaded once at start, so a bad file stops the node with the setting's
//! name instead of failing every handshake later. `exp` and `sub` are
//! required; `aud` and `iss` are checked when configured. No leeway on
//! `exp`: the token's expiry is when the connection closes
//! (`token_expired`) unless it is refreshed. A token whose `nbf` lies more
//! than [`NBF_LEEWAY`] in the future is refused: that much clock skew
//! between the issuer and the node is tolerated, no more.
//!
//! Refusals carry a short code for the client ([`AuthError::code`]); the
//! parser's detail (`Display`) is for the node's log only.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{JwtKey, JwtSettings};
use crate::ids::UserId;

/// How far in the future a token's `nbf` may lie (issuer clock skew).
pub const NBF_LEEWAY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid before {0} (unix seconds)")]
    NotYetValid(u64),
    #[error("token has no key we know (kid {0:?})")]
    UnknownKey(Option<String>),
}

impl AuthError {
    /// The documented code a client sees (docs/protocol.md).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Expired => "expired_token",
            AuthError::NotYetValid(_) => "token_not_yet_valid",
            AuthError::UnknownKey(_) => "unknown_key",
        }
    }

    /// What a client is told: no parser internals, which help attackers
    /// more than clients.
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::Invalid(_) => "the token is not valid",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid(_) => "the token is not valid yet (nbf)",
            AuthError::UnknownKey(_) => "the token names no key this node knows",
        }
    }
}

fn from_jwt(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid(e.to_string()),
    }
}

/// Who a connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// When its token stops being valid (None: anonymous, no expiry).
    pub expires: Option<SystemTime>,
    pub access: Access,
}

/// What a connection's credentials allow, for the namespace rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Came with a verified token (not anonymous).
    pub authenticated: bool,
    /// The token's `channels` claim: channel names, or `prefix*` patterns.
    pub channels: Option<Arc<[String]>>,
}

impl Access {
    pub fn claim_allows(&self, channel: &str) -> bool {
        self.channels.as_deref().is_some_and(|allowed| {
            allowed.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => a == channel,
            })
        })
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

enum Keys {
    Single { key: DecodingKey, alg: Algorithm },
    Jwks(JwkSet),
}

pub struct Verifier {
    keys: Keys,
    audience: Option<String>,
    issuer: Option<String>,
}

fn setting_error(name: &'static str, reason: String) -> crate::config::ConfigError {
    crate::config::ConfigError::Invalid { name, reason }
}

impl Verifier {
    /// Load the configured key, or say which setting is wrong.
    pub fn load(settings: &JwtSettings) -> Result<Verifier, crate::config::ConfigError> {
        let keys = match &settings.key {
            JwtKey::HmacSecret(secret) => Keys::Single {
                key: DecodingKey::from_secret(secret.as_bytes()),
                alg: Algorithm::HS256,
            },
            JwtKey::PublicKeyFile(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    setting_error("jwt_public_key_file", format!("{}: {e}", path.display()))
                })?;
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => Keys::Single {
                        key,
                        alg: Algorithm::RS256,
                    },
                    Err(_) => Keys::Single {
                        key: DecodingKey::from_ec_pem(&pem).map_err(|e| {
                            setting_error(
                                "jwt_public_key_file",
                                format!("{}: not an RSA or EC public key ({e})", path.display()),
                            )
                        })?,
                        alg: Algorithm::ES256,
                    },
                }
            }
            JwtKey::JwksFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    setting_error("jwt_jwks_file", format!("{}: {e}", path.display()))
                })?;
                let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                    setting_error("jwt_jwks_file", format!("{}: {e}", path.display()))
                })?;
                if set.keys.is_empty() {
                    return Err(setting_error(
                        "jwt_jwks_file",
                        format!("{}: no keys", path.display()),
                    ));
                }
                Keys::Jwks(set)
            }
        };
        Ok(Verifier {
            keys,
            audience: settings.audience.clone(),
            issuer: settings.issuer.clone(),
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        v
    }

    /// Check a token's signature and claims; the user is its `sub`.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let invalid = from_jwt;
        let claims = match &self.keys {
            Keys::Single { key, alg } => {
                decode::<Claims>(token, key, &self.validation(*alg)).map_err(invalid)?
            }
            Keys::Jwks(set) => {
                let header = decode_header(token).map_err(invalid)?;
                let jwk = header
                    .kid
                    .as_deref()
                    .and_then(|kid| set.find(kid))
                    .ok_or_else(|| AuthError::UnknownKey(header.kid.clone()))?;
                // Only asymmetric algorithms come from a JWKS.
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(AuthError::Invalid(format!(
                        "algorithm {:?} is not accepted",
                        header.alg
                    )));
                }
                let key = DecodingKey::from_jwk(jwk).map_err(invalid)?;
                decode::<Claims>(token, &key, &self.validation(header.alg)).map_err(invalid)?
            }
        }
        .claims;
        let user = UserId::parse(claims.sub.as_str())
            .map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        if let Some(nbf) = claims.nbf {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            if Duration::from_secs(nbf) > now + NBF_LEEWAY {
                return Err(AuthError::NotYetValid(nbf));
            }
        }
        Ok(Identity {
            user,
            expires: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
            access: Access {
                authenticated: true,
                channels: claims.channels.map(Into::into),
            },
        })
    }
}

/// `refresh {token}`: the new token's identity, if it verifies and is for
/// the same `user`; otherwise the message to answer with (`bad_token`).
pub fn refreshed(verifier: Option<&Verifier>, token: &str, user: &str) -> Result<Identity, String> {
    let Some(verifier) = verifier else {
        return Err("token authentication is not configured on this node".to_owned());
    };
    match verifier.verify(token) {
        Err(e) => {
            tracing::info!(error = %e, "refresh refused");
            Err(format!("{}: {}", e.code(), e.public_message()))
        }
        Ok(identity) if *identity.user != *user => Err(format!(
            "the token is for {:?}, not {user:?}",
            identity.user
        )),
        Ok(identity) => Ok(identity),
    }
}
