//! The audit log: every moderator action and every evidence view (who,
//! what, when, target), append-only in the database (triggers refuse
//! updates and deletes), filterable, exportable as CSV.

use super::csv;
use super::db::{AuditEntry, AuditFilter};
use super::{ApiQuery, Me};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Substring of the moderator's email.
    pub actor: Option<String>,
    /// Exact action, e.g. `ban_create`, `view_report`, `appeal_decide`.
    pub action: Option<String>,
    /// A target id (report, ban, appeal, pairing…) or kind.
    pub target: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Page backwards: entries with a smaller id.
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before_id` for the next (older) page; `None` at the end.
    pub next_before_id: Option<i64>,
}

fn filter(q: AuditQuery, max: i64) -> Result<AuditFilter, ApiError> {
    for s in [&q.actor, &q.action, &q.target].into_iter().flatten() {
        if s.len() > 200 {
            return Err(ApiError::bad_request("bad_query", "filter text too long"));
        }
    }
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    Ok(AuditFilter {
        actor: nonempty(q.actor),
        action: nonempty(q.action),
        target: nonempty(q.target),
        since: q.since,
        until: q.until,
        before_id: q.before_id,
        limit: q.limit.unwrap_or(100).clamp(1, max),
    })
}

/// `GET /api/admin/audit`.
pub async fn list(
    State(state): State<AppState>,
    Extension(_me): Extension<Me>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let f = filter(q, 500)?;
    let entries = state.inner.store.audit_query(&f).await?;
    let next_before_id = if entries.len() as i64 == f.limit {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_before_id,
    }))
}

/// `GET /api/admin/audit/export`: the filtered log as CSV (the export itself is logged).
pub async fn export(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let mut f = filter(q, 100_000)?;
    f.limit = f.limit.max(100_000);
    let entries = inner.store.audit_query(&f).await?;
    let mut out = String::new();
    csv::write_row(
        &mut out,
        &[
            "id",
            "at",
            "actor",
            "action",
            "target_kind",
            "target_id",
            "details",
        ],
    );
    for e in &entries {
        csv::write_row(
            &mut out,
            &[
                &e.id.to_string(),
                &csv::time(Some(e.at)),
                &e.actor,
                &e.action,
                &e.target_kind,
                &e.target_id,
                &e.details.to_string(),
            ],
        );
    }
    super::audit(
        inner,
        &me.email,
        "audit_export",
        "audit",
        "*",
        serde_json::json!({ "count": entries.len(), "actor": f.actor, "action": f.action, "target": f.target }),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"duet-audit.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}
