//! Long-term credentials from TURN REST secrets, and stateless nonces.
//!
//! * Username `expiry_unix:id`, password `base64(HMAC-SHA1(secret, username))`
//!   ([`proto::turn_cred`]); any configured secret is accepted (rotation).
//! * Key = `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2).
//! * Nonce = `hex(issued_unix) || hex(HMAC-SHA256(server_key, issued || client_ip)[..12])`:
//!   nothing is stored per client; a nonce older than the TTL is stale (438),
//!   one whose MAC does not verify (forged, other server, other client IP) is
//!   rejected (401).

use std::fmt::Write as _;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stun::integrity::MessageIntegrity;

const NONCE_MAC_LEN: usize = 12;
/// Length of the nonces we issue.
pub const NONCE_LEN: usize = 16 + 2 * NONCE_MAC_LEN;
/// Tolerated clock skew for nonces from the future (seconds).
const FUTURE_SKEW: u64 = 5;

/// Issues and checks stateless nonces.
#[derive(Clone)]
pub struct NonceKey {
    key: [u8; 32],
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Authentic but older than the TTL: answer 438 with a fresh one.
    Stale,
    /// Not one of ours (or for another client address): answer 401.
    Invalid,
}

impl NonceKey {
    pub fn new(key: [u8; 32]) -> Self {
        NonceKey { key }
    }

    fn mac(&self, issued: u64, ip: IpAddr) -> [u8; NONCE_MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(&issued.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; NONCE_MAC_LEN];
        out.copy_from_slice(&full[..NONCE_MAC_LEN]);
        out
    }

    /// A nonce for `client_ip` issued at `now_unix`.
    pub fn issue(&self, client_ip: IpAddr, now_unix: u64) -> String {
        let mut s = String::with_capacity(NONCE_LEN);
        let _ = write!(s, "{now_unix:016x}");
        for b in self.mac(now_unix, client_ip) {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Checks a nonce received from `client_ip`.
    pub fn check(
        &self,
        nonce: &str,
        client_ip: IpAddr,
        now_unix: u64,
        ttl_secs: u64,
    ) -> Result<(), NonceError> {
        if nonce.len() != NONCE_LEN || !nonce.is_ascii() {
            return Err(NonceError::Invalid);
        }
        let issued = u64::from_str_radix(&nonce[..16], 16).map_err(|_| NonceError::Invalid)?;
        let mut got = [0u8; NONCE_MAC_LEN];
        for (i, g) in got.iter_mut().enumerate() {
            let h = nonce.get(16 + 2 * i..18 + 2 * i).ok_or(NonceError::Invalid)?;
            *g = u8::from_str_radix(h, 16).map_err(|_| NonceError::Invalid)?;
        }
        let expected = self.mac(issued, client_ip);
        // Constant-time enough: fold XOR over fixed-size arrays.
        let diff = got
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(NonceError::Invalid);
        }
        if issued > now_unix.saturating_add(FUTURE_SKEW) {
            return Err(NonceError::Invalid);
        }
        if now_unix.saturating_sub(issued) > ttl_secs {
            return Err(NonceError::Stale);
        }
        Ok(())
    }
}

/// Long-term credential key `MD5(username:realm:password)`.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    MessageIntegrity::new_long_term_integrity(username.to_string(), realm.to_string(), password.to_string()).0
}

/// The candidate keys for `username`: one per configured secret.
pub fn rest_keys<'a>(
    secrets: &'a [Vec<u8>],
    username: &'a str,
    realm: &'a str,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    secrets
        .iter()
        .map(move |s| long_term_key(username, realm, &proto::turn_cred::password_for(s, username)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fresh_nonce_verifies_and_old_one_is_stale() {
        let k = NonceKey::new([1; 32]);
        let n = k.issue(ip("192.0.2.1"), 1000);
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(k.check(&n, ip("192.0.2.1"), 1000, 600), Ok(()));
        assert_eq!(k.check(&n, ip("192.0.2.1"), 1600, 600), Ok(()));
        assert_eq!(k.check(&n, ip("192.0.2.1"), 1601, 600), Err(NonceError::Stale));
    }

    #[test]
    fn forged_or_foreign_nonces_are_invalid() {
        let k = NonceKey::new([1; 32]);
        let n = k.issue(ip("192.0.2.1"), 1000);
        assert_eq!(k.check(&n, ip("192.0.2.2"), 1000, 600), Err(NonceError::Invalid));
        assert_eq!(
            NonceKey::new([2; 32]).check(&n, ip("192.0.2.1"), 1000, 600),
            Err(NonceError::Invalid)
        );
        let mut forged = n.clone().into_bytes();
        forged[20] = if forged[20] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            k.check(&forged, ip("192.0.2.1"), 1000, 600),
            Err(NonceError::Invalid)
        );
        assert_eq!(
            k.check("short", ip("192.0.2.1"), 1000, 600),
            Err(NonceError::Invalid)
        );
        assert_eq!(
            k.check(&"é".repeat(20), ip("192.0.2.1"), 1000, 600),
            Err(NonceError::Invalid)
        );
        // Issued in the future beyond skew.
        let future = k.issue(ip("192.0.2.1"), 2000);
        assert_eq!(
            k.check(&future, ip("192.0.2.1"), 1000, 600),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn every_secret_gives_a_key() {
        let secrets = vec![b"old".to_vec(), b"new".to_vec()];
        let keys: Vec<_> = rest_keys(&secrets, "10:a", "r").collect();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
        assert_eq!(
            keys[1],
            long_term_key("10:a", "r", &proto::turn_cred::password_for(b"new", "10:a"))
        );
    }
}
