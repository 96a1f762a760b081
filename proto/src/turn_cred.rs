//! TURN REST credentials (draft-uberti-behave-turn-rest, as coturn's
//! `use-auth-secret` does it): username `expiry_unix:id`, password
//! `base64(HMAC-SHA1(secret, username))`. Signaling mints them; the TURN
//! relay verifies them with any of its current secrets (rotation).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// A username/password pair for a TURN server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TurnCredError {
    #[error("username is not `expiry:id`")]
    Malformed,
    #[error("credential expired")]
    Expired,
}

/// The password for `username` under `secret`.
pub fn password_for(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC-SHA1 accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints a credential for `id` valid until `expiry_unix`.
pub fn mint(secret: &[u8], id: &str, expiry_unix: u64) -> TurnCredential {
    let username = format!("{expiry_unix}:{id}");
    let password = password_for(secret, &username);
    TurnCredential { username, password }
}

/// Parses a REST username into `(expiry_unix, id)`.
pub fn parse_username(username: &str) -> Result<(u64, &str), TurnCredError> {
    let (expiry, id) = username.split_once(':').ok_or(TurnCredError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| TurnCredError::Malformed)?;
    if id.is_empty() || id.len() > 128 {
        return Err(TurnCredError::Malformed);
    }
    Ok((expiry, id))
}

/// Checks a username's expiry against `now_unix`. The password check is
/// done by MESSAGE-INTEGRITY, for which the TURN server derives the key from
/// [`password_for`].
pub fn check_expiry(username: &str, now_unix: u64) -> Result<(), TurnCredError> {
    let (expiry, _) = parse_username(username)?;
    if expiry < now_unix {
        return Err(TurnCredError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_coturn_rest_convention() {
        // echo -n "1700000000:alice" | openssl dgst -sha1 -hmac "secret" -binary | base64
        let c = mint(b"secret", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        // Known answer computed with openssl (see the comment above).
        assert_eq!(c.password, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        assert_ne!(c.password, password_for(b"other", "1700000000:alice"));
    }

    #[test]
    fn expiry_and_shape_are_checked() {
        assert_eq!(check_expiry("100:x", 50), Ok(()));
        assert_eq!(check_expiry("100:x", 101), Err(TurnCredError::Expired));
        assert_eq!(check_expiry("nocolon", 0), Err(TurnCredError::Malformed));
        assert_eq!(check_expiry("abc:x", 0), Err(TurnCredError::Malformed));
        assert_eq!(check_expiry("100:", 0), Err(TurnCredError::Malformed));
    }
}
