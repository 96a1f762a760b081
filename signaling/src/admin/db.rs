//! Moderation queries on the [`Store`] (same SQL for SQLite and PostgreSQL:
//! `$n` parameters, Unix-second integers, computed integers cast to BIGINT).

use crate::error::SignalingError;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// Runs `$body` with `$pool` bound to whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// Binds every [`P`] of `$params` to `$q`, in order.
macro_rules! bind_all {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params.iter() {
            q = match p {
                P::T(s) => q.bind(s.as_str()),
                P::I(i) => q.bind(*i),
            };
        }
        q
    }};
}

pub(crate) use {bind_all, on_pool};

// Statements run from more than one place: one text each.
/// `(jti, moderator_id, created_at, expires_at)`: a moderator session starts.
const SQL_INSERT_SESSION: &str =
    "INSERT INTO moderator_sessions (jti, moderator_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
/// `(jti, now)`: one session ends (a second revocation changes nothing).
const SQL_REVOKE_SESSION: &str =
    "UPDATE moderator_sessions SET revoked_at = $2 WHERE jti = $1 AND revoked_at IS NULL";
/// `(ban id, now, lifted_by, reason)`: a ban is lifted unless it already was.
const SQL_LIFT_BAN: &str =
    "UPDATE bans SET lifted_at = $2, lifted_by = $3, lift_reason = $4 WHERE id = $1 AND lifted_at IS NULL";

/// A query parameter.
#[derive(Clone, Debug)]
pub(crate) enum P {
    T(String),
    I(i64),
}

/// SQL text with numbered parameters, built piece by piece.
#[derive(Default, Debug)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<P>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            params: Vec::new(),
        }
    }
    /// Appends `sql` with `?` replaced by the next parameter's `$n`.
    pub fn push(&mut self, sql: &str, params: impl IntoIterator<Item = P>) -> &mut Self {
        let mut params = params.into_iter();
        for (i, part) in sql.split('?').enumerate() {
            if i > 0 {
                if let Some(p) = params.next() {
                    self.params.push(p);
                }
                self.text.push_str(&format!("${}", self.params.len()));
            }
            self.text.push_str(part);
        }
        self
    }
}

/// `AND …` conditions with `?` placeholders, applied to several queries.
#[derive(Clone, Debug, Default)]
pub(crate) struct Clauses(Vec<(String, Vec<P>)>);

impl Clauses {
    pub fn and(&mut self, sql: &str, params: impl IntoIterator<Item = P>) -> &mut Self {
        self.0.push((sql.to_owned(), params.into_iter().collect()));
        self
    }
}

impl Sql {
    /// Appends ` WHERE 1 = 1` and the clauses.
    pub fn filter(&mut self, c: &Clauses) -> &mut Self {
        self.push(" WHERE 1 = 1", []);
        for (sql, params) in &c.0 {
            self.push(sql, params.clone());
        }
        self
    }
}

fn opt_str<R: Row>(r: &R, col: &str) -> Result<Option<String>, sqlx::Error>
where
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    r.try_get::<Option<String>, _>(col)
}

// ------------------------------------------------------------------ moderators

/// What login needs of an account.
#[derive(Clone, Debug)]
pub(crate) struct LoginRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
    pub locked_until: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ModeratorInfo {
    pub id: String,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
}

/// A moderator session as the guard sees it.
#[derive(Clone, Debug)]
pub(crate) struct SessionRow {
    pub revoked_at: Option<i64>,
    pub expires_at: i64,
    pub email: String,
    pub role: String,
    pub disabled: bool,
}

impl Store {
    pub(crate) async fn login_row(&self, email: &str) -> Result<Option<LoginRow>, SignalingError> {
        on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT id, email, password_hash, role, disabled, locked_until FROM moderators WHERE email = $1",
            )
            .bind(email)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(r) => Some(LoginRow {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    password_hash: r.try_get("password_hash")?,
                    role: r.try_get("role")?,
                    disabled: r.try_get::<i64, _>("disabled")? != 0,
                    locked_until: r.try_get("locked_until")?,
                }),
                None => None,
            })
        })
    }

    /// Counts a wrong password; at `lock_after` in a row the account is
    /// locked until `lock_until` (and the count starts again). Returns
    /// whether this failure locked it.
    pub(crate) async fn login_failed(
        &self,
        id: &str,
        lock_after: i64,
        lock_until: i64,
    ) -> Result<bool, SignalingError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n: i64 = sqlx::query("SELECT failed_logins FROM moderators WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("failed_logins")?;
            let locks = n + 1 >= lock_after;
            if locks {
                sqlx::query("UPDATE moderators SET failed_logins = 0, locked_until = $2 WHERE id = $1")
                    .bind(id)
                    .bind(lock_until)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("UPDATE moderators SET failed_logins = $2 WHERE id = $1")
                    .bind(id)
                    .bind(n + 1)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(locks)
        })
    }

    /// A successful login: counters reset, a session (`jti`) recorded.
    pub(crate) async fn login_ok(
        &self,
        id: &str,
        jti: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(
                "UPDATE moderators SET failed_logins = 0, locked_until = NULL, last_login_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(SQL_INSERT_SESSION)
            .bind(jti)
            .bind(id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// A new session for a refreshed token; the old one is revoked.
    pub(crate) async fn rotate_session(
        &self,
        old_jti: &str,
        moderator_id: &str,
        jti: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(SQL_REVOKE_SESSION)
                .bind(old_jti)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(SQL_INSERT_SESSION)
            .bind(jti)
            .bind(moderator_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub(crate) async fn session_row(
        &self,
        jti: &str,
        moderator_id: &str,
    ) -> Result<Option<SessionRow>, SignalingError> {
        on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT s.revoked_at, s.expires_at, m.email, m.role, m.disabled FROM moderator_sessions s \
                 JOIN moderators m ON m.id = s.moderator_id WHERE s.jti = $1 AND m.id = $2",
            )
            .bind(jti)
            .bind(moderator_id)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(r) => Some(SessionRow {
                    revoked_at: r.try_get("revoked_at")?,
                    expires_at: r.try_get("expires_at")?,
                    email: r.try_get("email")?,
                    role: r.try_get("role")?,
                    disabled: r.try_get::<i64, _>("disabled")? != 0,
                }),
                None => None,
            })
        })
    }

    pub(crate) async fn revoke_session(&self, jti: &str, now: i64) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            sqlx::query(SQL_REVOKE_SESSION)
                .bind(jti)
                .bind(now)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    pub(crate) async fn revoke_all_sessions(
        &self,
        moderator_id: &str,
        now: i64,
    ) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            sqlx::query(
                "UPDATE moderator_sessions SET revoked_at = $2 WHERE moderator_id = $1 AND revoked_at IS NULL",
            )
            .bind(moderator_id)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Forgets sessions that expired before `before`; returns how many.
    pub(crate) async fn purge_sessions(&self, before: i64) -> Result<u64, SignalingError> {
        on_pool!(self, p => {
            Ok(sqlx::query("DELETE FROM moderator_sessions WHERE expires_at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected())
        })
    }

    pub async fn list_moderators(&self) -> Result<Vec<ModeratorInfo>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, email, role, disabled, created_at, last_login_at, failed_logins, locked_until \
                 FROM moderators ORDER BY email",
            )
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(ModeratorInfo {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    role: r.try_get("role")?,
                    disabled: r.try_get::<i64, _>("disabled")? != 0,
                    created_at: r.try_get("created_at")?,
                    last_login_at: r.try_get("last_login_at")?,
                    failed_logins: r.try_get("failed_logins")?,
                    locked_until: r.try_get("locked_until")?,
                });
            }
            Ok(out)
        })
    }

    pub(crate) async fn moderator_by_id(&self, id: &str) -> Result<Option<ModeratorInfo>, SignalingError> {
        Ok(self.list_moderators().await?.into_iter().find(|m| m.id == id))
    }

    /// Changes an account; `None` leaves a field alone.
    pub(crate) async fn update_moderator(
        &self,
        id: &str,
        role: Option<&str>,
        disabled: Option<bool>,
        unlock: bool,
        password_hash: Option<&str>,
    ) -> Result<bool, SignalingError> {
        let mut sql = Sql::new("UPDATE moderators SET id = id");
        if let Some(role) = role {
            sql.push(", role = ?", [P::T(role.into())]);
        }
        if let Some(d) = disabled {
            sql.push(", disabled = ?", [P::I(d as i64)]);
        }
        if unlock {
            sql.push(", failed_logins = 0, locked_until = NULL", []);
        }
        if let Some(h) = password_hash {
            sql.push(", password_hash = ?", [P::T(h.into())]);
        }
        sql.push(" WHERE id = ?", [P::T(id.into())]);
        on_pool!(self, p => {
            let q = bind_all!(sqlx::query(&sql.text), sql.params);
            Ok(q.execute(p).await?.rows_affected() == 1)
        })
    }
}

// ------------------------------------------------------------------ reports

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ReportItem {
    pub id: String,
    pub created_at: i64,
    pub status: String,
    pub category: String,
    pub severity: i64,
    pub text: String,
    pub mode: String,
    pub pairing_id: String,
    pub reported_device: String,
    pub reporter_device: String,
    pub snapshot_count: i64,
    /// Reports against the same device, this one included.
    pub device_reports: i64,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolution: Option<String>,
    pub evidence_deleted_at: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ReportFull {
    #[serde(flatten)]
    pub item: ReportItem,
    pub reporter_session: String,
    pub reporter_ip: Option<String>,
    pub reported_session: String,
    pub reported_participant: String,
    pub reported_node: String,
    pub transcript: String,
    pub reason_template: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct SnapshotMeta {
    pub id: String,
    pub participant_id: String,
    pub content_type: String,
    pub captured_at: i64,
    pub bytes: i64,
}

const REPORT_COLS: &str = "r.id, r.created_at, r.status, r.category, r.severity, r.text, r.mode, r.pairing_id, \
     r.reported_device, r.reporter_device, r.resolved_by, r.resolved_at, r.resolution, r.evidence_deleted_at, \
     (SELECT COUNT(*) FROM report_snapshots s WHERE s.report_id = r.id) AS snapshot_count, \
     (SELECT COUNT(*) FROM reports o WHERE o.reported_device = r.reported_device) AS device_reports";

macro_rules! report_item {
    ($r:expr) => {
        ReportItem {
            id: $r.try_get("id")?,
            created_at: $r.try_get("created_at")?,
            status: $r.try_get("status")?,
            category: $r.try_get("category")?,
            severity: $r.try_get("severity")?,
            text: $r.try_get("text")?,
            mode: $r.try_get("mode")?,
            pairing_id: $r.try_get("pairing_id")?,
            reported_device: $r.try_get("reported_device")?,
            reporter_device: $r.try_get("reporter_device")?,
            snapshot_count: $r.try_get("snapshot_count")?,
            device_reports: $r.try_get("device_reports")?,
            resolved_by: $r.try_get("resolved_by")?,
            resolved_at: $r.try_get("resolved_at")?,
            resolution: $r.try_get("resolution")?,
            evidence_deleted_at: $r.try_get("evidence_deleted_at")?,
        }
    };
}

/// Filter of the report queue.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReportFilter {
    /// `open`, `dismissed`, `warned`, `banned`, `resolved` or `all`.
    pub status: String,
    pub device: Option<String>,
    /// Newest first instead of most severe first.
    pub newest: bool,
    pub limit: i64,
    pub offset: i64,
}

impl Store {
    pub(crate) async fn list_reports(
        &self,
        f: &ReportFilter,
    ) -> Result<(Vec<ReportItem>, i64), SignalingError> {
        let mut filter = Clauses::default();
        match f.status.as_str() {
            "all" => {}
            "resolved" => {
                filter.and(" AND r.status <> 'open'", []);
            }
            s => {
                filter.and(" AND r.status = ?", [P::T(s.into())]);
            }
        }
        if let Some(d) = &f.device {
            filter.and(
                " AND (r.reported_device = ? OR r.reporter_device = ?)",
                [P::T(d.clone()), P::T(d.clone())],
            );
        }
        let mut sql = Sql::new(&format!("SELECT {REPORT_COLS} FROM reports r"));
        sql.filter(&filter);
        sql.push(
            if f.newest {
                " ORDER BY r.created_at DESC, r.severity DESC, r.id"
            } else {
                " ORDER BY r.severity DESC, r.created_at DESC, r.id"
            },
            [],
        );
        sql.push(" LIMIT ? OFFSET ?", [P::I(f.limit), P::I(f.offset)]);
        let mut count = Sql::new("SELECT COUNT(*) AS n FROM reports r");
        count.filter(&filter);
        on_pool!(self, p => {
            let rows = bind_all!(sqlx::query(&sql.text), sql.params).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(report_item!(r));
            }
            let n: i64 = bind_all!(sqlx::query(&count.text), count.params)
                .fetch_one(p)
                .await?
                .try_get("n")?;
            Ok((out, n))
        })
    }

    pub async fn report_full(&self, id: &str) -> Result<Option<ReportFull>, SignalingError> {
        on_pool!(self, p => {
            let row = sqlx::query(&format!(
                "SELECT {REPORT_COLS}, r.reporter_session, r.reporter_ip, r.reported_session, \
                 r.reported_participant, r.reported_node, r.transcript, r.reason_template \
                 FROM reports r WHERE r.id = $1"
            ))
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(r) => Some(ReportFull {
                    item: report_item!(r),
                    reporter_session: r.try_get("reporter_session")?,
                    reporter_ip: opt_str(&r, "reporter_ip")?,
                    reported_session: r.try_get("reported_session")?,
                    reported_participant: r.try_get("reported_participant")?,
                    reported_node: r.try_get("reported_node")?,
                    transcript: r.try_get("transcript")?,
                    reason_template: opt_str(&r, "reason_template")?,
                }),
                None => None,
            })
        })
    }

    pub async fn report_snapshots(&self, report_id: &str) -> Result<Vec<SnapshotMeta>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, participant_id, content_type, captured_at, CAST(LENGTH(data) AS BIGINT) AS bytes \
                 FROM report_snapshots WHERE report_id = $1 ORDER BY captured_at, id",
            )
            .bind(report_id)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(SnapshotMeta {
                    id: r.try_get("id")?,
                    participant_id: r.try_get("participant_id")?,
                    content_type: r.try_get("content_type")?,
                    captured_at: r.try_get("captured_at")?,
                    bytes: r.try_get("bytes")?,
                });
            }
            Ok(out)
        })
    }

    pub(crate) async fn report_snapshot_data(
        &self,
        report_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<(String, Vec<u8>)>, SignalingError> {
        on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT content_type, data FROM report_snapshots WHERE report_id = $1 AND id = $2",
            )
            .bind(report_id)
            .bind(snapshot_id)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(r) => Some((r.try_get("content_type")?, r.try_get("data")?)),
                None => None,
            })
        })
    }

    /// Open reports by the devices given, by device.
    pub(crate) async fn report_counts(
        &self,
        devices: &[String],
    ) -> Result<std::collections::HashMap<String, i64>, SignalingError> {
        let mut out = std::collections::HashMap::new();
        if devices.is_empty() {
            return Ok(out);
        }
        let mut sql =
            Sql::new("SELECT reported_device, COUNT(*) AS n FROM reports WHERE reported_device IN (");
        for (i, d) in devices.iter().enumerate() {
            sql.push(if i == 0 { "?" } else { ", ?" }, [P::T(d.clone())]);
        }
        sql.push(") GROUP BY reported_device", []);
        on_pool!(self, p => {
            let rows = bind_all!(sqlx::query(&sql.text), sql.params).fetch_all(p).await?;
            for r in rows {
                out.insert(r.try_get::<String, _>("reported_device")?, r.try_get::<i64, _>("n")?);
            }
        });
        Ok(out)
    }

    /// Resolves an open report (`status` = dismissed, warned or banned) and,
    /// for a ban, stores the ban, in one transaction. `false` if the report
    /// was not open any more.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn resolve_report(
        &self,
        report_id: &str,
        status: &str,
        by: &str,
        resolution: &str,
        template: &str,
        now: i64,
        ban: Option<&BanInsert>,
    ) -> Result<bool, SignalingError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE reports SET status = $2, resolved_by = $3, resolved_at = $4, resolution = $5, \
                 reason_template = $6 WHERE id = $1 AND status = 'open'",
            )
            .bind(report_id)
            .bind(status)
            .bind(by)
            .bind(now)
            .bind(resolution)
            .bind(template)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            if let Some(b) = ban {
                insert_ban_q(b).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The reported device's history: other reports against it, and its bans.
    pub(crate) async fn device_history(
        &self,
        device: &str,
        except_report: &str,
    ) -> Result<(Vec<ReportItem>, Vec<BanRow>), SignalingError> {
        let (reports, _) = self
            .list_reports(&ReportFilter {
                status: "all".into(),
                device: Some(device.to_owned()),
                newest: true,
                limit: 50,
                offset: 0,
            })
            .await?;
        let reports = reports
            .into_iter()
            .filter(|r| r.id != except_report && r.reported_device == device)
            .collect();
        let bans = self
            .list_bans(&BanFilter {
                exact: Some(("device".into(), device.to_owned())),
                state: "all".into(),
                limit: 50,
                ..Default::default()
            })
            .await?
            .0;
        Ok((reports, bans))
    }
}

// ------------------------------------------------------------------ bans

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BanInsert {
    pub id: String,
    pub kind: String,
    pub value: String,
    pub reason: String,
    pub template: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub report_id: Option<String>,
}

fn insert_ban_q<DB: sqlx::Database>(
    b: &BanInsert,
) -> sqlx::query::Query<'_, DB, <DB as sqlx::Database>::Arguments<'_>>
where
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    sqlx::query(
        "INSERT INTO bans (id, kind, value, reason, reason_template, created_by, created_at, expires_at, report_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(b.id.clone())
    .bind(b.kind.clone())
    .bind(b.value.clone())
    .bind(b.reason.clone())
    .bind(b.template.clone())
    .bind(b.created_by.clone())
    .bind(b.created_at)
    .bind(b.expires_at)
    .bind(b.report_id.clone())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct BanRow {
    pub id: String,
    pub kind: String,
    pub value: String,
    pub reason: String,
    pub reason_template: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub lifted_at: Option<i64>,
    pub lifted_by: Option<String>,
    pub lift_reason: Option<String>,
    pub report_id: Option<String>,
    pub appeal_status: Option<String>,
}

impl BanRow {
    pub fn active_at(&self, now: i64) -> bool {
        self.lifted_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct BanFilter {
    /// Case-insensitive substring of value, reason or creator.
    pub q: Option<String>,
    pub kind: Option<String>,
    /// `active`, `expired`, `lifted` or `all`.
    pub state: String,
    /// Exactly this kind and value.
    pub exact: Option<(String, String)>,
    pub ids: Option<Vec<String>>,
    pub now: i64,
    pub limit: i64,
    pub offset: i64,
}

const BAN_COLS: &str = "b.id, b.kind, b.value, b.reason, b.reason_template, b.created_by, b.created_at, \
     b.expires_at, b.lifted_at, b.lifted_by, b.lift_reason, b.report_id, \
     (SELECT a.status FROM appeals a WHERE a.ban_id = b.id) AS appeal_status";

impl Store {
    pub(crate) async fn insert_ban_row(&self, b: &BanInsert) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            insert_ban_q(b).execute(p).await?;
        });
        Ok(())
    }

    /// Inserts all bans or none.
    pub(crate) async fn insert_bans(&self, bans: &[BanInsert]) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for b in bans {
                insert_ban_q(b).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub(crate) async fn list_bans(&self, f: &BanFilter) -> Result<(Vec<BanRow>, i64), SignalingError> {
        let mut filter = Clauses::default();
        if let Some(q) = &f.q {
            let like = format!("%{}%", q.to_lowercase().replace(['%', '_'], ""));
            filter.and(
                " AND (LOWER(b.value) LIKE ? OR LOWER(b.reason) LIKE ? OR LOWER(b.created_by) LIKE ? OR b.id = ?)",
                [P::T(like.clone()), P::T(like.clone()), P::T(like), P::T(q.clone())],
            );
        }
        if let Some(k) = &f.kind {
            filter.and(" AND b.kind = ?", [P::T(k.clone())]);
        }
        if let Some((k, v)) = &f.exact {
            filter.and(
                " AND b.kind = ? AND b.value = ?",
                [P::T(k.clone()), P::T(v.clone())],
            );
        }
        if let Some(ids) = &f.ids {
            filter.and(" AND b.id IN (''", []);
            for id in ids {
                filter.and(", ?", [P::T(id.clone())]);
            }
            filter.and(")", []);
        }
        match f.state.as_str() {
            "active" => {
                filter.and(
                    " AND b.lifted_at IS NULL AND (b.expires_at IS NULL OR b.expires_at > ?)",
                    [P::I(f.now)],
                );
            }
            "expired" => {
                filter.and(" AND b.lifted_at IS NULL AND b.expires_at <= ?", [P::I(f.now)]);
            }
            "lifted" => {
                filter.and(" AND b.lifted_at IS NOT NULL", []);
            }
            _ => {}
        }
        let mut sql = Sql::new(&format!("SELECT {BAN_COLS} FROM bans b"));
        sql.filter(&filter);
        sql.push(
            " ORDER BY b.created_at DESC, b.id LIMIT ? OFFSET ?",
            [P::I(f.limit), P::I(f.offset)],
        );
        let mut count = Sql::new("SELECT COUNT(*) AS n FROM bans b");
        count.filter(&filter);
        on_pool!(self, p => {
            let rows = bind_all!(sqlx::query(&sql.text), sql.params).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(BanRow {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    value: r.try_get("value")?,
                    reason: r.try_get("reason")?,
                    reason_template: opt_str(&r, "reason_template")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    lifted_at: r.try_get("lifted_at")?,
                    lifted_by: opt_str(&r, "lifted_by")?,
                    lift_reason: opt_str(&r, "lift_reason")?,
                    report_id: opt_str(&r, "report_id")?,
                    appeal_status: opt_str(&r, "appeal_status")?,
                });
            }
            let n: i64 = bind_all!(sqlx::query(&count.text), count.params)
                .fetch_one(p)
                .await?
                .try_get("n")?;
            Ok((out, n))
        })
    }

    pub(crate) async fn ban_by_id(&self, id: &str, now: i64) -> Result<Option<BanRow>, SignalingError> {
        Ok(self
            .list_bans(&BanFilter {
                ids: Some(vec![id.to_owned()]),
                state: "all".into(),
                now,
                limit: 1,
                ..Default::default()
            })
            .await?
            .0
            .pop())
    }

    /// Lifts a ban that is not lifted yet; `false` if it was.
    pub(crate) async fn lift_ban(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, SignalingError> {
        on_pool!(self, p => {
            Ok(sqlx::query(SQL_LIFT_BAN)
            .bind(id)
            .bind(now)
            .bind(by)
            .bind(reason)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }
}

// ------------------------------------------------------------------ appeals

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct AppealRow {
    pub id: String,
    pub ban_id: String,
    pub text: String,
    pub created_at: i64,
    pub status: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub decision_reason: Option<String>,
}

impl Store {
    /// Stores an appeal; `false` if the ban was appealed already.
    pub(crate) async fn insert_appeal(
        &self,
        id: &str,
        ban_id: &str,
        text: &str,
        now: i64,
    ) -> Result<bool, SignalingError> {
        on_pool!(self, p => {
            let res = sqlx::query("INSERT INTO appeals (id, ban_id, text, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(ban_id)
                .bind(text)
                .bind(now)
                .execute(p)
                .await;
            match res {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    pub(crate) async fn list_appeals(
        &self,
        status: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AppealRow>, i64), SignalingError> {
        let mut filter = Clauses::default();
        if status != "all" {
            filter.and(" AND status = ?", [P::T(status.into())]);
        }
        let mut sql = Sql::new(
            "SELECT id, ban_id, text, created_at, status, decided_by, decided_at, decision_reason FROM appeals",
        );
        sql.filter(&filter);
        sql.push(
            " ORDER BY created_at ASC, id LIMIT ? OFFSET ?",
            [P::I(limit), P::I(offset)],
        );
        let mut count = Sql::new("SELECT COUNT(*) AS n FROM appeals");
        count.filter(&filter);
        on_pool!(self, p => {
            let rows = bind_all!(sqlx::query(&sql.text), sql.params).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(AppealRow {
                    id: r.try_get("id")?,
                    ban_id: r.try_get("ban_id")?,
                    text: r.try_get("text")?,
                    created_at: r.try_get("created_at")?,
                    status: r.try_get("status")?,
                    decided_by: opt_str(&r, "decided_by")?,
                    decided_at: r.try_get("decided_at")?,
                    decision_reason: opt_str(&r, "decision_reason")?,
                });
            }
            let n: i64 = bind_all!(sqlx::query(&count.text), count.params)
                .fetch_one(p)
                .await?
                .try_get("n")?;
            Ok((out, n))
        })
    }

    pub(crate) async fn appeal_by_id(&self, id: &str) -> Result<Option<AppealRow>, SignalingError> {
        on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT id, ban_id, text, created_at, status, decided_by, decided_at, decision_reason \
                 FROM appeals WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(r) => Some(AppealRow {
                    id: r.try_get("id")?,
                    ban_id: r.try_get("ban_id")?,
                    text: r.try_get("text")?,
                    created_at: r.try_get("created_at")?,
                    status: r.try_get("status")?,
                    decided_by: opt_str(&r, "decided_by")?,
                    decided_at: r.try_get("decided_at")?,
                    decision_reason: opt_str(&r, "decision_reason")?,
                }),
                None => None,
            })
        })
    }

    /// Decides a pending appeal (`upheld` or `lifted`; lifting also lifts
    /// the ban), in one transaction. `false` if it was decided already.
    pub(crate) async fn decide_appeal(
        &self,
        appeal_id: &str,
        ban_id: &str,
        status: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, SignalingError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE appeals SET status = $2, decided_by = $3, decided_at = $4, decision_reason = $5 \
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(appeal_id)
            .bind(status)
            .bind(by)
            .bind(now)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            if status == "lifted" {
                sqlx::query(SQL_LIFT_BAN)
                .bind(ban_id)
                .bind(now)
                .bind(by)
                .bind(format!("appeal: {reason}"))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }
}

// ------------------------------------------------------------------ audit log

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target_kind: String,
    pub target_id: String,
    pub details: serde_json::Value,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub(crate) async fn audit_query(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, SignalingError> {
        let mut sql = Sql::new(
            "SELECT id, at, actor, action, target_kind, target_id, details FROM audit_log WHERE 1 = 1",
        );
        if let Some(a) = &f.actor {
            sql.push(
                " AND LOWER(actor) LIKE ?",
                [P::T(format!("%{}%", a.to_lowercase()))],
            );
        }
        if let Some(a) = &f.action {
            sql.push(" AND action = ?", [P::T(a.clone())]);
        }
        if let Some(t) = &f.target {
            sql.push(
                " AND (target_id = ? OR target_kind = ?)",
                [P::T(t.clone()), P::T(t.clone())],
            );
        }
        if let Some(s) = f.since {
            sql.push(" AND at >= ?", [P::I(s)]);
        }
        if let Some(u) = f.until {
            sql.push(" AND at < ?", [P::I(u)]);
        }
        if let Some(b) = f.before_id {
            sql.push(" AND id < ?", [P::I(b)]);
        }
        sql.push(" ORDER BY id DESC LIMIT ?", [P::I(f.limit)]);
        on_pool!(self, p => {
            let rows = bind_all!(sqlx::query(&sql.text), sql.params).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let details: String = r.try_get("details")?;
                out.push(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target_kind: r.try_get("target_kind")?,
                    target_id: r.try_get("target_id")?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
                });
            }
            Ok(out)
        })
    }

    /// Reports in the database, all time.
    pub(crate) async fn report_total(&self) -> Result<i64, SignalingError> {
        on_pool!(self, p => {
            Ok(sqlx::query("SELECT COUNT(*) AS n FROM reports").fetch_one(p).await?.try_get("n")?)
        })
    }

    pub(crate) async fn settings(&self) -> Result<std::collections::HashMap<String, String>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT key, value FROM admin_settings").fetch_all(p).await?;
            let mut out = std::collections::HashMap::new();
            for r in rows {
                out.insert(r.try_get("key")?, r.try_get("value")?);
            }
            Ok(out)
        })
    }

    pub(crate) async fn put_setting(
        &self,
        key: &str,
        value: &str,
        by: &str,
        now: i64,
    ) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO admin_settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, \
                 updated_by = excluded.updated_by",
            )
            .bind(key)
            .bind(value)
            .bind(now)
            .bind(by)
            .execute(p)
            .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_builder_numbers_parameters_in_order() {
        let mut s = Sql::new("SELECT 1 WHERE 1 = 1");
        s.push(" AND a = ?", [P::T("x".into())]);
        s.push(" AND b IN (?, ?)", [P::I(1), P::I(2)]);
        assert_eq!(s.text, "SELECT 1 WHERE 1 = 1 AND a = $1 AND b IN ($2, $3)");
        assert_eq!(s.params.len(), 3);
    }
}
