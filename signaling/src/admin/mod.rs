//! Moderation: the moderator API under `/api/admin/` (see docs/api-admin.md),
//! the visitor's `POST /api/appeals`, and the jobs behind them (wall
//! keyframes, watch clean-up, retention, analytics samples).
//!
//! Every moderator route is listed once in [`route_table`] with the least
//! role it needs; the router is built from that table and every route gets
//! the same guard ([`auth::guard`]): a valid moderator token (HS256,
//! audience `duet-moderator`, not expired), whose `jti` is a live session
//! in the database (so a logout holds on every replica), of an account that
//! is not disabled, with a role (as stored now, not as minted) at least the
//! route's. Finer rules that depend on the body (permanent bans need a
//! senior, nobody decides an appeal of their own ban) are checked in the
//! handlers.

pub mod accounts;
pub mod analytics;
pub mod appeals;
pub mod audit;
pub mod auth;
pub mod bans;
pub mod csv;
pub(crate) mod db;
pub mod reports;
pub mod retention;
pub(crate) mod sfu;
pub mod templates;
pub mod wall;
pub mod watch;

use crate::config::RateLimit;
use crate::error::SignalingError;
use crate::ratelimit::Limiter;
use crate::{AppState, WeakInner};
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use parking_lot::Mutex;
use proto::token::{ModeratorRole, TokenKey};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use auth::Me;
pub use retention::{RetentionCounts, RetentionPolicy};

/// Moderation settings (part of [`crate::SignalingConfig`]).
#[derive(Clone)]
pub struct AdminConfig {
    /// HMAC key of moderator and appeal tokens; `None`: derived from the
    /// session secret (HMAC-SHA256 with a fixed label), so replicas that share
    /// the session secret agree without another secret to configure.
    pub moderator_secret: Option<Vec<u8>>,
    /// Lifetime of a moderator token (the page refreshes it while open).
    pub token_ttl: Duration,
    /// `POST /api/admin/login` per client IP.
    pub login_per_ip: RateLimit,
    /// `POST /api/appeals` per client IP.
    pub appeal_per_ip: RateLimit,
    /// Wrong passwords in a row before an account is locked.
    pub lockout_after: u32,
    /// How long a locked account stays locked.
    pub lockout_for: Duration,
    /// Periodic keyframe requests to the SFU nodes while a wall is open
    /// (an admin can change it at run time in the settings).
    pub wall_keyframe_interval: Duration,
    /// A wall counts as open this long after its last refresh.
    pub wall_open_ttl: Duration,
    /// How often the page refreshes the wall.
    pub wall_refresh: Duration,
    /// Evidence retention (an admin can change it at run time).
    pub retention: RetentionPolicy,
    /// How often the retention job runs.
    pub retention_every: Duration,
    /// Longest lifetime of the appeal token in a ban notice.
    pub appeal_token_ttl: Duration,
    /// argon2 password checks and hashes running at once at most (each
    /// holds ~19 MiB); a login beyond this gets 503 with `Retry-After`.
    pub max_password_checks: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            moderator_secret: None,
            token_ttl: Duration::from_secs(15 * 60),
            login_per_ip: RateLimit::new(0.1, 10),
            appeal_per_ip: RateLimit::new(0.05, 5),
            lockout_after: 5,
            lockout_for: Duration::from_secs(15 * 60),
            wall_keyframe_interval: Duration::from_secs(3),
            wall_open_ttl: Duration::from_secs(12),
            wall_refresh: Duration::from_secs(3),
            retention: RetentionPolicy::default(),
            retention_every: Duration::from_secs(3600),
            appeal_token_ttl: Duration::from_secs(30 * 86_400),
            max_password_checks: 4,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("AdminConfig")
            .field("token_ttl", &self.token_ttl)
            .field("lockout_after", &self.lockout_after)
            .field("lockout_for", &self.lockout_for)
            .field("wall_keyframe_interval", &self.wall_keyframe_interval)
            .field("retention", &self.retention)
            .field("max_password_checks", &self.max_password_checks)
            .finish_non_exhaustive()
    }
}

/// Moderation state of one replica.
pub(crate) struct AdminState {
    pub mod_key: TokenKey,
    pub appeal_key: TokenKey,
    pub login_ip: Limiter,
    pub appeal_ip: Limiter,
    /// Bounds concurrent argon2 work (memory).
    pub passwords: auth::PasswordGate,
    pub metrics: analytics::AdminMetrics,
    pub sfu: sfu::SfuOps,
    pub wall: wall::WallState,
    pub watches: Mutex<HashMap<String, watch::Watch>>,
    pub samples: Mutex<VecDeque<analytics::Sample>>,
    pub settings: Mutex<Option<(Instant, Settings)>>,
}

fn derive_key(secret: &[u8], label: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    match <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(label);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; keep the secret itself as a fallback.
        Err(_) => secret.to_vec(),
    }
}

/// The base key of moderator and appeal tokens for `config`.
fn base_key(config: &crate::SignalingConfig) -> Result<Vec<u8>, SignalingError> {
    match &config.admin.moderator_secret {
        Some(s) if s.len() < proto::token::MIN_SECRET_LEN => Err(SignalingError::Config(format!(
            "admin.moderator_secret must be at least {} bytes",
            proto::token::MIN_SECRET_LEN
        ))),
        Some(s) => Ok(s.clone()),
        None => Ok(derive_key(&config.session_secret, b"duet moderator tokens v1")),
    }
}

/// The key moderator tokens of `config` are signed with (for tools and tests).
pub fn moderator_key(config: &crate::SignalingConfig) -> Result<TokenKey, SignalingError> {
    Ok(TokenKey::new(&derive_key(&base_key(config)?, b"moderator")))
}

/// The key appeal tokens of `config` are signed with (for tools and tests).
pub fn appeal_key(config: &crate::SignalingConfig) -> Result<TokenKey, SignalingError> {
    Ok(TokenKey::new(&derive_key(&base_key(config)?, b"appeal")))
}

impl AdminState {
    pub(crate) fn new(
        config: &crate::SignalingConfig,
        registry: &prometheus::Registry,
    ) -> Result<Self, SignalingError> {
        let a = &config.admin;
        let max_keys = config.rate_limits.max_keys;
        let metrics = analytics::AdminMetrics::new(registry)
            .map_err(|e| SignalingError::Config(format!("admin metrics: {e}")))?;
        Ok(Self {
            passwords: auth::PasswordGate::new(a.max_password_checks, metrics.password_checks.clone()),
            mod_key: moderator_key(config)?,
            appeal_key: appeal_key(config)?,
            login_ip: Limiter::new(a.login_per_ip, max_keys),
            appeal_ip: Limiter::new(a.appeal_per_ip, max_keys),
            metrics,
            sfu: sfu::SfuOps::new(config.sfu_internal_token.clone(), config.sfu_timeout)?,
            wall: wall::WallState::default(),
            watches: Mutex::new(HashMap::new()),
            samples: Mutex::new(VecDeque::new()),
            settings: Mutex::new(None),
        })
    }
}

impl crate::Inner {
    /// Bookkeeping when a pairing ends (call length, Next rate).
    pub(crate) fn on_pairing_ended(
        &self,
        p: &crate::matching::Pairing,
        reason: proto::signal::PartnerLeftReason,
        now_ms: u64,
    ) {
        self.admin.metrics.pairing_ended(p, reason, now_ms);
    }
}

/// One moderator route: method, path (axum syntax) and the least role it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRoute {
    pub method: Method,
    pub path: &'static str,
    pub min_role: ModeratorRole,
}

type Entry = (Method, &'static str, ModeratorRole, MethodRouter<AppState>);

fn entry<H, T>(method: Method, path: &'static str, min_role: ModeratorRole, handler: H) -> Entry
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    (method, path, min_role, on(filter, handler))
}

fn entries() -> Vec<Entry> {
    use ModeratorRole::{Admin, Moderator as M, Senior};
    let (get, post, put, patch, delete) = (
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    );
    vec![
        entry(post.clone(), "/api/admin/logout", M, auth::logout),
        entry(post.clone(), "/api/admin/refresh", M, auth::refresh),
        entry(get.clone(), "/api/admin/me", M, auth::me),
        entry(get.clone(), "/api/admin/templates", M, templates::list),
        entry(get.clone(), "/api/admin/wall", M, wall::list),
        entry(
            get.clone(),
            "/api/admin/pairings/{pairing}/snapshot/{side}",
            M,
            wall::snapshot,
        ),
        entry(post.clone(), "/api/admin/pairings/{pairing}/view", M, wall::view),
        entry(
            post.clone(),
            "/api/admin/pairings/{pairing}/end",
            M,
            wall::end_call,
        ),
        entry(
            post.clone(),
            "/api/admin/pairings/{pairing}/screening/clear",
            M,
            crate::screening::clear,
        ),
        entry(
            post.clone(),
            "/api/admin/pairings/{pairing}/watch",
            M,
            watch::start,
        ),
        entry(delete, "/api/admin/watches/{watch}", M, watch::stop),
        entry(get.clone(), "/api/admin/reports", M, reports::list),
        entry(get.clone(), "/api/admin/reports/{report}", M, reports::detail),
        entry(
            get.clone(),
            "/api/admin/reports/{report}/snapshots/{snapshot}",
            M,
            reports::snapshot,
        ),
        entry(
            post.clone(),
            "/api/admin/reports/{report}/action",
            M,
            reports::action,
        ),
        entry(get.clone(), "/api/admin/bans", M, bans::list),
        entry(post.clone(), "/api/admin/bans", M, bans::create),
        entry(post.clone(), "/api/admin/bans/unban", M, bans::unban),
        entry(get.clone(), "/api/admin/bans/export", M, bans::export),
        entry(post.clone(), "/api/admin/bans/import", M, bans::import),
        entry(get.clone(), "/api/admin/appeals", M, appeals::list),
        entry(get.clone(), "/api/admin/appeals/{appeal}", M, appeals::detail),
        entry(
            post.clone(),
            "/api/admin/appeals/{appeal}/decision",
            Senior,
            appeals::decide,
        ),
        entry(get.clone(), "/api/admin/audit", M, audit::list),
        entry(get.clone(), "/api/admin/audit/export", M, audit::export),
        entry(get.clone(), "/api/admin/analytics", M, analytics::get),
        entry(get.clone(), "/api/admin/moderators", Admin, accounts::list),
        entry(post.clone(), "/api/admin/moderators", Admin, accounts::create),
        entry(
            patch,
            "/api/admin/moderators/{moderator}",
            Admin,
            accounts::update,
        ),
        entry(get, "/api/admin/settings", Admin, accounts::get_settings),
        entry(put, "/api/admin/settings", Admin, accounts::put_settings),
        entry(post, "/api/admin/retention/run", Admin, accounts::run_retention),
    ]
}

/// Every moderator route (all need a moderator token). `POST /api/admin/login`
/// and the visitor's `POST /api/appeals` are the only public ones and are not listed.
pub fn route_table() -> Vec<AdminRoute> {
    entries()
        .into_iter()
        .map(|(method, path, min_role, _)| AdminRoute {
            method,
            path,
            min_role,
        })
        .collect()
}

/// Largest body of a moderator request (CSV imports are the big ones).
pub const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// The moderator API and `POST /api/appeals`, guarded as described above.
pub fn router(state: &AppState) -> Router<AppState> {
    let public = Router::new()
        .route("/api/admin/login", axum::routing::post(auth::login))
        .route("/api/appeals", axum::routing::post(appeals::create))
        .layer(DefaultBodyLimit::max(state.inner.config.max_body_bytes));
    let mut guarded = Router::new();
    for (_, path, min_role, handler) in entries() {
        let handler = handler.layer(axum::middleware::from_fn_with_state(
            (state.clone(), min_role),
            auth::guard,
        ));
        guarded = guarded.route(path, handler);
    }
    guarded
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refresh_bans_after_writes,
        ))
        .merge(public)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A moderator's change (a ban, a lift, an import, an appeal decision) is in
/// force on this replica before the answer: the ban list reads what changed.
async fn refresh_bans_after_writes(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let write = req.method() != Method::GET && req.method() != Method::HEAD;
    let resp = next.run(req).await;
    if write && resp.status().is_success() {
        if let Err(e) = state.inner.bans.refresh(&state.inner.store).await {
            tracing::warn!(error = %e, "cannot refresh the ban list after a moderator's change");
        }
    }
    resp
}

/// A known path with another method: JSON like every other refusal.
async fn method_not_allowed() -> crate::ApiError {
    crate::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// Starts the moderation jobs: wall keyframes, watch clean-up, analytics
/// samples, retention. They stop with `cancel` or when the state is dropped.
pub(crate) fn spawn_background(weak: WeakInner, cancel: CancellationToken) {
    let (w, c) = (weak.clone(), cancel.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        let mut last_sample = None::<Instant>;
        loop {
            tokio::select! {
                _ = c.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(inner) = w.upgrade() else { break };
            wall::keyframe_tick(&inner).await;
            if last_sweep.elapsed() >= Duration::from_secs(5) {
                last_sweep = Instant::now();
                watch::sweep(&inner).await;
            }
            if last_sample.is_none_or(|t: Instant| t.elapsed() >= analytics::SAMPLE_EVERY) {
                last_sample = Some(Instant::now());
                analytics::sample(&inner);
            }
        }
    });
    tokio::spawn(async move {
        let every = match weak.upgrade() {
            Some(i) => i.config.admin.retention_every.max(Duration::from_secs(1)),
            None => return,
        };
        // First run soon after start, then periodically.
        let mut wait = Duration::from_secs(30).min(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = every;
            let Some(inner) = weak.upgrade() else { break };
            retention::run_job(&inner).await;
        }
    });
}

/// Query-string extractor whose rejections are JSON [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = crate::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(crate::ApiError::bad_request("bad_query", e.body_text())),
        }
    }
}

/// Settings an admin may change at run time (stored in the database).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Settings {
    pub retention_dismissed_days: u64,
    pub retention_actioned_days: u64,
    pub wall_keyframe_interval_ms: u64,
}

impl Settings {
    pub fn defaults(c: &AdminConfig) -> Self {
        Self {
            retention_dismissed_days: c.retention.dismissed_after.as_secs() / 86_400,
            retention_actioned_days: c.retention.actioned_after.as_secs() / 86_400,
            wall_keyframe_interval_ms: c.wall_keyframe_interval.as_millis() as u64,
        }
    }

    /// Defaults overridden by stored values.
    pub fn from_stored(c: &AdminConfig, stored: &HashMap<String, String>) -> Self {
        let mut s = Self::defaults(c);
        let num = |k: &str| stored.get(k).and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = num("retention_dismissed_days") {
            s.retention_dismissed_days = v;
        }
        if let Some(v) = num("retention_actioned_days") {
            s.retention_actioned_days = v;
        }
        if let Some(v) = num("wall_keyframe_interval_ms") {
            s.wall_keyframe_interval_ms = v;
        }
        s
    }

    pub fn retention(&self) -> RetentionPolicy {
        RetentionPolicy {
            dismissed_after: Duration::from_secs(self.retention_dismissed_days * 86_400),
            actioned_after: Duration::from_secs(self.retention_actioned_days * 86_400),
        }
    }
}

/// How long the settings read from the database are reused.
const SETTINGS_CACHE: Duration = Duration::from_secs(10);

/// The settings in force (cached for a few seconds).
pub(crate) async fn settings(inner: &crate::Inner) -> Settings {
    if let Some((at, s)) = inner.admin.settings.lock().as_ref() {
        if at.elapsed() < SETTINGS_CACHE {
            return s.clone();
        }
    }
    let s = match inner.store.settings().await {
        Ok(stored) => Settings::from_stored(&inner.config.admin, &stored),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read moderation settings; using defaults");
            Settings::defaults(&inner.config.admin)
        }
    };
    *inner.admin.settings.lock() = Some((Instant::now(), s.clone()));
    s
}

/// Appends a moderator action or evidence view to the audit log.
pub(crate) async fn audit(
    inner: &crate::Inner,
    actor: &str,
    action: &'static str,
    target_kind: &str,
    target_id: &str,
    details: serde_json::Value,
) -> Result<(), crate::ApiError> {
    inner
        .store
        .audit(actor, action, target_kind, target_id, &details)
        .await?;
    inner.admin.metrics.actions.with_label_values(&[action]).inc();
    Ok(())
}
