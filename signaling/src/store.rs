//! Durable data: reports with evidence, bans, moderators, audit log,
//! appeals. SQLite (`duet up`) or PostgreSQL, same SQL (`$n` parameters,
//! Unix-second integers), migrations in `migrations/{sqlite,postgres}`.

use crate::error::SignalingError;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// The database, one of two kinds.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// A report to store with its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReport {
    pub category: String,
    pub severity: i64,
    pub text: String,
    pub pairing_id: String,
    pub mode: String,
    pub reporter_session: String,
    pub reporter_device: String,
    pub reporter_ip: Option<String>,
    pub reported_session: String,
    pub reported_device: String,
    pub reported_participant: String,
    pub reported_node: String,
    /// JSON array of chat lines.
    pub transcript: String,
    pub snapshots: Vec<Snapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub participant_id: String,
    pub content_type: String,
    pub data: Vec<u8>,
    pub captured_at: i64,
}

/// A stored report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReport {
    pub id: String,
    pub created_at: i64,
    pub status: String,
    pub report: NewReport,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanKind {
    Device,
    Ip,
    Cidr,
}

impl BanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BanKind::Device => "device",
            BanKind::Ip => "ip",
            BanKind::Cidr => "cidr",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBan {
    pub kind: BanKind,
    /// Device id, IP address or CIDR.
    pub value: String,
    pub reason: String,
    pub created_by: String,
    /// Unix seconds; `None` = permanent.
    pub expires_at: Option<i64>,
    pub report_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub id: String,
    pub kind: String,
    pub value: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moderator {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// How long a request waits for a PostgreSQL connection. While the database
/// is down every request that needs it waits this long before its 503, so it
/// stays short; a healthy pool of 10 hands one out in milliseconds.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Store {
    /// Opens (SQLite: creates if missing) the database and runs migrations.
    pub async fn connect(url: &str) -> Result<Self, SignalingError> {
        let store = if url.starts_with("sqlite:") {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let opts = if memory {
                opts
            } else {
                opts.journal_mode(SqliteJournalMode::Wal)
            };
            let mut pool = SqlitePoolOptions::new().acquire_timeout(Duration::from_secs(10));
            if memory {
                // Every connection would get its own empty in-memory database.
                pool = pool
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            } else {
                pool = pool.max_connections(4);
            }
            Store::Sqlite(pool.connect_with(opts).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Store::Postgres(
                PgPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(SignalingError::Config(
                "database_url must start with sqlite: or postgres:".into(),
            ));
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), SignalingError> {
        match self {
            Store::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Store::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), SignalingError> {
        on_pool!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    /// Stores a report and its evidence in one transaction; returns its id.
    pub async fn insert_report(&self, r: &NewReport) -> Result<String, SignalingError> {
        let id = new_id();
        self.insert_report_as(&id, r).await?;
        Ok(id)
    }

    /// Stores a report under `id` with its evidence, in one transaction,
    /// unless a report with that id exists (then nothing is stored and the
    /// answer is `false`): the automatic report of a pairing side has an id
    /// derived from it, so replicas racing to file it file it once.
    pub async fn insert_report_as(&self, id: &str, r: &NewReport) -> Result<bool, SignalingError> {
        let now = now_secs();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO reports (id, created_at, category, severity, text, pairing_id, mode, \
                 reporter_session, reporter_device, reporter_ip, reported_session, reported_device, \
                 reported_participant, reported_node, transcript) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(now)
            .bind(&r.category)
            .bind(r.severity)
            .bind(&r.text)
            .bind(&r.pairing_id)
            .bind(&r.mode)
            .bind(&r.reporter_session)
            .bind(&r.reporter_device)
            .bind(&r.reporter_ip)
            .bind(&r.reported_session)
            .bind(&r.reported_device)
            .bind(&r.reported_participant)
            .bind(&r.reported_node)
            .bind(&r.transcript)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            for s in &r.snapshots {
                sqlx::query(
                    "INSERT INTO report_snapshots (id, report_id, participant_id, content_type, data, captured_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(new_id())
                .bind(id)
                .bind(&s.participant_id)
                .bind(&s.content_type)
                .bind(&s.data)
                .bind(s.captured_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    /// A report with its evidence.
    pub async fn get_report(&self, id: &str) -> Result<Option<StoredReport>, SignalingError> {
        on_pool!(self, p => {
            let Some(row) = sqlx::query(
                "SELECT id, created_at, status, category, severity, text, pairing_id, mode, reporter_session, \
                 reporter_device, reporter_ip, reported_session, reported_device, reported_participant, \
                 reported_node, transcript FROM reports WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await? else { return Ok(None) };
            let snaps = sqlx::query(
                "SELECT participant_id, content_type, data, captured_at FROM report_snapshots \
                 WHERE report_id = $1 ORDER BY captured_at, id",
            )
            .bind(id)
            .fetch_all(p)
            .await?;
            let mut snapshots = Vec::new();
            for s in snaps {
                snapshots.push(Snapshot {
                    participant_id: s.try_get("participant_id")?,
                    content_type: s.try_get("content_type")?,
                    data: s.try_get("data")?,
                    captured_at: s.try_get("captured_at")?,
                });
            }
            Ok(Some(StoredReport {
                id: row.try_get("id")?,
                created_at: row.try_get("created_at")?,
                status: row.try_get("status")?,
                report: NewReport {
                    category: row.try_get("category")?,
                    severity: row.try_get("severity")?,
                    text: row.try_get("text")?,
                    pairing_id: row.try_get("pairing_id")?,
                    mode: row.try_get("mode")?,
                    reporter_session: row.try_get("reporter_session")?,
                    reporter_device: row.try_get("reporter_device")?,
                    reporter_ip: row.try_get("reporter_ip")?,
                    reported_session: row.try_get("reported_session")?,
                    reported_device: row.try_get("reported_device")?,
                    reported_participant: row.try_get("reported_participant")?,
                    reported_node: row.try_get("reported_node")?,
                    transcript: row.try_get("transcript")?,
                    snapshots,
                },
            }))
        })
    }

    /// `(reporter_device, reported_device)` of every report: these never meet again.
    pub async fn report_blocks(&self) -> Result<Vec<(String, String)>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT DISTINCT reporter_device, reported_device FROM reports")
                .fetch_all(p)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push((r.try_get("reporter_device")?, r.try_get("reported_device")?));
            }
            Ok(out)
        })
    }

    pub async fn insert_ban(&self, b: &NewBan) -> Result<String, SignalingError> {
        if b.kind == BanKind::Cidr && b.value.parse::<ipnet::IpNet>().is_err() {
            return Err(SignalingError::Data(format!("not a CIDR: {}", b.value)));
        }
        if b.kind == BanKind::Ip && b.value.parse::<IpAddr>().is_err() {
            return Err(SignalingError::Data(format!("not an IP address: {}", b.value)));
        }
        let id = new_id();
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO bans (id, kind, value, reason, created_by, created_at, expires_at, report_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&id)
            .bind(b.kind.as_str())
            .bind(&b.value)
            .bind(&b.reason)
            .bind(&b.created_by)
            .bind(now_secs())
            .bind(b.expires_at)
            .bind(&b.report_id)
            .execute(p)
            .await?;
        });
        Ok(id)
    }

    /// The outcome of an accepted appeal of this device's ban that the device
    /// has not been told yet; marks it told, so it is shown on one visit only.
    pub async fn take_appeal_outcome(
        &self,
        device: &str,
        now: i64,
    ) -> Result<Option<String>, SignalingError> {
        let found: Option<(String, Option<String>)> = on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT a.id, a.decision_reason FROM appeals a JOIN bans b ON b.id = a.ban_id \
                 WHERE b.kind = 'device' AND b.value = $1 AND a.status = 'lifted' \
                 AND a.outcome_shown_at IS NULL ORDER BY a.decided_at DESC LIMIT 1",
            )
            .bind(device)
            .fetch_optional(p)
            .await?;
            match row {
                Some(r) => Some((r.try_get("id")?, r.try_get("decision_reason")?)),
                None => None,
            }
        });
        let Some((id, reason)) = found else {
            return Ok(None);
        };
        on_pool!(self, p => {
            sqlx::query("UPDATE appeals SET outcome_shown_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&id)
                .execute(p)
                .await?;
        });
        Ok(Some(match reason {
            Some(r) if !r.trim().is_empty() => {
                format!("Your appeal was accepted and your ban has been lifted. Moderator's note: {r}")
            }
            _ => "Your appeal was accepted and your ban has been lifted.".to_owned(),
        }))
    }

    /// The ban in force for this device or IP at `now` (unix seconds), the
    /// longest-lasting one if several.
    pub async fn active_ban(
        &self,
        device: Option<&str>,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<Option<Ban>, SignalingError> {
        let rows: Vec<Ban> = on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, kind, value, reason, created_by, created_at, expires_at FROM bans \
                 WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > $1) \
                 AND ((kind = 'device' AND value = $2) OR (kind = 'ip' AND value = $3) OR kind = 'cidr')",
            )
            .bind(now)
            .bind(device.unwrap_or(""))
            .bind(ip.map(|i| i.to_string()).unwrap_or_default())
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(Ban {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    value: r.try_get("value")?,
                    reason: r.try_get("reason")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                });
            }
            out
        });
        let hit = rows.into_iter().filter(|b| match b.kind.as_str() {
            "cidr" => match (ip, b.value.parse::<ipnet::IpNet>()) {
                (Some(ip), Ok(net)) => net.contains(&canonical_ip(ip)),
                _ => false,
            },
            _ => true,
        });
        Ok(hit.max_by_key(|b| b.expires_at.unwrap_or(i64::MAX)))
    }

    /// Every ban in force at `now` (unix seconds): the ban list's full read.
    pub async fn active_bans(&self, now: i64) -> Result<Vec<Ban>, SignalingError> {
        let rows: Vec<crate::banlist::BanChange> = on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, kind, value, reason, created_by, created_at, expires_at, lifted_at FROM bans \
                 WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
            )
            .bind(now)
            .fetch_all(p)
            .await?;
            rows.iter().map(ban_change).collect::<Result<_, sqlx::Error>>()?
        });
        Ok(rows.into_iter().map(|c| c.ban).collect())
    }

    /// Bans created or lifted at or after `since` (unix seconds): the ban
    /// list's incremental read (indexes `bans_created`, `bans_lifted`).
    pub async fn bans_changed_since(
        &self,
        since: i64,
    ) -> Result<Vec<crate::banlist::BanChange>, SignalingError> {
        Ok(on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, kind, value, reason, created_by, created_at, expires_at, lifted_at FROM bans \
                 WHERE created_at >= $1 OR lifted_at >= $1",
            )
            .bind(since)
            .fetch_all(p)
            .await?;
            rows.iter().map(ban_change).collect::<Result<Vec<_>, sqlx::Error>>()?
        }))
    }

    /// Devices whose ban was lifted on appeal and who have not been told.
    pub async fn devices_with_untold_outcome(&self) -> Result<Vec<String>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT DISTINCT b.value FROM appeals a JOIN bans b ON b.id = a.ban_id \
                 WHERE b.kind = 'device' AND a.status = 'lifted' AND a.outcome_shown_at IS NULL",
            )
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(r.try_get("value")?);
            }
            Ok(out)
        })
    }

    /// The appeal status of a ban, if appealed.
    pub async fn appeal_status(&self, ban_id: &str) -> Result<Option<String>, SignalingError> {
        on_pool!(self, p => {
            let row = sqlx::query("SELECT status FROM appeals WHERE ban_id = $1")
                .bind(ban_id)
                .fetch_optional(p)
                .await?;
            Ok(match row {
                Some(r) => Some(r.try_get("status")?),
                None => None,
            })
        })
    }

    pub async fn insert_moderator(
        &self,
        email: &str,
        password_hash: &str,
        role: &str,
    ) -> Result<String, SignalingError> {
        let id = new_id();
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO moderators (id, email, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(email)
            .bind(password_hash)
            .bind(role)
            .bind(now_secs())
            .execute(p)
            .await?;
        });
        Ok(id)
    }

    pub async fn moderator_by_email(&self, email: &str) -> Result<Option<Moderator>, SignalingError> {
        on_pool!(self, p => {
            let row = sqlx::query("SELECT id, email, password_hash, role, disabled FROM moderators WHERE email = $1")
                .bind(email)
                .fetch_optional(p)
                .await?;
            Ok(match row {
                Some(r) => Some(Moderator {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    password_hash: r.try_get("password_hash")?,
                    role: r.try_get("role")?,
                    disabled: r.try_get::<i64, _>("disabled")? != 0,
                }),
                None => None,
            })
        })
    }

    /// Appends to the audit log (which refuses updates and deletes).
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target_kind: &str,
        target_id: &str,
        details: &serde_json::Value,
    ) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, target_kind, target_id, details) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(now_secs())
            .bind(actor)
            .bind(action)
            .bind(target_kind)
            .bind(target_id)
            .bind(details.to_string())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Audit entries, newest first: `(at, actor, action, target_kind, target_id)`.
    pub async fn audit_entries(
        &self,
        limit: i64,
    ) -> Result<Vec<(i64, String, String, String, String)>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT at, actor, action, target_kind, target_id FROM audit_log ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(p)
            .await?;
            let mut out = Vec::new();
            for r in rows {
                out.push((r.try_get("at")?, r.try_get("actor")?, r.try_get("action")?, r.try_get("target_kind")?, r.try_get("target_id")?));
            }
            Ok(out)
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

fn ban_change<R: Row>(r: &R) -> Result<crate::banlist::BanChange, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'c> String: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> i64: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> Option<i64>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::banlist::BanChange {
        ban: Ban {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            value: r.try_get("value")?,
            reason: r.try_get("reason")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
        },
        lifted: r.try_get::<Option<i64>, _>("lifted_at")?.is_some(),
    })
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// argon2id hash of a moderator password (PHC string).
pub fn hash_password(password: &str) -> Result<String, SignalingError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| SignalingError::Data(format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SignalingError::Data(format!("password hash: {e}")))
}

/// Checks a password against an argon2 PHC string.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}
