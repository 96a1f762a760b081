//! The report queue: most severe (then newest) first, each report with its
//! evidence (snapshots, transcript, session details, the reported device's
//! history), and the actions: dismiss, warn, temporary ban (preset
//! durations), permanent ban (senior and up), each with a reason template
//! that becomes the written statement of reasons.

use super::db::{BanInsert, BanRow, ReportFilter, ReportFull, ReportItem, SnapshotMeta};
use super::templates::{clean_statement, is_preset_duration, is_template};
use super::{ApiQuery, Me};
use crate::api::ApiJson;
use crate::error::ApiError;
use crate::{now_secs, AppState, Inner};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use proto::signal::{PartnerLeftReason, ServerMsg};
use proto::token::ModeratorRole;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open` (default), `dismissed`, `warned`, `banned`, `resolved`, `all`.
    pub status: Option<String>,
    /// `severity` (default: most severe, then newest) or `newest`.
    pub sort: Option<String>,
    pub device: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReportList {
    pub reports: Vec<ReportItem>,
    pub total: i64,
}

const STATUSES: [&str; 6] = ["open", "dismissed", "warned", "banned", "resolved", "all"];

/// `GET /api/admin/reports`.
pub async fn list(
    State(state): State<AppState>,
    Extension(_me): Extension<Me>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ReportList>, ApiError> {
    let status = q.status.unwrap_or_else(|| "open".into());
    if !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::bad_request(
            "bad_status",
            "status must be open, dismissed, warned, banned, resolved or all",
        ));
    }
    let newest = match q.sort.as_deref() {
        None | Some("severity") => false,
        Some("newest") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_sort",
                "sort must be severity or newest",
            ))
        }
    };
    if q.device.as_ref().is_some_and(|d| d.len() > 64) {
        return Err(ApiError::bad_request("bad_device", "device id too long"));
    }
    let (reports, total) = state
        .inner
        .store
        .list_reports(&ReportFilter {
            status,
            device: q.device,
            newest,
            limit: q.limit.unwrap_or(50).clamp(1, 200),
            offset: q.offset.unwrap_or(0).max(0),
        })
        .await?;
    Ok(Json(ReportList { reports, total }))
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceHistory {
    /// Other reports against the reported device, newest first.
    pub reports: Vec<ReportItem>,
    /// Bans of the reported device, newest first.
    pub bans: Vec<BanRow>,
    pub warnings: usize,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReportDetail {
    pub report: ReportFull,
    /// Chat lines (`at_ms`, `from` a/b, `device`, `text`); empty once deleted.
    pub transcript: serde_json::Value,
    pub snapshots: Vec<SnapshotMeta>,
    pub history: DeviceHistory,
    /// Bans made from this report.
    pub bans: Vec<BanRow>,
    /// Samples automatic screening flagged of the reported side of this
    /// pairing (model, category, score), strongest first; empty when none.
    pub screening: Vec<crate::screening::db::SampleInfo>,
}

async fn load(inner: &Inner, id: &str) -> Result<ReportFull, ApiError> {
    if id.len() > 64 {
        return Err(ApiError::not_found("no such report"));
    }
    inner
        .store
        .report_full(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such report"))
}

/// `GET /api/admin/reports/{report}`: the report with its evidence (an
/// evidence view, recorded).
pub async fn detail(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(id): Path<String>,
) -> Result<Json<ReportDetail>, ApiError> {
    let inner = &state.inner;
    let report = load(inner, &id).await?;
    let snapshots = inner.store.report_snapshots(&id).await?;
    let (reports, bans) = inner
        .store
        .device_history(&report.item.reported_device, &id)
        .await?;
    let warnings = reports.iter().filter(|r| r.status == "warned").count();
    let from_this: Vec<BanRow> = bans
        .iter()
        .filter(|b| b.report_id.as_deref() == Some(id.as_str()))
        .cloned()
        .collect();
    let transcript = serde_json::from_str(&report.transcript).unwrap_or(serde_json::json!([]));
    let screening = inner
        .store
        .report_screening(&report.item.pairing_id, &report.reported_participant)
        .await?;
    super::audit(
        inner,
        &me.email,
        "view_report",
        "report",
        &id,
        serde_json::json!({ "device": report.item.reported_device }),
    )
    .await?;
    Ok(Json(ReportDetail {
        report,
        transcript,
        snapshots,
        history: DeviceHistory {
            reports,
            bans,
            warnings,
        },
        bans: from_this,
        screening,
    }))
}

/// `GET /api/admin/reports/{report}/snapshots/{snapshot}`: a stored snapshot
/// (an evidence view, recorded).
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path((id, snap)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    if id.len() > 64 || snap.len() > 64 {
        return Err(ApiError::not_found("no such snapshot"));
    }
    let (ctype, data) = inner
        .store
        .report_snapshot_data(&id, &snap)
        .await?
        .ok_or_else(|| ApiError::not_found("no such snapshot (evidence may have been deleted)"))?;
    super::audit(
        inner,
        &me.email,
        "view_report_snapshot",
        "report",
        &id,
        serde_json::json!({ "snapshot": snap }),
    )
    .await?;
    let ctype = if ctype.starts_with("image/") {
        ctype
    } else {
        "application/octet-stream".into()
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        data,
    )
        .into_response())
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// `dismiss`, `warn`, `temporary_ban` or `permanent_ban` (senior and up).
    pub action: String,
    /// For `temporary_ban`: one of the preset durations.
    #[serde(default)]
    pub duration_secs: Option<u64>,
    /// A reason template id (see `GET /api/admin/templates`).
    pub template: String,
    /// The written statement of reasons (shown to a banned visitor);
    /// optional note for `dismiss`.
    #[serde(default)]
    pub statement: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActionDone {
    pub report_id: String,
    pub status: String,
    pub ban_id: Option<String>,
    pub expires_at: Option<i64>,
}

/// Takes a freshly banned device off the service now: its sessions known to
/// be open (`users`, e.g. the reported session) and any live call of the
/// device leave the queue and their call, and their pages are shown the
/// refusal (this replica also closes the socket). Every later session is
/// refused by the ban check anyway.
pub(crate) async fn enforce_device_ban(
    inner: &Inner,
    device: &str,
    ban: &crate::store::Ban,
    users: &[String],
) {
    let notice = match super::appeals::notice(inner, ban).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build a ban notice");
            return;
        }
    };
    let refusal = *crate::ApiError::banned(notice).body;
    let mut targets: Vec<String> = users.to_vec();
    match inner.live.current_pairings(super::wall::MAX_WALL * 4).await {
        Ok(pairings) => {
            for p in pairings {
                for side in [&p.a, &p.b] {
                    if side.device.as_str() == device && !targets.contains(&side.user) {
                        targets.push(side.user.clone());
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for the banned device's calls"),
    }
    for user in targets {
        if let Err(e) = inner.live.leave(&user).await {
            tracing::warn!(error = %e, "taking a banned visitor out of the queue failed");
        }
        if let Err(e) = inner.end_pairing(&user, PartnerLeftReason::Ended).await {
            tracing::warn!(error = %e, "ending a banned device's call failed");
        }
        inner
            .send_local_or_deliver(&user, ServerMsg::Error(refusal.clone()))
            .await;
        if let Some(c) = inner.conns.get(&user) {
            let _ = c.tx.try_send(crate::conns::Outbound::Close(4003, "banned"));
        }
    }
}

/// `POST /api/admin/reports/{report}/action`.
pub async fn action(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> Result<Json<ActionDone>, ApiError> {
    let inner = &state.inner;
    let report = load(inner, &id).await?;
    if report.item.status != "open" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_resolved",
            format!("this report was already resolved ({})", report.item.status),
        ));
    }
    if !is_template(&req.template) {
        return Err(ApiError::bad_request("bad_template", "unknown reason template"));
    }
    let now = now_secs() as i64;
    let statement = clean_statement(&req.statement);
    let (status, expires_at, action_name): (&str, Option<Option<i64>>, &'static str) =
        match req.action.as_str() {
            "dismiss" => ("dismissed", None, "report_dismiss"),
            "warn" => ("warned", None, "report_warn"),
            "temporary_ban" => {
                let secs = req
                    .duration_secs
                    .filter(|s| is_preset_duration(*s))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "bad_duration",
                            "a temporary ban needs one of the preset durations",
                        )
                    })?;
                ("banned", Some(Some(now + secs as i64)), "report_ban")
            }
            "permanent_ban" => {
                if !me.at_least(ModeratorRole::Senior) {
                    return Err(super::auth::forbidden("permanent bans need a senior moderator"));
                }
                ("banned", Some(None), "report_ban")
            }
            _ => {
                return Err(ApiError::bad_request(
                    "bad_action",
                    "action must be dismiss, warn, temporary_ban or permanent_ban",
                ))
            }
        };
    if status != "dismissed" && statement.is_none() {
        return Err(ApiError::bad_request(
            "bad_statement",
            format!(
                "a written statement of reasons (1-{} characters) is required",
                super::templates::MAX_STATEMENT_CHARS
            ),
        ));
    }
    if req.statement.chars().count() > super::templates::MAX_STATEMENT_CHARS {
        return Err(ApiError::bad_request("bad_statement", "statement too long"));
    }
    let resolution = statement.clone().unwrap_or_default();
    let ban = expires_at.map(|expires_at| BanInsert {
        id: uuid::Uuid::new_v4().simple().to_string(),
        kind: "device".into(),
        value: report.item.reported_device.clone(),
        reason: resolution.clone(),
        template: Some(req.template.clone()),
        created_by: me.email.clone(),
        created_at: now,
        expires_at,
        report_id: Some(id.clone()),
    });
    let done = inner
        .store
        .resolve_report(
            &id,
            status,
            &me.email,
            &resolution,
            &req.template,
            now,
            ban.as_ref(),
        )
        .await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_resolved",
            "this report was resolved meanwhile",
        ));
    }
    super::audit(
        inner,
        &me.email,
        action_name,
        "report",
        &id,
        serde_json::json!({
            "action": req.action,
            "template": req.template,
            "statement": resolution,
            "device": report.item.reported_device,
            "ban_id": ban.as_ref().map(|b| b.id.clone()),
            "expires_at": ban.as_ref().and_then(|b| b.expires_at),
        }),
    )
    .await?;
    if status == "warned" {
        // Still connected: the page shows it (as a status line).
        inner
            .send_local_or_deliver(
                &report.reported_session,
                ServerMsg::Error(proto::signal::ErrorBody {
                    code: "warning".into(),
                    message: format!("A moderator warned you: {resolution}"),
                    ban: None,
                }),
            )
            .await;
    }
    if let Some(b) = &ban {
        let stored = crate::store::Ban {
            id: b.id.clone(),
            kind: b.kind.clone(),
            value: b.value.clone(),
            reason: b.reason.clone(),
            created_by: b.created_by.clone(),
            created_at: b.created_at,
            expires_at: b.expires_at,
        };
        enforce_device_ban(
            inner,
            &b.value,
            &stored,
            std::slice::from_ref(&report.reported_session),
        )
        .await;
    }
    Ok(Json(ActionDone {
        report_id: id,
        status: status.into(),
        ban_id: ban.as_ref().map(|b| b.id.clone()),
        expires_at: ban.and_then(|b| b.expires_at),
    }))
}
