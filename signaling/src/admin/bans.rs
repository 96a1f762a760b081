//! The block list: bans by device, IP address and CIDR range, with expiry
//! and reason; search; bulk unban; CSV export and import. Temporary bans are
//! any moderator's; permanent ones (and lifting them) need a senior.

use super::csv;
use super::db::{BanFilter, BanInsert, BanRow};
use super::templates::clean_statement;
use super::{ApiQuery, Me};
use crate::api::ApiJson;
use crate::error::ApiError;
use crate::{now_secs, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use proto::token::ModeratorRole;
use proto::DeviceId;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Longest temporary ban.
pub const MAX_BAN_SECS: u64 = 365 * 86_400;
/// Shortest ban.
pub const MIN_BAN_SECS: u64 = 60;
/// Most bans in one import or bulk unban.
pub const MAX_BULK: usize = 10_000;
/// Widest ranges a non-admin may ban (an IPv4 /16, an IPv6 /32).
const MIN_PREFIX_V4: u8 = 16;
const MIN_PREFIX_V6: u8 = 32;

/// Checks and canonicalises a ban target.
pub fn ban_value(kind: &str, value: &str, me: &Me) -> Result<String, String> {
    let value = value.trim();
    match kind {
        "device" => DeviceId::parse(value)
            .map(|d| d.to_string())
            .ok_or_else(|| "a device id is 8-64 characters of A-Z a-z 0-9 _ -".into()),
        "ip" => value
            .parse::<IpAddr>()
            .map(|ip| crate::store::canonical_ip(ip).to_string())
            .map_err(|_| format!("`{value}` is not an IP address")),
        "cidr" => {
            let net = value
                .parse::<ipnet::IpNet>()
                .map_err(|_| format!("`{value}` is not a CIDR range like 203.0.113.0/24"))?
                .trunc();
            let wide = match net {
                ipnet::IpNet::V4(n) => n.prefix_len() < MIN_PREFIX_V4,
                ipnet::IpNet::V6(n) => n.prefix_len() < MIN_PREFIX_V6,
            };
            if wide && !me.at_least(ModeratorRole::Admin) {
                return Err(format!(
                    "ranges wider than /{MIN_PREFIX_V4} (IPv4) or /{MIN_PREFIX_V6} (IPv6) need an admin"
                ));
            }
            Ok(net.to_string())
        }
        _ => Err("kind must be device, ip or cidr".into()),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub q: Option<String>,
    pub kind: Option<String>,
    /// `active` (default), `expired`, `lifted` or `all`.
    pub state: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BanList {
    pub bans: Vec<BanRow>,
    pub total: i64,
}

fn filter(q: ListQuery, now: i64, max: i64) -> Result<BanFilter, ApiError> {
    let state = q.state.unwrap_or_else(|| "active".into());
    if !["active", "expired", "lifted", "all"].contains(&state.as_str()) {
        return Err(ApiError::bad_request(
            "bad_state",
            "state must be active, expired, lifted or all",
        ));
    }
    if let Some(k) = &q.kind {
        if !["device", "ip", "cidr"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                "bad_kind",
                "kind must be device, ip or cidr",
            ));
        }
    }
    if q.q.as_ref().is_some_and(|s| s.len() > 200) {
        return Err(ApiError::bad_request("bad_query", "search text too long"));
    }
    Ok(BanFilter {
        q: q.q.filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_owned()),
        kind: q.kind,
        state,
        now,
        limit: q.limit.unwrap_or(100).clamp(1, max),
        offset: q.offset.unwrap_or(0).max(0),
        ..Default::default()
    })
}

/// `GET /api/admin/bans`.
pub async fn list(
    State(state): State<AppState>,
    Extension(_me): Extension<Me>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<BanList>, ApiError> {
    let f = filter(q, now_secs() as i64, 500)?;
    let (bans, total) = state.inner.store.list_bans(&f).await?;
    Ok(Json(BanList { bans, total }))
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBan {
    /// `device`, `ip` or `cidr`.
    pub kind: String,
    pub value: String,
    /// The written statement of reasons shown to the refused visitor.
    pub reason: String,
    #[serde(default)]
    pub template: Option<String>,
    /// Length of a temporary ban; absent or `null`: permanent (senior).
    #[serde(default)]
    pub duration_secs: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BanCreated {
    pub ban_id: String,
    pub expires_at: Option<i64>,
}

/// `POST /api/admin/bans`.
pub async fn create(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiJson(req): ApiJson<CreateBan>,
) -> Result<(StatusCode, Json<BanCreated>), ApiError> {
    let inner = &state.inner;
    let value = ban_value(&req.kind, &req.value, &me).map_err(|m| ApiError::bad_request("bad_value", m))?;
    let reason = clean_statement(&req.reason)
        .ok_or_else(|| ApiError::bad_request("bad_reason", "a reason (1-500 characters) is required"))?;
    if let Some(t) = &req.template {
        if !super::templates::is_template(t) {
            return Err(ApiError::bad_request("bad_template", "unknown reason template"));
        }
    }
    let now = now_secs() as i64;
    let expires_at = match req.duration_secs {
        None => {
            if !me.at_least(ModeratorRole::Senior) {
                return Err(super::auth::forbidden("permanent bans need a senior moderator"));
            }
            None
        }
        Some(s) if (MIN_BAN_SECS..=MAX_BAN_SECS).contains(&s) => Some(now + s as i64),
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_duration",
                format!("duration_secs must be {MIN_BAN_SECS}..={MAX_BAN_SECS}, or null for permanent"),
            ))
        }
    };
    let ban = BanInsert {
        id: uuid::Uuid::new_v4().simple().to_string(),
        kind: req.kind.clone(),
        value: value.clone(),
        reason: reason.clone(),
        template: req.template.clone(),
        created_by: me.email.clone(),
        created_at: now,
        expires_at,
        report_id: None,
    };
    inner.store.insert_ban_row(&ban).await?;
    super::audit(
        inner,
        &me.email,
        "ban_create",
        "ban",
        &ban.id,
        serde_json::json!({ "kind": req.kind, "value": value, "reason": reason, "expires_at": expires_at }),
    )
    .await?;
    if ban.kind == "device" {
        let stored = crate::store::Ban {
            id: ban.id.clone(),
            kind: ban.kind.clone(),
            value: ban.value.clone(),
            reason: ban.reason.clone(),
            created_by: ban.created_by.clone(),
            created_at: now,
            expires_at,
        };
        super::reports::enforce_device_ban(inner, &value, &stored, &[]).await;
    }
    Ok((
        StatusCode::CREATED,
        Json(BanCreated {
            ban_id: ban.id,
            expires_at,
        }),
    ))
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnbanRequest {
    pub ids: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Skipped {
    pub id: String,
    /// Why, as a code (`no_such_ban`, `already_lifted`, `needs_senior`) for
    /// the page to say in its language.
    pub code: String,
    /// Why, in English.
    pub why: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Unbanned {
    pub lifted: usize,
    pub skipped: Vec<Skipped>,
}

/// `POST /api/admin/bans/unban`: lifts several bans.
pub async fn unban(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiJson(req): ApiJson<UnbanRequest>,
) -> Result<Json<Unbanned>, ApiError> {
    let inner = &state.inner;
    if req.ids.is_empty() || req.ids.len() > MAX_BULK {
        return Err(ApiError::bad_request(
            "bad_ids",
            format!("give 1..={MAX_BULK} ban ids"),
        ));
    }
    let reason = clean_statement(&req.reason)
        .ok_or_else(|| ApiError::bad_request("bad_reason", "a reason (1-500 characters) is required"))?;
    let now = now_secs() as i64;
    let mut lifted = 0;
    let mut skipped = Vec::new();
    for chunk in req.ids.chunks(500) {
        let (bans, _) = inner
            .store
            .list_bans(&BanFilter {
                ids: Some(chunk.iter().filter(|i| i.len() <= 64).cloned().collect()),
                state: "all".into(),
                now,
                limit: 500,
                ..Default::default()
            })
            .await?;
        for id in chunk {
            let Some(b) = bans.iter().find(|b| &b.id == id) else {
                skipped.push(Skipped {
                    id: id.chars().take(64).collect(),
                    code: "no_such_ban".into(),
                    why: "no such ban".into(),
                });
                continue;
            };
            if b.lifted_at.is_some() {
                skipped.push(Skipped {
                    id: id.clone(),
                    code: "already_lifted".into(),
                    why: "already lifted".into(),
                });
                continue;
            }
            if b.expires_at.is_none() && !me.at_least(ModeratorRole::Senior) {
                skipped.push(Skipped {
                    id: id.clone(),
                    code: "needs_senior".into(),
                    why: "lifting a permanent ban needs a senior moderator".into(),
                });
                continue;
            }
            if inner.store.lift_ban(id, &me.email, &reason, now).await? {
                lifted += 1;
                super::audit(
                    inner,
                    &me.email,
                    "ban_lift",
                    "ban",
                    id,
                    serde_json::json!({ "kind": b.kind, "value": b.value, "reason": reason }),
                )
                .await?;
            }
        }
    }
    Ok(Json(Unbanned { lifted, skipped }))
}

const EXPORT_COLUMNS: [&str; 11] = [
    "id",
    "kind",
    "value",
    "reason",
    "created_by",
    "created_at",
    "expires_at",
    "lifted_at",
    "lifted_by",
    "report_id",
    "appeal_status",
];

/// `GET /api/admin/bans/export`: the (filtered) block list as CSV.
pub async fn export(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let mut f = filter(q, now_secs() as i64, 100_000)?;
    f.limit = f.limit.max(100_000);
    let (bans, _) = inner.store.list_bans(&f).await?;
    let mut out = String::new();
    csv::write_row(&mut out, &EXPORT_COLUMNS);
    for b in &bans {
        csv::write_row(
            &mut out,
            &[
                &b.id,
                &b.kind,
                &b.value,
                &b.reason,
                &b.created_by,
                &csv::time(Some(b.created_at)),
                &csv::time(b.expires_at),
                &csv::time(b.lifted_at),
                b.lifted_by.as_deref().unwrap_or(""),
                b.report_id.as_deref().unwrap_or(""),
                b.appeal_status.as_deref().unwrap_or(""),
            ],
        );
    }
    super::audit(
        inner,
        &me.email,
        "bans_export",
        "ban",
        "*",
        serde_json::json!({ "count": bans.len(), "state": f.state }),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"duet-bans.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Imported {
    pub imported: usize,
    /// Rows left out: lifted or already expired in the file.
    pub skipped: usize,
}

/// `POST /api/admin/bans/import`: CSV with a header row naming at least
/// `kind`, `value`, `reason` (and optionally `expires_at`: RFC 3339 or Unix
/// seconds, empty = permanent; `lifted_at`: rows with it are skipped). An
/// export imports as is. All rows or none.
pub async fn import(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Imported>, ApiError> {
    let inner = &state.inner;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the CSV is over 1 MiB",
            )
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(ctype.starts_with("text/csv") || ctype.starts_with("text/plain")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the CSV with Content-Type: text/csv",
        ));
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("bad_csv", "the CSV is not UTF-8"))?;
    let rows = csv::parse(text).map_err(|e| ApiError::bad_request("bad_csv", e.to_string()))?;
    let mut rows = rows.into_iter();
    let Some((_, header_row)) = rows.next() else {
        return Err(ApiError::bad_request("bad_csv", "empty file"));
    };
    let col = |name: &str| {
        header_row
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(kind_c), Some(value_c), Some(reason_c)) = (col("kind"), col("value"), col("reason")) else {
        return Err(ApiError::bad_request(
            "bad_csv",
            "the header row must name the columns kind, value and reason (expires_at optional)",
        ));
    };
    let (expires_c, lifted_c) = (col("expires_at"), col("lifted_at"));
    let now = now_secs() as i64;
    let mut bans = Vec::new();
    let mut errors = Vec::new();
    let mut skipped = 0;
    for (line, row) in rows {
        let cell = |c: usize| row.get(c).map(|s| s.trim()).unwrap_or("");
        let cell_opt = |c: Option<usize>| c.map(cell).unwrap_or("");
        if !cell_opt(lifted_c).is_empty() {
            skipped += 1;
            continue;
        }
        let expires_at = match csv::parse_time(cell_opt(expires_c)) {
            Ok(e) => e,
            Err(m) => {
                errors.push(format!("line {line}: {m}"));
                continue;
            }
        };
        if expires_at.is_some_and(|e| e <= now) {
            skipped += 1;
            continue;
        }
        if expires_at.is_some_and(|e| e > now + MAX_BAN_SECS as i64) {
            errors.push(format!("line {line}: expiry more than a year away"));
            continue;
        }
        if expires_at.is_none() && !me.at_least(ModeratorRole::Senior) {
            errors.push(format!("line {line}: permanent bans need a senior moderator"));
            continue;
        }
        let kind = cell(kind_c).to_lowercase();
        let value = match ban_value(&kind, cell(value_c), &me) {
            Ok(v) => v,
            Err(m) => {
                errors.push(format!("line {line}: {m}"));
                continue;
            }
        };
        let Some(reason) = clean_statement(cell(reason_c)) else {
            errors.push(format!("line {line}: a reason (1-500 characters) is required"));
            continue;
        };
        bans.push(BanInsert {
            id: uuid::Uuid::new_v4().simple().to_string(),
            kind,
            value,
            reason,
            template: None,
            created_by: me.email.clone(),
            created_at: now,
            expires_at,
            report_id: None,
        });
        if bans.len() > MAX_BULK {
            return Err(ApiError::bad_request(
                "too_many_rows",
                format!("at most {MAX_BULK} bans per import"),
            ));
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        let mut msg = errors.into_iter().take(5).collect::<Vec<_>>().join("; ");
        if n > 5 {
            msg.push_str(&format!("; and {} more", n - 5));
        }
        return Err(ApiError::bad_request(
            "bad_rows",
            format!("nothing imported: {msg}"),
        ));
    }
    inner.store.insert_bans(&bans).await?;
    super::audit(
        inner,
        &me.email,
        "ban_import",
        "ban",
        "*",
        serde_json::json!({ "count": bans.len(), "skipped": skipped }),
    )
    .await?;
    Ok(Json(Imported {
        imported: bans.len(),
        skipped,
    }))
}
