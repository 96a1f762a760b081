//! Checking a challenge token with the provider: the `siteverify` protocol
//! that Cloudflare Turnstile and hCaptcha share (a form POST of `secret`,
//! `response` and optionally `remoteip`; a JSON answer with `success` and
//! `error-codes`). Other verifiers plug in through [`Verifier`].

use std::net::IpAddr;
use std::time::Duration;

/// What the provider said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Solved,
    /// Not solved, expired, reused or for another site; the provider's error codes.
    Rejected(Vec<String>),
}

/// The provider could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verifier timed out")]
    Timeout,
    #[error("verifier unreachable: {0}")]
    Unreachable(String),
    #[error("verifier answered HTTP {0}")]
    Status(u16),
    #[error("verifier answer is not siteverify JSON: {0}")]
    BadAnswer(String),
}

/// Checks challenge tokens.
#[async_trait::async_trait]
pub trait Verifier: Send + Sync {
    async fn verify(&self, token: &str, remote_ip: Option<IpAddr>) -> Result<Verdict, VerifyError>;
}

/// A `siteverify` endpoint (Turnstile, hCaptcha, or a compatible one).
pub struct SiteVerify {
    client: reqwest::Client,
    url: String,
    secret: String,
}

#[derive(serde::Deserialize)]
struct Answer {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

impl SiteVerify {
    pub fn new(url: String, secret: String, timeout: Duration) -> Result<Self, VerifyError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| VerifyError::Unreachable(e.to_string()))?;
        Ok(Self { client, url, secret })
    }
}

/// Parses a siteverify answer body.
pub fn parse_answer(body: &[u8]) -> Result<Verdict, VerifyError> {
    let a: Answer = serde_json::from_slice(body).map_err(|e| VerifyError::BadAnswer(e.to_string()))?;
    Ok(if a.success {
        Verdict::Solved
    } else {
        Verdict::Rejected(a.error_codes.into_iter().take(8).collect())
    })
}

#[async_trait::async_trait]
impl Verifier for SiteVerify {
    async fn verify(&self, token: &str, remote_ip: Option<IpAddr>) -> Result<Verdict, VerifyError> {
        let ip = remote_ip.map(|i| i.to_string());
        let mut form = vec![("secret", self.secret.as_str()), ("response", token)];
        if let Some(ip) = ip.as_deref() {
            form.push(("remoteip", ip));
        }
        let resp = self
            .client
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    VerifyError::Timeout
                } else {
                    VerifyError::Unreachable(e.to_string())
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(VerifyError::Status(status.as_u16()));
        }
        let bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                VerifyError::Timeout
            } else {
                VerifyError::Unreachable(e.to_string())
            }
        })?;
        if bytes.len() > 64 * 1024 {
            return Err(VerifyError::BadAnswer("answer larger than 64 KiB".into()));
        }
        parse_answer(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successful_answer_is_solved() {
        assert_eq!(
            parse_answer(br#"{"success":true,"challenge_ts":"2026-01-01T00:00:00Z","hostname":"x"}"#)
                .unwrap(),
            Verdict::Solved
        );
    }

    #[test]
    fn a_failed_answer_carries_the_error_codes() {
        assert_eq!(
            parse_answer(br#"{"success":false,"error-codes":["invalid-input-response"]}"#).unwrap(),
            Verdict::Rejected(vec!["invalid-input-response".into()])
        );
    }

    #[test]
    fn an_answer_without_success_is_an_error_not_a_verdict() {
        assert!(matches!(
            parse_answer(b"<html>oops</html>"),
            Err(VerifyError::BadAnswer(_))
        ));
        assert!(matches!(
            parse_answer(br#"{"ok":true}"#),
            Err(VerifyError::BadAnswer(_))
        ));
    }
}
