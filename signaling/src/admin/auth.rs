//! Moderator login (argon2id, rate limit per IP, lockout per account),
//! short-lived moderator tokens (audience `duet-moderator`, their own key),
//! refresh, logout (the token's `jti` is revoked in the database), and the
//! guard every moderator route runs.

use crate::api::{ApiJson, ClientIp};
use crate::error::ApiError;
use crate::{now_secs, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use proto::token::{ModeratorClaims, ModeratorRole, TokenError, AUD_MODERATOR};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Longest email and password accepted.
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Shortest password for a moderator account.
pub const MIN_PASSWORD_LEN: usize = 10;

/// The moderator making a request (inserted by [`guard`]).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Me {
    pub id: String,
    pub email: String,
    pub role: ModeratorRole,
    #[serde(skip)]
    pub jti: String,
    pub expires_at: u64,
}

impl Me {
    pub fn at_least(&self, role: ModeratorRole) -> bool {
        self.role >= role
    }
}

pub fn parse_role(s: &str) -> Option<ModeratorRole> {
    match s {
        "moderator" => Some(ModeratorRole::Moderator),
        "senior" => Some(ModeratorRole::Senior),
        "admin" => Some(ModeratorRole::Admin),
        _ => None,
    }
}

pub fn role_str(r: ModeratorRole) -> &'static str {
    match r {
        ModeratorRole::Moderator => "moderator",
        ModeratorRole::Senior => "senior",
        ModeratorRole::Admin => "admin",
    }
}

/// A plausible email address (what accounts are keyed by), lower-cased.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= MAX_EMAIL_LEN
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    ok.then_some(e)
}

pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn unauthorized(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Verifies the request's moderator token and session.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Me, ApiError> {
    let inner = &state.inner;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <moderator token>"))?;
    let bad = |e: TokenError| {
        inner.metrics.bad_input.with_label_values(&["bad_token"]).inc();
        match e {
            TokenError::Expired => unauthorized("token_expired", "moderator token expired, log in again"),
            _ => unauthorized("bad_token", "not a valid moderator token"),
        }
    };
    if token.len() > 4096 {
        return Err(bad(TokenError::Malformed));
    }
    let claims: ModeratorClaims = inner.admin.mod_key.verify(token.trim()).map_err(bad)?;
    let row = inner
        .store
        .session_row(&claims.jti, &claims.sub)
        .await?
        .ok_or_else(|| unauthorized("bad_token", "unknown moderator session"))?;
    if row.disabled {
        return Err(unauthorized(
            "account_disabled",
            "this moderator account is disabled",
        ));
    }
    if row.revoked_at.is_some() {
        return Err(unauthorized(
            "token_revoked",
            "this moderator session has ended, log in again",
        ));
    }
    if row.expires_at < now_secs() as i64 {
        return Err(unauthorized(
            "token_expired",
            "moderator token expired, log in again",
        ));
    }
    // The role as stored now: a demotion takes effect at once.
    let role = parse_role(&row.role).ok_or_else(ApiError::internal)?;
    Ok(Me {
        id: claims.sub,
        email: row.email,
        role,
        jti: claims.jti,
        expires_at: claims.exp,
    })
}

/// Every moderator route: authenticated, and at least `min` role.
pub(crate) async fn guard(
    State((state, min)): State<(AppState, ModeratorRole)>,
    mut req: Request,
    next: Next,
) -> Response {
    let me = match authenticate(&state, req.headers()).await {
        Ok(me) => me,
        Err(e) => return e.into_response(),
    };
    if !me.at_least(min) {
        return forbidden(format!("this needs the {} role", role_str(min))).into_response();
    }
    // Each moderator action is a trace of its own: route and role, no personal data.
    let span = tracing::info_span!(
        target: "signaling::admin",
        "moderator",
        method = req.method().as_str(),
        route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str())
            .unwrap_or(""),
        role = role_str(me.role),
        status = tracing::field::Empty,
    );
    req.extensions_mut().insert(me);
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("status", resp.status().as_u16());
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: u64,
    pub moderator: MeView,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MeView {
    pub id: String,
    pub email: String,
    pub role: ModeratorRole,
    pub expires_at: u64,
}

/// Mints a token and records its session.
async fn issue(
    state: &AppState,
    id: &str,
    role: ModeratorRole,
    rotate_from: Option<&str>,
) -> Result<(String, u64, String), ApiError> {
    let inner = &state.inner;
    let now = now_secs();
    let exp = now + inner.config.admin.token_ttl.as_secs().max(60);
    let jti = uuid::Uuid::new_v4().simple().to_string();
    let claims = ModeratorClaims {
        sub: id.to_owned(),
        aud: AUD_MODERATOR.into(),
        exp,
        iat: now,
        role,
        jti: jti.clone(),
    };
    let token = inner
        .admin
        .mod_key
        .mint(&claims)
        .map_err(crate::SignalingError::from)?;
    match rotate_from {
        Some(old) => {
            inner
                .store
                .rotate_session(old, id, &jti, now as i64, exp as i64)
                .await?
        }
        None => inner.store.login_ok(id, &jti, now as i64, exp as i64).await?,
    }
    Ok((token, exp, jti))
}

fn bad_credentials() -> ApiError {
    unauthorized("bad_credentials", "wrong email or password")
}

/// Bounds how many argon2 computations run at once. Each one holds ~19 MiB
/// (argon2id's default memory cost) on a blocking thread, and tokio allows
/// hundreds of those: without a bound, concurrent wrong-password logins grow
/// the process by that much each. When every slot is taken the request is
/// refused at once with 503 and `Retry-After` (a moderator retries in a
/// second; an attacker gets no queue to fill).
pub(crate) struct PasswordGate {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    in_flight: prometheus::IntGauge,
}

impl PasswordGate {
    pub(crate) fn new(max: usize, in_flight: prometheus::IntGauge) -> Self {
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            in_flight,
        }
    }

    /// Runs `work` on a blocking thread if a slot is free. The slot is held
    /// by the blocking task itself, so a client that hangs up does not free
    /// it before the computation (and its memory) is done.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| busy())?;
        let gauge = self.in_flight.clone();
        gauge.inc();
        let result = tokio::task::spawn_blocking(move || {
            let out = work();
            gauge.dec();
            drop(permit);
            out
        })
        .await;
        result.map_err(|_| ApiError::internal())
    }
}

/// Every password-check slot is taken.
fn busy() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many logins at once, try again in a moment",
    );
    e.retry_after_secs = Some(1);
    e
}

/// Checks `password` against `hash` off the async threads (argon2 is slow on purpose).
pub(crate) async fn verify_blocking(
    state: &AppState,
    password: String,
    hash: String,
) -> Result<bool, ApiError> {
    state
        .inner
        .admin
        .passwords
        .run(move || crate::store::verify_password(&password, &hash))
        .await
}

/// argon2id hash off the async threads.
pub(crate) async fn hash_blocking(state: &AppState, password: String) -> Result<String, ApiError> {
    state
        .inner
        .admin
        .passwords
        .run(move || crate::store::hash_password(&password))
        .await?
        .map_err(ApiError::from)
}

/// An argon2id hash of a random password nobody knows, so an unknown email
/// costs as much time as a wrong password.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn dummy_verify(state: &AppState, password: String) -> Result<bool, ApiError> {
    state
        .inner
        .admin
        .passwords
        .run(move || {
            let hash = DUMMY_HASH.get_or_init(|| {
                let secret = uuid::Uuid::new_v4().simple().to_string();
                crate::store::hash_password(&secret).unwrap_or_default()
            });
            crate::store::verify_password(&password, hash)
        })
        .await
}

/// `POST /api/admin/login`.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let m = &inner.admin.metrics;
    let ip_key = ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
    if let Err(wait) = inner.admin.login_ip.check(&ip_key, Instant::now()) {
        m.logins.with_label_values(&["rate_limited"]).inc();
        inner.metrics.rate_limited.with_label_values(&["login"]).inc();
        return Err(ApiError::rate_limited(wait));
    }
    if req.password.len() > MAX_PASSWORD_LEN || req.email.len() > MAX_EMAIL_LEN {
        return Err(ApiError::bad_request("too_long", "email or password too long"));
    }
    let Some(email) = normalize_email(&req.email) else {
        return Err(ApiError::bad_request("bad_email", "not an email address"));
    };
    let Some(row) = inner.store.login_row(&email).await? else {
        if let Err(e) = dummy_verify(&state, req.password).await {
            m.logins.with_label_values(&["busy"]).inc();
            return Err(e);
        }
        m.logins.with_label_values(&["bad"]).inc();
        return Err(bad_credentials());
    };
    let now = now_secs() as i64;
    if let Some(until) = row.locked_until.filter(|u| *u > now) {
        m.logins.with_label_values(&["locked"]).inc();
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "account_locked",
            "too many wrong passwords: this account is locked for a while (an admin can unlock it)",
        );
        e.retry_after_secs = Some((until - now).max(1) as u64);
        return Err(e);
    }
    let ok = match verify_blocking(&state, req.password, row.password_hash.clone()).await {
        Ok(ok) => ok,
        Err(e) => {
            m.logins.with_label_values(&["busy"]).inc();
            return Err(e);
        }
    };
    if !ok || row.disabled {
        m.logins.with_label_values(&["bad"]).inc();
        if !ok {
            let cfg = &inner.config.admin;
            let locked = inner
                .store
                .login_failed(
                    &row.id,
                    cfg.lockout_after.max(1) as i64,
                    now + cfg.lockout_for.as_secs() as i64,
                )
                .await?;
            inner
                .store
                .audit(
                    &row.email,
                    "login_failed",
                    "moderator",
                    &row.id,
                    &serde_json::json!({ "ip": ip.map(|i| i.to_string()), "locked": locked }),
                )
                .await?;
        }
        return Err(bad_credentials());
    }
    let role = parse_role(&row.role).ok_or_else(ApiError::internal)?;
    let (token, expires_at, _) = issue(&state, &row.id, role, None).await?;
    inner
        .store
        .audit(
            &row.email,
            "login",
            "moderator",
            &row.id,
            &serde_json::json!({ "ip": ip.map(|i| i.to_string()) }),
        )
        .await?;
    m.logins.with_label_values(&["ok"]).inc();
    Ok(Json(LoginResponse {
        token,
        expires_at,
        moderator: MeView {
            id: row.id,
            email: row.email,
            role,
            expires_at,
        },
    })
    .into_response())
}

/// `POST /api/admin/refresh`: a fresh token; the old one stops working.
pub async fn refresh(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (token, expires_at, _) = issue(&state, &me.id, me.role, Some(&me.jti)).await?;
    Ok(Json(LoginResponse {
        token,
        expires_at,
        moderator: MeView {
            id: me.id,
            email: me.email,
            role: me.role,
            expires_at,
        },
    }))
}

/// `POST /api/admin/logout`: revokes this token.
pub async fn logout(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
) -> Result<StatusCode, ApiError> {
    let inner = &state.inner;
    inner.store.revoke_session(&me.jti, now_secs() as i64).await?;
    inner
        .store
        .audit(&me.email, "logout", "moderator", &me.id, &serde_json::json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/admin/me`.
pub async fn me(Extension(me): Extension<Me>) -> Json<MeView> {
    Json(MeView {
        id: me.id,
        email: me.email,
        role: me.role,
        expires_at: me.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email(" Mod@Example.ORG ").as_deref(),
            Some("mod@example.org")
        );
        assert!(normalize_email("nobody").is_none());
        assert!(normalize_email("a@b").is_none());
        assert!(normalize_email("a b@example.org").is_none());
        assert!(normalize_email(&format!("{}@example.org", "a".repeat(300))).is_none());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(ModeratorRole::Admin > ModeratorRole::Senior);
        assert!(ModeratorRole::Senior > ModeratorRole::Moderator);
        for r in [
            ModeratorRole::Moderator,
            ModeratorRole::Senior,
            ModeratorRole::Admin,
        ] {
            assert_eq!(parse_role(role_str(r)), Some(r));
        }
    }
}
