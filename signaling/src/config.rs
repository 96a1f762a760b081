//! Signaling configuration. The binary fills it from flags, env and TOML;
//! [`SignalingConfig::default`] is a working development setup (in memory,
//! SQLite in memory, fixed development secrets).

use proto::signal::IceTransportPolicy;
use std::time::Duration;

/// Where live state (queue, pairings, event delivery) lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backends {
    /// One process: in-memory queue and registry (`duet up`).
    InMemory,
    /// Several replicas share one queue in Redis; events travel over pub/sub.
    Redis { url: String, prefix: String },
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
    /// A limit that never refuses (tests, benches).
    pub const UNLIMITED: RateLimit = RateLimit {
        per_second: 1.0e9,
        burst: u32::MAX,
    };
}

/// Rate limits, each applied per client IP and per device (local to a replica).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    /// `POST /api/session` per IP.
    pub session_per_ip: RateLimit,
    /// `POST /api/session` per device id.
    pub session_per_device: RateLimit,
    /// WebSocket messages per device.
    pub ws_message: RateLimit,
    /// WebSocket messages per IP (all devices behind it).
    pub ws_message_per_ip: RateLimit,
    /// `next` presses per device.
    pub next: RateLimit,
    /// `POST /api/reports` per device.
    pub report_per_device: RateLimit,
    /// `POST /api/reports` per IP.
    pub report_per_ip: RateLimit,
    /// Open visitor WebSockets per IP at once (per replica).
    pub ws_per_ip: usize,
    /// WebSocket pings per IP (browsers never send any; a flood is refused).
    pub ws_ping_per_ip: RateLimit,
    /// Most keys remembered per limit (bounded memory).
    pub max_keys: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            session_per_ip: RateLimit::new(1.0, 20),
            session_per_device: RateLimit::new(0.2, 5),
            ws_message: RateLimit::new(10.0, 40),
            ws_message_per_ip: RateLimit::new(100.0, 400),
            next: RateLimit::new(1.0, 10),
            report_per_device: RateLimit::new(0.05, 5),
            report_per_ip: RateLimit::new(0.5, 20),
            ws_per_ip: 64,
            ws_ping_per_ip: RateLimit::new(1.0, 10),
            max_keys: 100_000,
        }
    }
}

impl RateLimits {
    /// No limits at all (tests and benches creating many sessions from 127.0.0.1).
    pub fn unlimited() -> Self {
        Self {
            session_per_ip: RateLimit::UNLIMITED,
            session_per_device: RateLimit::UNLIMITED,
            ws_message: RateLimit::UNLIMITED,
            ws_message_per_ip: RateLimit::UNLIMITED,
            next: RateLimit::UNLIMITED,
            report_per_device: RateLimit::UNLIMITED,
            report_per_ip: RateLimit::UNLIMITED,
            ws_per_ip: usize::MAX,
            ws_ping_per_ip: RateLimit::UNLIMITED,
            max_keys: 100_000,
        }
    }
}

/// Everything signaling needs to run.
#[derive(Clone)]
pub struct SignalingConfig {
    /// Public base URL of the service (`https://duet.example`), used in docs/links.
    pub public_url: String,
    /// HMAC secret of session JWTs (≥ 16 bytes).
    pub session_secret: Vec<u8>,
    /// HMAC secret of SFU JWTs, shared with the SFU nodes (≥ 16 bytes).
    pub sfu_token_secret: Vec<u8>,
    /// TURN REST secret shared with the TURN relays.
    pub turn_secret: Vec<u8>,
    /// Bearer token for the SFU nodes' internal API.
    pub sfu_internal_token: String,
    /// `sqlite:path` / `sqlite::memory:` / `postgres://…`.
    pub database_url: String,
    /// `None`: in-memory live state and node registry; `Some`: Redis.
    pub redis_url: Option<String>,
    /// Key and channel prefix in Redis (e.g. `duet:`).
    pub redis_prefix: String,
    /// This deployment's default region.
    pub region: String,
    /// Regions to try, in order, when the visitor's region has no capacity.
    pub region_fallbacks: Vec<String>,
    /// Wait before a visitor with interests is matched with anyone.
    pub widen_after: Duration,
    /// Wait before the same two devices may meet again.
    pub cooldown: Duration,
    pub ice_transport_policy: IceTransportPolicy,
    /// Lifetime of session and SFU tokens.
    pub session_ttl: Duration,
    /// Lifetime of TURN credentials.
    pub turn_credential_ttl: Duration,
    pub rate_limits: RateLimits,
    /// Words masked with `*` in chat (case-insensitive, whole words).
    pub word_filter: Vec<String>,
    /// Chat lines kept per pairing as report evidence.
    pub transcript_max_lines: usize,
    /// How long after a pairing ended it may still be reported.
    pub report_window: Duration,
    /// How often the matcher widens and re-tries waiting visitors.
    pub tick_interval: Duration,
    /// Take the client IP from the first `X-Forwarded-For` entry (behind a trusted ingress).
    pub trust_forwarded_for: bool,
    /// A visitor WebSocket that sends nothing (not even a pong to the
    /// server's pings, sent every third of this) for this long is closed.
    pub ws_idle_timeout: Duration,
    /// How often each replica reads bans set or lifted on other replicas
    /// (the replica a moderator uses applies them at once).
    pub ban_refresh: Duration,
    /// Largest REST body accepted.
    pub max_body_bytes: usize,
    /// Timeout of calls to the SFU internal API.
    pub sfu_timeout: Duration,
    /// Id of this replica (random when `None`).
    pub replica_id: Option<String>,
    /// Moderation: moderator tokens, login limits, wall keyframes, retention.
    pub admin: crate::admin::AdminConfig,
    /// Challenges on abuse (`None`: off).
    pub captcha: Option<crate::captcha::CaptchaConfig>,
    /// Automatic screening's optional block: while a side of a call is
    /// flagged above the high threshold, the partner stops receiving its
    /// video until a moderator clears it (off by default).
    pub screening_hold: bool,
    /// Timeouts and connection cap of the HTTP listener ([`crate::run`]).
    pub http: crate::server::HttpLimits,
}

impl std::fmt::Debug for SignalingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("SignalingConfig")
            .field("public_url", &self.public_url)
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("region", &self.region)
            .field("region_fallbacks", &self.region_fallbacks)
            .field("widen_after", &self.widen_after)
            .field("cooldown", &self.cooldown)
            .field("ice_transport_policy", &self.ice_transport_policy)
            .field("rate_limits", &self.rate_limits)
            .field("word_filter_len", &self.word_filter.len())
            .finish_non_exhaustive()
    }
}

fn redact_url(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, host)) => {
            let scheme = scheme_user.split("://").next().unwrap_or("");
            format!("{scheme}://***@{host}")
        }
        None => url.to_owned(),
    }
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            session_secret: b"duet-dev-session-secret-change-me".to_vec(),
            sfu_token_secret: b"duet-dev-sfu-secret-change-me-now".to_vec(),
            turn_secret: b"duet-dev-turn-secret-change-me".to_vec(),
            sfu_internal_token: "duet-dev-internal-token".into(),
            database_url: "sqlite::memory:".into(),
            redis_url: None,
            redis_prefix: "duet:".into(),
            region: "local".into(),
            region_fallbacks: Vec::new(),
            widen_after: Duration::from_secs(5),
            cooldown: Duration::from_secs(600),
            ice_transport_policy: IceTransportPolicy::All,
            session_ttl: Duration::from_secs(4 * 3600),
            turn_credential_ttl: Duration::from_secs(4 * 3600),
            rate_limits: RateLimits::default(),
            word_filter: Vec::new(),
            transcript_max_lines: 200,
            report_window: Duration::from_secs(3600),
            tick_interval: Duration::from_millis(250),
            trust_forwarded_for: false,
            ws_idle_timeout: Duration::from_secs(60),
            ban_refresh: Duration::from_secs(2),
            max_body_bytes: 16 * 1024,
            sfu_timeout: Duration::from_secs(5),
            replica_id: None,
            admin: crate::admin::AdminConfig::default(),
            captcha: None,
            screening_hold: false,
            http: crate::server::HttpLimits::default(),
        }
    }
}

impl SignalingConfig {
    /// Which live-state backend this configuration selects.
    pub fn backends(&self) -> Backends {
        match &self.redis_url {
            Some(url) => Backends::Redis {
                url: url.clone(),
                prefix: self.redis_prefix.clone(),
            },
            None => Backends::InMemory,
        }
    }
}
