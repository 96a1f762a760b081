//! Appeals. A refused visitor's [`BanNotice`] carries an appeal token (its
//! own audience, `duet-appeal`, signed with the moderation key) that allows
//! one appeal of that ban (`POST /api/appeals`, text ≤ 1 KiB); a senior
//! moderator other than the one who banned decides (uphold or lift); the
//! visitor sees the outcome in the notice on their next visit (`upheld`), or
//! simply gets in (`lifted`).

use super::db::{AppealRow, BanRow, ReportItem};
use super::{ApiQuery, Me};
use crate::api::{ApiJson, ClientIp};
use crate::error::ApiError;
use crate::store::Ban;
use crate::{now_secs, AppState, Inner, SignalingError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use proto::signal::BanNotice;
use proto::token::{Audience, ModeratorRole, TokenError};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Audience of an appeal token.
pub const AUD_APPEAL: &str = "duet-appeal";
/// Longest appeal text, in bytes.
pub const MAX_APPEAL_BYTES: usize = 1024;

/// Claims of an appeal token: the ban it allows appealing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AppealClaims {
    /// Ban id.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
}

impl Audience for AppealClaims {
    const AUDIENCE: &'static str = AUD_APPEAL;
}

/// A token for one appeal of `ban` (valid while the ban lasts, at most
/// `appeal_token_ttl`).
pub(crate) fn appeal_token(inner: &Inner, ban: &Ban) -> Option<String> {
    let now = now_secs();
    let max = now + inner.config.admin.appeal_token_ttl.as_secs();
    let exp = ban.expires_at.map(|e| (e.max(0) as u64).min(max)).unwrap_or(max);
    if exp <= now {
        return None;
    }
    inner
        .admin
        .appeal_key
        .mint(&AppealClaims {
            sub: ban.id.clone(),
            aud: AUD_APPEAL.into(),
            exp,
            iat: now,
        })
        .ok()
}

/// What a refused visitor is told about `ban`.
pub(crate) async fn notice(inner: &Inner, ban: &Ban) -> Result<BanNotice, SignalingError> {
    let appeal_status = inner.store.appeal_status(&ban.id).await?;
    let can_appeal = appeal_status.is_none();
    Ok(BanNotice {
        ban_id: ban.id.clone(),
        reason: ban.reason.clone(),
        expires_at: ban.expires_at.map(|e| e.max(0) as u64),
        can_appeal,
        appeal_token: if can_appeal {
            appeal_token(inner, ban)
        } else {
            None
        },
        appeal_status,
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppealRequest {
    pub appeal_token: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AppealCreated {
    pub appeal_id: String,
    pub status: String,
}

fn conflict(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// `POST /api/appeals` (the visitor's, no moderator token).
pub async fn create(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<AppealRequest>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let ip_key = ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
    if let Err(wait) = inner.admin.appeal_ip.check(&ip_key, Instant::now()) {
        inner.metrics.rate_limited.with_label_values(&["appeal"]).inc();
        return Err(ApiError::rate_limited(wait));
    }
    let text: String = req
        .text
        .trim()
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect();
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "empty_text",
            "write why the ban should be lifted",
        ));
    }
    if text.len() > MAX_APPEAL_BYTES {
        return Err(ApiError::bad_request(
            "text_too_long",
            format!("an appeal is limited to {MAX_APPEAL_BYTES} bytes"),
        ));
    }
    if req.appeal_token.len() > 4096 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "appeal token invalid",
        ));
    }
    let claims: AppealClaims = inner.admin.appeal_key.verify(&req.appeal_token).map_err(|e| {
        inner.metrics.bad_input.with_label_values(&["bad_token"]).inc();
        match e {
            TokenError::Expired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "this appeal link expired; reload the page",
            ),
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "appeal token invalid"),
        }
    })?;
    let now = now_secs() as i64;
    let ban = inner
        .store
        .ban_by_id(&claims.sub, now)
        .await?
        .ok_or_else(|| ApiError::not_found("no such ban"))?;
    if ban.lifted_at.is_some() {
        return Err(conflict("ban_lifted", "this ban was lifted already"));
    }
    if !ban.active_at(now) {
        return Err(conflict("ban_expired", "this ban has expired"));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    if !inner.store.insert_appeal(&id, &ban.id, &text, now).await? {
        return Err(conflict(
            "already_appealed",
            "this ban was appealed already (once per ban)",
        ));
    }
    tracing::info!(ban = %ban.id, "appeal received");
    Ok((
        StatusCode::CREATED,
        Json(AppealCreated {
            appeal_id: id,
            status: "pending".into(),
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (default), `upheld`, `lifted` or `all`.
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AppealView {
    #[serde(flatten)]
    pub appeal: AppealRow,
    pub ban: Option<BanRow>,
    /// Whether the asking moderator may decide it.
    pub can_decide: bool,
    /// Why not, if not.
    pub cannot_decide_because: Option<String>,
    /// The same as a code (`already_decided`, `needs_senior`, `own_ban`),
    /// for the page to say in its language.
    pub cannot_decide_code: Option<&'static str>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AppealList {
    pub appeals: Vec<AppealView>,
    pub total: i64,
}

/// Why a moderator may not decide an appeal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Undecidable {
    /// It is not pending any more (its status).
    AlreadyDecided(String),
    /// Appeals are for seniors and admins.
    NeedsSenior,
    /// The moderator made the ban.
    OwnBan,
}

impl Undecidable {
    fn code(&self) -> &'static str {
        match self {
            Undecidable::AlreadyDecided(_) => "already_decided",
            Undecidable::NeedsSenior => "needs_senior",
            Undecidable::OwnBan => "own_ban",
        }
    }

    fn message(&self) -> String {
        match self {
            Undecidable::AlreadyDecided(status) => format!("already decided ({status})"),
            Undecidable::NeedsSenior => "appeals are decided by senior moderators".into(),
            Undecidable::OwnBan => "you made this ban: another moderator decides its appeal".into(),
        }
    }

    fn into_error(self) -> ApiError {
        let message = self.message();
        match self {
            Undecidable::AlreadyDecided(_) => conflict("already_decided", &message),
            Undecidable::OwnBan => ApiError::new(StatusCode::FORBIDDEN, "own_ban", message),
            Undecidable::NeedsSenior => super::auth::forbidden(message),
        }
    }
}

fn decidable(me: &Me, a: &AppealRow, ban: Option<&BanRow>) -> Result<(), Undecidable> {
    if a.status != "pending" {
        return Err(Undecidable::AlreadyDecided(a.status.clone()));
    }
    if !me.at_least(ModeratorRole::Senior) {
        return Err(Undecidable::NeedsSenior);
    }
    if ban.is_some_and(|b| b.created_by == me.email) {
        return Err(Undecidable::OwnBan);
    }
    Ok(())
}

async fn view(inner: &Inner, me: &Me, a: AppealRow) -> Result<AppealView, ApiError> {
    let ban = inner.store.ban_by_id(&a.ban_id, now_secs() as i64).await?;
    let why = decidable(me, &a, ban.as_ref()).err();
    Ok(AppealView {
        can_decide: why.is_none(),
        cannot_decide_because: why.as_ref().map(Undecidable::message),
        cannot_decide_code: why.as_ref().map(Undecidable::code),
        appeal: a,
        ban,
    })
}

/// `GET /api/admin/appeals`.
pub async fn list(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<AppealList>, ApiError> {
    let inner = &state.inner;
    let status = q.status.unwrap_or_else(|| "pending".into());
    if !["pending", "upheld", "lifted", "all"].contains(&status.as_str()) {
        return Err(ApiError::bad_request(
            "bad_status",
            "status must be pending, upheld, lifted or all",
        ));
    }
    let (rows, total) = inner
        .store
        .list_appeals(
            &status,
            q.limit.unwrap_or(50).clamp(1, 200),
            q.offset.unwrap_or(0).max(0),
        )
        .await?;
    let mut appeals = Vec::with_capacity(rows.len());
    for a in rows {
        appeals.push(view(inner, &me, a).await?);
    }
    Ok(Json(AppealList { appeals, total }))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AppealDetail {
    #[serde(flatten)]
    pub view: AppealView,
    /// The report the ban came from, if any.
    pub report: Option<ReportItem>,
}

/// `GET /api/admin/appeals/{appeal}` (an evidence view, recorded).
pub async fn detail(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(id): Path<String>,
) -> Result<Json<AppealDetail>, ApiError> {
    let inner = &state.inner;
    let a = inner
        .store
        .appeal_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such appeal"))?;
    let v = view(inner, &me, a).await?;
    let report = match v.ban.as_ref().and_then(|b| b.report_id.clone()) {
        Some(rid) => inner.store.report_full(&rid).await?.map(|r| r.item),
        None => None,
    };
    super::audit(
        inner,
        &me.email,
        "view_appeal",
        "appeal",
        &id,
        serde_json::json!({ "ban_id": v.appeal.ban_id }),
    )
    .await?;
    Ok(Json(AppealDetail { view: v, report }))
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `uphold` (the ban stays) or `lift`.
    pub decision: String,
    /// Why (kept with the appeal and in the audit log).
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decided {
    pub appeal_id: String,
    pub ban_id: String,
    pub status: String,
}

/// `POST /api/admin/appeals/{appeal}/decision` (senior and up; never on
/// one's own ban).
pub async fn decide(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> Result<Json<Decided>, ApiError> {
    let inner = &state.inner;
    let status = match req.decision.as_str() {
        "uphold" => "upheld",
        "lift" => "lifted",
        _ => {
            return Err(ApiError::bad_request(
                "bad_decision",
                "decision must be uphold or lift",
            ))
        }
    };
    let reason = super::templates::clean_statement(&req.reason)
        .ok_or_else(|| ApiError::bad_request("bad_reason", "give a reason (1-500 characters)"))?;
    let a = inner
        .store
        .appeal_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such appeal"))?;
    let now = now_secs() as i64;
    let ban = inner.store.ban_by_id(&a.ban_id, now).await?;
    if let Err(why) = decidable(&me, &a, ban.as_ref()) {
        return Err(why.into_error());
    }
    if !inner
        .store
        .decide_appeal(&id, &a.ban_id, status, &me.email, &reason, now)
        .await?
    {
        return Err(conflict("already_decided", "this appeal was decided meanwhile"));
    }
    super::audit(
        inner,
        &me.email,
        "appeal_decide",
        "appeal",
        &id,
        serde_json::json!({
            "decision": status,
            "reason": reason,
            "ban_id": a.ban_id,
            "banned_by": ban.as_ref().map(|b| b.created_by.clone()),
        }),
    )
    .await?;
    Ok(Json(Decided {
        appeal_id: id,
        ban_id: a.ban_id,
        status: status.into(),
    }))
}
