//! Evidence retention. Snapshots of calls nobody reported and screening did
//! not flag are never stored (the wall proxies them); what a report or a
//! flag stored is deleted:
//! - for dismissed reports, `dismissed_after` (default 30 days) after the decision;
//! - for actioned reports (warned, banned), `actioned_after` (default 90
//!   days) after the decision, unless an appeal of a ban from that report is
//!   still pending (then at the first run after it is decided);
//! - flagged screening samples that filed no report, `dismissed_after` after
//!   they were taken (nobody confirmed them); those that filed a report, with
//!   that report's evidence.
//!
//! The report row stays (category, devices, decision: the device's history);
//! its snapshots, transcript and text go. [`run`] is plain SQL with the clock
//! passed in; the periodic job ([`run_job`]) reads the settings and logs counts.

use crate::error::SignalingError;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub dismissed_after: Duration,
    pub actioned_after: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            dismissed_after: Duration::from_secs(30 * 86_400),
            actioned_after: Duration::from_secs(90 * 86_400),
        }
    }
}

/// What one run deleted (and kept because of an open appeal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RetentionCounts {
    /// Dismissed reports whose evidence was deleted.
    pub dismissed_reports: u64,
    /// Actioned reports whose evidence was deleted.
    pub actioned_reports: u64,
    /// Snapshots deleted.
    pub snapshots: u64,
    /// Actioned reports past their time, kept because an appeal is pending.
    pub kept_for_appeal: u64,
    /// Expired moderator sessions forgotten.
    pub moderator_sessions: u64,
    /// Flagged screening samples (with their snapshots) deleted.
    pub screening_samples: u64,
}

/// `(dismissed cutoff, actioned cutoff)`: reports decided at or before these
/// Unix seconds lose their evidence.
pub fn cutoffs(now: i64, p: &RetentionPolicy) -> (i64, i64) {
    (
        now.saturating_sub(p.dismissed_after.as_secs() as i64),
        now.saturating_sub(p.actioned_after.as_secs() as i64),
    )
}

const DISMISSED: &str =
    "evidence_deleted_at IS NULL AND status = 'dismissed' AND resolved_at IS NOT NULL AND resolved_at <= $1";
const PENDING_APPEAL: &str = "EXISTS (SELECT 1 FROM bans b JOIN appeals a ON a.ban_id = b.id \
     WHERE b.report_id = reports.id AND a.status = 'pending')";

fn actioned(appeal: bool) -> String {
    format!(
        "evidence_deleted_at IS NULL AND status IN ('warned', 'banned') AND resolved_at IS NOT NULL \
         AND resolved_at <= $1 AND {}{PENDING_APPEAL}",
        if appeal { "" } else { "NOT " }
    )
}

/// Deletes the evidence that is past its time at `now` (Unix seconds).
pub async fn run(
    store: &Store,
    now: i64,
    policy: &RetentionPolicy,
) -> Result<RetentionCounts, SignalingError> {
    let (dismissed_cut, actioned_cut) = cutoffs(now, policy);
    let actioned_sql = actioned(false);
    let kept_sql = actioned(true);
    let mut counts = RetentionCounts::default();
    super::db::on_pool!(store, p => {
        let mut tx = p.begin().await?;
        for (cond, cut, dismissed) in [(DISMISSED, dismissed_cut, true), (actioned_sql.as_str(), actioned_cut, false)] {
            counts.snapshots += sqlx::query(&format!(
                "DELETE FROM report_snapshots WHERE report_id IN (SELECT id FROM reports WHERE {cond})"
            ))
            .bind(cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let n = sqlx::query(&format!(
                "UPDATE reports SET transcript = '[]', text = '', evidence_deleted_at = $2 WHERE {cond}"
            ))
            .bind(cut)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if dismissed {
                counts.dismissed_reports = n;
            } else {
                counts.actioned_reports = n;
            }
        }
        let kept: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM reports WHERE {kept_sql}"))
            .bind(actioned_cut)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        counts.kept_for_appeal = kept.max(0) as u64;
        tx.commit().await?;
    });
    counts.moderator_sessions = store.purge_sessions(now - 86_400).await?;
    counts.screening_samples = store.purge_screening(dismissed_cut).await?;
    Ok(counts)
}

/// The periodic job: current settings, now, counts logged.
pub(crate) async fn run_job(inner: &crate::Inner) -> Option<RetentionCounts> {
    let policy = super::settings(inner).await.retention();
    match run(&inner.store, crate::now_secs() as i64, &policy).await {
        Ok(c) => {
            tracing::info!(
                dismissed_reports = c.dismissed_reports,
                actioned_reports = c.actioned_reports,
                snapshots = c.snapshots,
                kept_for_appeal = c.kept_for_appeal,
                moderator_sessions = c.moderator_sessions,
                screening_samples = c.screening_samples,
                "retention: evidence past its time deleted"
            );
            let m = &inner.admin.metrics.retention_deleted;
            m.with_label_values(&["dismissed"]).inc_by(c.dismissed_reports);
            m.with_label_values(&["actioned"]).inc_by(c.actioned_reports);
            Some(c)
        }
        Err(e) => {
            tracing::error!(error = %e, "retention job failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_follow_the_policy() {
        let p = RetentionPolicy::default();
        let now = 100 * 86_400;
        assert_eq!(cutoffs(now, &p), (70 * 86_400, 10 * 86_400));
        let zero = RetentionPolicy {
            dismissed_after: Duration::ZERO,
            actioned_after: Duration::ZERO,
        };
        assert_eq!(cutoffs(now, &zero), (now, now));
    }
}
