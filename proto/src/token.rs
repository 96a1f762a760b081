//! JSON Web Tokens shared by signaling (which mints them) and the SFU and
//! moderator API (which verify them). HS256 only, algorithm pinned, `exp`
//! and `aud` always checked.

use crate::{DeviceId, NodeId, ParticipantId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Audience of a visitor's session token (signaling WebSocket and REST).
pub const AUD_SESSION: &str = "duet-session";
/// Audience of a token for one SFU node's client WebSocket.
pub const AUD_SFU: &str = "duet-sfu";
/// Audience of a moderator's token (admin API only).
pub const AUD_MODERATOR: &str = "duet-moderator";

/// Minimum length of an HMAC secret used to sign tokens.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token malformed")]
    Malformed,
    #[error("could not sign token")]
    Sign,
}

/// Claims of a visitor's session token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Session id.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub device: DeviceId,
    /// The participant id this visit has on its SFU node.
    pub participant: ParticipantId,
    /// The SFU node the visit was placed on.
    pub node: NodeId,
    /// When (unix seconds) the visitor solved a challenge for this session, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha_at: Option<u64>,
    /// Where the visit's trace began (W3C `traceparent`), so that every
    /// process that sees this token adds its spans to the visit's trace.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::trace::lenient"
    )]
    pub tp: Option<crate::trace::TraceParent>,
}

/// What a participant may do on an SFU node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SfuRole {
    /// A visitor: publishes audio and video, receives its partner's.
    User,
    /// A moderator watching a pairing: hidden, receive-only.
    Watcher,
}

/// Claims of a token for the SFU client WebSocket (`/sfu/ws?token=…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SfuClaims {
    pub sub: ParticipantId,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// The node this token is valid for; other nodes refuse it.
    pub node: NodeId,
    pub role: SfuRole,
    /// Where the visit's trace began (W3C `traceparent`), so that every
    /// process that sees this token adds its spans to the visit's trace.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::trace::lenient"
    )]
    pub tp: Option<crate::trace::TraceParent>,
}

/// Moderator roles, from least to most privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeratorRole {
    Moderator,
    Senior,
    Admin,
}

/// Claims of a moderator's token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeratorClaims {
    /// Moderator id.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub role: ModeratorRole,
    /// Token id, so a logout can revoke it.
    pub jti: String,
}

/// Claims carry their audience so one key can verify them generically.
pub trait Audience {
    const AUDIENCE: &'static str;
}
impl Audience for SessionClaims {
    const AUDIENCE: &'static str = AUD_SESSION;
}
impl Audience for SfuClaims {
    const AUDIENCE: &'static str = AUD_SFU;
}
impl Audience for ModeratorClaims {
    const AUDIENCE: &'static str = AUD_MODERATOR;
}

/// An HS256 key that signs and verifies tokens.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Signs `claims`.
    pub fn mint<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Sign)
    }

    /// Verifies signature, algorithm (HS256 only), expiry and audience.
    pub fn verify<C: DeserializeOwned + Audience>(&self, token: &str) -> Result<C, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[C::AUDIENCE]);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "aud"]);
        jsonwebtoken::decode::<C>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
                    _ => TokenError::Malformed,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sfu_claims(exp: u64) -> SfuClaims {
        SfuClaims {
            sub: ParticipantId::new("p"),
            aud: AUD_SFU.into(),
            exp,
            iat: 0,
            node: NodeId::new("n1"),
            role: SfuRole::User,
            tp: None,
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn valid_token_round_trips() {
        let key = TokenKey::new(b"0123456789abcdef0123");
        let t = key.mint(&sfu_claims(now() + 60)).unwrap();
        assert_eq!(key.verify::<SfuClaims>(&t).unwrap().node, NodeId::new("n1"));
    }

    #[test]
    fn expired_forged_and_wrong_audience_tokens_are_refused() {
        let key = TokenKey::new(b"0123456789abcdef0123");
        let expired = key.mint(&sfu_claims(now() - 600)).unwrap();
        assert_eq!(key.verify::<SfuClaims>(&expired), Err(TokenError::Expired));
        let forged = TokenKey::new(b"another-secret-xxxxxx")
            .mint(&sfu_claims(now() + 60))
            .unwrap();
        assert_eq!(key.verify::<SfuClaims>(&forged), Err(TokenError::BadSignature));
        let mut wrong = sfu_claims(now() + 60);
        wrong.aud = AUD_SESSION.into();
        let wrong = key.mint(&wrong).unwrap();
        assert_eq!(key.verify::<SfuClaims>(&wrong), Err(TokenError::WrongAudience));
        assert_eq!(key.verify::<SfuClaims>("not.a.jwt"), Err(TokenError::Malformed));
    }

    #[test]
    fn alg_none_is_refused() {
        let key = TokenKey::new(b"0123456789abcdef0123");
        // header {"alg":"none","typ":"JWT"}
        let body = serde_json::to_vec(&sfu_claims(now() + 60)).unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(body)
        );
        assert!(key.verify::<SfuClaims>(&token).is_err());
    }
}
