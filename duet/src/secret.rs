//! Secrets: given by flag, env or config file, or generated per run. Their
//! values are never logged or printed.

use base64::Engine;
use rand::RngCore;
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// A random 32-byte secret (base64url).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The given secret, or a generated one (logged as generated, never its value).
    pub fn or_generate(given: Option<Secret>, name: &str) -> Secret {
        given.unwrap_or_else(|| {
            tracing::info!(secret = name, "no secret given: generated one for this run");
            Secret::generate()
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < proto::token::MIN_SECRET_LEN {
            return Err(format!(
                "must be at least {} characters",
                proto::token::MIN_SECRET_LEN
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s: Secret = "a-very-secret-value-123".parse().unwrap();
        assert!(!format!("{s:?}").contains("very"));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!("short".parse::<Secret>().is_err());
    }

    #[test]
    fn generated_secrets_differ() {
        assert_ne!(Secret::generate(), Secret::generate());
    }
}
