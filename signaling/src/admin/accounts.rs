//! Admin only: moderator accounts (create, change role, disable, unlock,
//! reset password) and run-time settings (retention, wall keyframes), and
//! running the retention job now.

use super::auth::{hash_blocking, normalize_email, parse_role, role_str, MAX_PASSWORD_LEN, MIN_PASSWORD_LEN};
use super::db::ModeratorInfo;
use super::{Me, RetentionCounts, Settings};
use crate::api::ApiJson;
use crate::error::ApiError;
use crate::{now_secs, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModeratorList {
    pub moderators: Vec<ModeratorInfo>,
}

/// `GET /api/admin/moderators`.
pub async fn list(
    State(state): State<AppState>,
    Extension(_me): Extension<Me>,
) -> Result<Json<ModeratorList>, ApiError> {
    Ok(Json(ModeratorList {
        moderators: state.inner.store.list_moderators().await?,
    }))
}

fn check_password(p: &str) -> Result<(), ApiError> {
    let n = p.chars().count();
    if n < MIN_PASSWORD_LEN || p.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("passwords are {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModerator {
    pub email: String,
    pub role: String,
    pub password: String,
}

/// `POST /api/admin/moderators`.
pub async fn create(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiJson(req): ApiJson<CreateModerator>,
) -> Result<(StatusCode, Json<ModeratorInfo>), ApiError> {
    let inner = &state.inner;
    let email = normalize_email(&req.email)
        .ok_or_else(|| ApiError::bad_request("bad_email", "not an email address"))?;
    let role = parse_role(&req.role)
        .ok_or_else(|| ApiError::bad_request("bad_role", "role must be moderator, senior or admin"))?;
    check_password(&req.password)?;
    if inner.store.login_row(&email).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            "an account with this email exists",
        ));
    }
    let hash = hash_blocking(&state, req.password).await?;
    let id = inner
        .store
        .insert_moderator(&email, &hash, role_str(role))
        .await?;
    super::audit(
        inner,
        &me.email,
        "moderator_create",
        "moderator",
        &id,
        serde_json::json!({ "email": email, "role": role_str(role) }),
    )
    .await?;
    let info = inner
        .store
        .moderator_by_id(&id)
        .await?
        .ok_or_else(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Debug, Deserialize, Serialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModerator {
    pub role: Option<String>,
    pub disabled: Option<bool>,
    #[serde(default)]
    pub unlock: bool,
    pub password: Option<String>,
}

/// `PATCH /api/admin/moderators/{moderator}`. Disabling (or a new password)
/// ends the account's sessions. Admins cannot demote or disable themselves.
pub async fn update(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateModerator>,
) -> Result<Json<ModeratorInfo>, ApiError> {
    let inner = &state.inner;
    let role =
        match &req.role {
            Some(r) => Some(parse_role(r).ok_or_else(|| {
                ApiError::bad_request("bad_role", "role must be moderator, senior or admin")
            })?),
            None => None,
        };
    if id == me.id && (role.is_some_and(|r| r < me.role) || req.disabled == Some(true)) {
        return Err(ApiError::bad_request(
            "self_change",
            "you cannot demote or disable your own account (ask another admin)",
        ));
    }
    if let Some(p) = &req.password {
        check_password(p)?;
    }
    let hash = match req.password.clone() {
        Some(p) => Some(hash_blocking(&state, p).await?),
        None => None,
    };
    if inner.store.moderator_by_id(&id).await?.is_none() {
        return Err(ApiError::not_found("no such moderator"));
    }
    inner
        .store
        .update_moderator(&id, role.map(role_str), req.disabled, req.unlock, hash.as_deref())
        .await?;
    if req.disabled == Some(true) || hash.is_some() {
        inner.store.revoke_all_sessions(&id, now_secs() as i64).await?;
    }
    super::audit(
        inner,
        &me.email,
        "moderator_update",
        "moderator",
        &id,
        serde_json::json!({
            "role": role.map(role_str),
            "disabled": req.disabled,
            "unlock": req.unlock,
            "password_reset": hash.is_some(),
        }),
    )
    .await?;
    let info = inner
        .store
        .moderator_by_id(&id)
        .await?
        .ok_or_else(ApiError::internal)?;
    Ok(Json(info))
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SettingsView {
    pub settings: Settings,
    pub defaults: Settings,
}

/// `GET /api/admin/settings`.
pub async fn get_settings(
    State(state): State<AppState>,
    Extension(_me): Extension<Me>,
) -> Result<Json<SettingsView>, ApiError> {
    let inner = &state.inner;
    let stored = inner.store.settings().await?;
    Ok(Json(SettingsView {
        settings: Settings::from_stored(&inner.config.admin, &stored),
        defaults: Settings::defaults(&inner.config.admin),
    }))
}

#[derive(Debug, Deserialize, Serialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSettings {
    pub retention_dismissed_days: Option<u64>,
    pub retention_actioned_days: Option<u64>,
    pub wall_keyframe_interval_ms: Option<u64>,
}

/// `PUT /api/admin/settings`: changes some settings (the others stay).
pub async fn put_settings(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiJson(req): ApiJson<PutSettings>,
) -> Result<Json<SettingsView>, ApiError> {
    let inner = &state.inner;
    let now = now_secs() as i64;
    let checks: [(&str, Option<u64>, std::ops::RangeInclusive<u64>); 3] = [
        ("retention_dismissed_days", req.retention_dismissed_days, 1..=3650),
        ("retention_actioned_days", req.retention_actioned_days, 1..=3650),
        (
            "wall_keyframe_interval_ms",
            req.wall_keyframe_interval_ms,
            500..=60_000,
        ),
    ];
    for (key, v, range) in &checks {
        if let Some(v) = v {
            if !range.contains(v) {
                return Err(ApiError::bad_request(
                    "bad_setting",
                    format!("{key} must be {}..={}", range.start(), range.end()),
                ));
            }
        }
    }
    for (key, v, _) in &checks {
        if let Some(v) = v {
            inner
                .store
                .put_setting(key, &v.to_string(), &me.email, now)
                .await?;
        }
    }
    *inner.admin.settings.lock() = None;
    super::audit(
        inner,
        &me.email,
        "settings_update",
        "settings",
        "admin",
        serde_json::to_value(&req).unwrap_or_default(),
    )
    .await?;
    get_settings(State(state.clone()), Extension(me)).await
}

/// `POST /api/admin/retention/run`: runs the retention job now.
pub async fn run_retention(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
) -> Result<Json<RetentionCounts>, ApiError> {
    let inner = &state.inner;
    let counts = super::retention::run_job(inner)
        .await
        .ok_or_else(ApiError::internal)?;
    super::audit(
        inner,
        &me.email,
        "retention_run",
        "settings",
        "retention",
        serde_json::to_value(counts).unwrap_or_default(),
    )
    .await?;
    Ok(Json(counts))
}
