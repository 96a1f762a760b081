//! Challenges on abuse: when a device or IP crosses a threshold of abuse
//! signals ([`abuse`]), a new session or a join needs a solved challenge
//! (Turnstile, hCaptcha or any `siteverify`-compatible provider, [`verify`]).
//! Off unless configured; `duet up` leaves it off.
//!
//! Counts live in each replica's memory. A solved challenge is written into
//! the session token (`captcha_at`), so every replica honours it for
//! [`CaptchaConfig::pass_ttl`].

pub mod abuse;
pub mod verify;

pub use abuse::{AbuseTracker, Signal, Subject, Thresholds};
pub use verify::{SiteVerify, Verdict, Verifier, VerifyError};

use crate::error::ApiError;
use axum::http::StatusCode;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which widget the page loads (the verify protocol is the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Turnstile,
    Hcaptcha,
}

impl Provider {
    pub fn default_verify_url(self) -> &'static str {
        match self {
            Provider::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
            Provider::Hcaptcha => "https://api.hcaptcha.com/siteverify",
        }
    }
    pub fn default_script_url(self) -> &'static str {
        match self {
            Provider::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit",
            Provider::Hcaptcha => "https://js.hcaptcha.com/1/api.js?render=explicit",
        }
    }
}

/// What happens when the verifier cannot answer (timeout, unreachable, bad answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse the visitor (`503 captcha_unavailable`): abuse stays out, everyone waits for the provider.
    Closed,
    /// Let the visitor in as if solved (counted): nobody is locked out, abuse gets through while it lasts.
    Open,
}

#[derive(Clone, Debug)]
pub struct CaptchaConfig {
    pub provider: Provider,
    pub site_key: String,
    pub secret: String,
    pub verify_url: String,
    pub script_url: String,
    pub timeout: Duration,
    pub fail_mode: FailMode,
    pub thresholds: Thresholds,
    /// How long a solved challenge exempts the visitor.
    pub pass_ttl: Duration,
}

/// `GET /api/captcha`: what the page needs to render the widget.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct WidgetConfig {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_url: Option<String>,
}

/// The gate: abuse counts, the verifier and the fail mode.
pub struct Captcha {
    config: CaptchaConfig,
    tracker: Mutex<AbuseTracker>,
    verifier: Arc<dyn Verifier>,
    /// label `result` = required | solved | rejected | unavailable_closed | unavailable_open
    outcomes: IntCounterVec,
}

impl Captcha {
    pub fn new(
        config: CaptchaConfig,
        verifier: Arc<dyn Verifier>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "duet_signaling_captcha_total",
                "Challenges demanded and their outcomes, by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        for r in [
            "required",
            "solved",
            "rejected",
            "unavailable_closed",
            "unavailable_open",
        ] {
            outcomes.with_label_values(&[r]);
        }
        Ok(Self {
            tracker: Mutex::new(AbuseTracker::new(config.thresholds, 100_000)),
            config,
            verifier,
            outcomes,
        })
    }

    /// The `siteverify` verifier the configuration names.
    pub fn site_verify(config: &CaptchaConfig) -> Result<Arc<dyn Verifier>, VerifyError> {
        Ok(Arc::new(SiteVerify::new(
            config.verify_url.clone(),
            config.secret.clone(),
            config.timeout,
        )?))
    }

    pub fn widget(&self) -> WidgetConfig {
        WidgetConfig {
            enabled: true,
            provider: Some(self.config.provider),
            site_key: Some(self.config.site_key.clone()),
            script_url: Some(self.config.script_url.clone()),
        }
    }

    /// Origin of the widget script (for the page's Content-Security-Policy).
    pub fn script_origin(&self) -> Option<String> {
        origin_of(&self.config.script_url)
    }

    /// Records an abuse signal about a device and/or an IP.
    pub fn note(&self, device: Option<&str>, ip: Option<IpAddr>, signal: Signal, now: Instant) {
        let mut t = self.tracker.lock();
        if let Some(d) = device {
            t.note(Subject::Device(d.to_owned()), signal, now);
        }
        if let Some(ip) = ip {
            t.note(Subject::Ip(ip), signal, now);
        }
    }

    /// Whether a join by a session whose challenge was solved at `captcha_at`
    /// (unix seconds) must show a challenge first.
    pub fn join_needs_challenge(
        &self,
        device: &str,
        ip: Option<IpAddr>,
        captcha_at: Option<u64>,
        now: Instant,
        now_unix: u64,
    ) -> bool {
        if self.fresh_pass(captcha_at, now_unix) {
            return false;
        }
        let demanded = self.tracker.lock().demanded(Some(device), ip, now).is_some();
        if demanded {
            self.outcomes.with_label_values(&["required"]).inc();
        }
        demanded
    }

    fn fresh_pass(&self, captcha_at: Option<u64>, now_unix: u64) -> bool {
        captcha_at.is_some_and(|t| now_unix.saturating_sub(t) < self.config.pass_ttl.as_secs())
    }

    /// The gate of `POST /api/session`: `Ok(true)` when a challenge was
    /// solved now (the session token records it), `Ok(false)` when none was
    /// needed, or the refusal.
    pub async fn check_session(
        &self,
        device: &str,
        ip: Option<IpAddr>,
        token: Option<&str>,
        now: Instant,
    ) -> Result<bool, ApiError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let Some(token) = token else {
            if self.tracker.lock().demanded(Some(device), ip, now).is_some() {
                self.outcomes.with_label_values(&["required"]).inc();
                return Err(required());
            }
            return Ok(false);
        };
        if token.len() > 4096 {
            self.outcomes.with_label_values(&["rejected"]).inc();
            return Err(rejected());
        }
        match self.verifier.verify(token, ip).await {
            Ok(Verdict::Solved) => {
                self.outcomes.with_label_values(&["solved"]).inc();
                self.tracker.lock().passed(Some(device), ip);
                Ok(true)
            }
            Ok(Verdict::Rejected(codes)) => {
                self.outcomes.with_label_values(&["rejected"]).inc();
                tracing::info!(?codes, "challenge token rejected by the verifier");
                Err(rejected())
            }
            Err(e) => match self.config.fail_mode {
                FailMode::Closed => {
                    self.outcomes.with_label_values(&["unavailable_closed"]).inc();
                    tracing::warn!(error = %e, "challenge verifier unavailable; failing closed");
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "captcha_unavailable",
                        "the challenge cannot be checked right now; please try again in a minute",
                    ))
                }
                FailMode::Open => {
                    self.outcomes.with_label_values(&["unavailable_open"]).inc();
                    tracing::warn!(error = %e, "challenge verifier unavailable; failing open");
                    self.tracker.lock().passed(Some(device), ip);
                    Ok(true)
                }
            },
        }
    }
}

/// `403 captcha_required`: the page shows the challenge and retries with its token.
pub fn required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "captcha_required",
        "please solve the challenge to continue",
    )
}

fn rejected() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "captcha_invalid",
        "the challenge was not solved or has expired; please try again",
    )
}

/// `scheme://host[:port]` of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ';' || c == '\'' || c == '"') {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Verdict, u16>);

    #[async_trait::async_trait]
    impl Verifier for Fixed {
        async fn verify(&self, _: &str, _: Option<IpAddr>) -> Result<Verdict, VerifyError> {
            self.0.clone().map_err(VerifyError::Status)
        }
    }

    fn captcha(answer: Result<Verdict, u16>, fail_mode: FailMode) -> Captcha {
        let config = CaptchaConfig {
            provider: Provider::Turnstile,
            site_key: "site".into(),
            secret: "secret".into(),
            verify_url: "http://127.0.0.1:9/siteverify".into(),
            script_url: "http://127.0.0.1:9/api.js".into(),
            timeout: Duration::from_secs(1),
            fail_mode,
            thresholds: Thresholds {
                reports: 1,
                ..Thresholds::default()
            },
            pass_ttl: Duration::from_secs(600),
        };
        Captcha::new(config, Arc::new(Fixed(answer)), &Registry::new()).unwrap()
    }

    fn code(r: Result<bool, ApiError>) -> String {
        match r {
            Ok(b) => format!("ok:{b}"),
            Err(e) => e.body.code,
        }
    }

    #[tokio::test]
    async fn nobody_is_challenged_below_the_threshold() {
        let c = captcha(Ok(Verdict::Solved), FailMode::Closed);
        assert_eq!(
            code(c.check_session("dev-12345678", None, None, Instant::now()).await),
            "ok:false"
        );
    }

    #[tokio::test]
    async fn a_reported_device_must_solve_and_a_solution_lets_it_in() {
        let c = captcha(Ok(Verdict::Solved), FailMode::Closed);
        let now = Instant::now();
        c.note(Some("dev-12345678"), None, Signal::Reported, now);
        assert_eq!(
            code(c.check_session("dev-12345678", None, None, now).await),
            "captcha_required"
        );
        assert_eq!(
            code(c.check_session("dev-12345678", None, Some("tok"), now).await),
            "ok:true"
        );
        assert_eq!(
            code(c.check_session("dev-12345678", None, None, now).await),
            "ok:false"
        );
    }

    #[tokio::test]
    async fn a_rejected_token_is_refused_clearly() {
        let c = captcha(
            Ok(Verdict::Rejected(vec!["invalid-input-response".into()])),
            FailMode::Open,
        );
        assert_eq!(
            code(
                c.check_session("dev-12345678", None, Some("bad"), Instant::now())
                    .await
            ),
            "captcha_invalid"
        );
    }

    #[tokio::test]
    async fn an_unavailable_verifier_follows_the_fail_mode() {
        let closed = captcha(Err(503), FailMode::Closed);
        assert_eq!(
            code(
                closed
                    .check_session("dev-12345678", None, Some("t"), Instant::now())
                    .await
            ),
            "captcha_unavailable"
        );
        let open = captcha(Err(503), FailMode::Open);
        assert_eq!(
            code(
                open.check_session("dev-12345678", None, Some("t"), Instant::now())
                    .await
            ),
            "ok:true"
        );
    }

    #[test]
    fn a_fresh_pass_exempts_a_join_and_an_old_one_does_not() {
        let c = captcha(Ok(Verdict::Solved), FailMode::Closed);
        let now = Instant::now();
        c.note(Some("dev-12345678"), None, Signal::Reported, now);
        assert!(c.join_needs_challenge("dev-12345678", None, None, now, 10_000));
        assert!(!c.join_needs_challenge("dev-12345678", None, Some(9_500), now, 10_000));
        assert!(c.join_needs_challenge("dev-12345678", None, Some(9_000), now, 10_000));
    }

    #[test]
    fn the_script_origin_is_scheme_and_host_only() {
        assert_eq!(
            origin_of("https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit").as_deref(),
            Some("https://challenges.cloudflare.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:4000/api.js").as_deref(),
            Some("http://127.0.0.1:4000")
        );
        assert_eq!(origin_of("javascript:alert(1)"), None);
        assert_eq!(origin_of("https://a b/"), None);
    }
}
