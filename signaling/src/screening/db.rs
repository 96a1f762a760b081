//! Screening queries on the [`Store`]: flagged samples with their snapshots,
//! clearances, what the wall and a report's detail show, and retention.

use crate::admin::db::{on_pool, Sql, P};
use crate::error::SignalingError;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// A flagged sample to store.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewSample {
    pub id: String,
    pub pairing_id: String,
    /// `a` or `b`.
    pub side: &'static str,
    pub slot: i64,
    pub participant_id: String,
    pub device: String,
    pub node: String,
    pub screener: String,
    pub model: String,
    pub category: String,
    pub score: f64,
    /// `review` or `high`.
    pub level: &'static str,
    /// Every category's score, JSON.
    pub scores: String,
    pub data: Vec<u8>,
    pub captured_at: i64,
    pub report_id: Option<String>,
}

/// The strongest flag of a pairing, as the wall shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WallFlag {
    /// `a` or `b`: the side that was flagged.
    pub side: String,
    pub category: String,
    pub score: f64,
    /// `review` or `high`.
    pub level: String,
    pub model: String,
    /// Unix seconds of the strongest sample.
    pub captured_at: i64,
    /// Flagged samples of this pairing.
    pub samples: i64,
    /// The automatic report, if one was filed.
    pub report_id: Option<String>,
    /// A moderator cleared the call (it is not flagged again).
    pub cleared: bool,
}

/// A flagged sample as a report's detail lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SampleInfo {
    pub id: String,
    pub side: String,
    /// Which sample of the call: 0 is the first after the match, then one per period.
    pub slot: i64,
    pub screener: String,
    pub model: String,
    pub category: String,
    pub score: f64,
    pub level: String,
    /// Every category's score.
    pub scores: serde_json::Value,
    pub captured_at: i64,
}

/// What a pairing side has been flagged with so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SideHistory {
    pub samples: i64,
    pub reached_review: bool,
    pub reached_high: bool,
}

fn level_rank(level: &str) -> u8 {
    match level {
        "high" => 2,
        "review" => 1,
        _ => 0,
    }
}

impl Store {
    pub(crate) async fn insert_screening_sample(&self, s: &NewSample) -> Result<(), SignalingError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO screening_samples (id, pairing_id, side, slot, participant_id, device, node, screener, \
                 model, category, score, level, scores, content_type, data, captured_at, report_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'image/webp', $14, $15, $16)",
            )
            .bind(&s.id)
            .bind(&s.pairing_id)
            .bind(s.side)
            .bind(s.slot)
            .bind(&s.participant_id)
            .bind(&s.device)
            .bind(&s.node)
            .bind(&s.screener)
            .bind(&s.model)
            .bind(&s.category)
            .bind(s.score)
            .bind(s.level)
            .bind(&s.scores)
            .bind(&s.data)
            .bind(s.captured_at)
            .bind(&s.report_id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    pub(crate) async fn screening_side_history(
        &self,
        pairing_id: &str,
        side: &str,
    ) -> Result<SideHistory, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT level, COUNT(*) AS n FROM screening_samples WHERE pairing_id = $1 AND side = $2 GROUP BY level",
            )
            .bind(pairing_id)
            .bind(side)
            .fetch_all(p)
            .await?;
            let mut h = SideHistory::default();
            for r in rows {
                let level: String = r.try_get("level")?;
                h.samples += r.try_get::<i64, _>("n")?;
                h.reached_review |= level_rank(&level) >= 1;
                h.reached_high |= level_rank(&level) >= 2;
            }
            Ok(h)
        })
    }

    pub(crate) async fn screening_cleared(&self, pairing_id: &str) -> Result<bool, SignalingError> {
        on_pool!(self, p => {
            Ok(sqlx::query("SELECT 1 AS x FROM screening_clearances WHERE pairing_id = $1")
                .bind(pairing_id)
                .fetch_optional(p)
                .await?
                .is_some())
        })
    }

    /// Records that a moderator cleared the call; `false` if it already was.
    pub(crate) async fn clear_screening(
        &self,
        pairing_id: &str,
        by: &str,
        now: i64,
    ) -> Result<bool, SignalingError> {
        on_pool!(self, p => {
            Ok(sqlx::query(
                "INSERT INTO screening_clearances (pairing_id, cleared_by, cleared_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (pairing_id) DO NOTHING",
            )
            .bind(pairing_id)
            .bind(by)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// The strongest flag of each of `pairing_ids` that has one.
    pub async fn screening_flags(
        &self,
        pairing_ids: &[String],
    ) -> Result<HashMap<String, WallFlag>, SignalingError> {
        let mut out: HashMap<String, WallFlag> = HashMap::new();
        if pairing_ids.is_empty() {
            return Ok(out);
        }
        let list = |sql: &mut Sql| {
            for (i, id) in pairing_ids.iter().enumerate() {
                sql.push(if i == 0 { "?" } else { ", ?" }, [P::T(id.clone())]);
            }
            sql.push(")", []);
        };
        let mut samples = Sql::new(
            "SELECT pairing_id, side, category, score, level, model, captured_at, report_id \
             FROM screening_samples WHERE pairing_id IN (",
        );
        list(&mut samples);
        let mut cleared = Sql::new("SELECT pairing_id FROM screening_clearances WHERE pairing_id IN (");
        list(&mut cleared);
        on_pool!(self, p => {
            let rows = crate::admin::db::bind_all!(sqlx::query(&samples.text), samples.params).fetch_all(p).await?;
            for r in rows {
                let flag = WallFlag {
                    side: r.try_get("side")?,
                    category: r.try_get("category")?,
                    score: r.try_get("score")?,
                    level: r.try_get("level")?,
                    model: r.try_get("model")?,
                    captured_at: r.try_get("captured_at")?,
                    samples: 1,
                    report_id: r.try_get("report_id")?,
                    cleared: false,
                };
                let id: String = r.try_get("pairing_id")?;
                merge(out.entry(id).or_insert_with(|| WallFlag { samples: 0, ..flag.clone() }), flag);
            }
            let rows = crate::admin::db::bind_all!(sqlx::query(&cleared.text), cleared.params).fetch_all(p).await?;
            for r in rows {
                if let Some(f) = out.get_mut(&r.try_get::<String, _>("pairing_id")?) {
                    f.cleared = true;
                }
            }
        });
        Ok(out)
    }

    /// The flagged samples of the pairing side a report is about, strongest first.
    pub async fn report_screening(
        &self,
        pairing_id: &str,
        participant_id: &str,
    ) -> Result<Vec<SampleInfo>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, side, slot, screener, model, category, score, level, scores, captured_at FROM screening_samples \
                 WHERE pairing_id = $1 AND participant_id = $2 ORDER BY score DESC, captured_at LIMIT 50",
            )
            .bind(pairing_id)
            .bind(participant_id)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let scores: String = r.try_get("scores")?;
                out.push(SampleInfo {
                    id: r.try_get("id")?,
                    side: r.try_get("side")?,
                    slot: r.try_get("slot")?,
                    screener: r.try_get("screener")?,
                    model: r.try_get("model")?,
                    category: r.try_get("category")?,
                    score: r.try_get("score")?,
                    level: r.try_get("level")?,
                    scores: serde_json::from_str(&scores).unwrap_or(serde_json::Value::Null),
                    captured_at: r.try_get("captured_at")?,
                });
            }
            Ok(out)
        })
    }

    /// Retention: deletes flagged samples (with their pictures) that filed no
    /// report and were taken at or before `cutoff`, the samples of reports
    /// whose evidence is gone, and clearances at or before `cutoff`.
    pub(crate) async fn purge_screening(&self, cutoff: i64) -> Result<u64, SignalingError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "DELETE FROM screening_samples WHERE (report_id IS NULL AND captured_at <= $1) \
                 OR report_id IN (SELECT id FROM reports WHERE evidence_deleted_at IS NOT NULL)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM screening_clearances WHERE cleared_at <= $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(n)
        })
    }
}

/// Folds one sample into a pairing's strongest flag.
fn merge(into: &mut WallFlag, s: WallFlag) {
    into.samples += 1;
    let stronger = (level_rank(&s.level), s.score) > (level_rank(&into.level), into.score);
    let report_id = into.report_id.take().or(s.report_id.clone());
    if stronger {
        let samples = into.samples;
        *into = WallFlag { samples, ..s };
    }
    if into.report_id.is_none() {
        into.report_id = report_id;
    }
}

impl Store {
    /// Pairings cleared at or after `since` (Unix seconds).
    pub(crate) async fn cleared_since(&self, since: i64) -> Result<HashSet<String>, SignalingError> {
        on_pool!(self, p => {
            let rows = sqlx::query("SELECT pairing_id FROM screening_clearances WHERE cleared_at >= $1")
                .bind(since)
                .fetch_all(p)
                .await?;
            let mut out = HashSet::with_capacity(rows.len());
            for r in rows {
                out.insert(r.try_get::<String, _>("pairing_id")?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(level: &str, score: f64, report: Option<&str>) -> WallFlag {
        WallFlag {
            side: "a".into(),
            category: "nudity".into(),
            score,
            level: level.into(),
            model: "m".into(),
            captured_at: 1,
            samples: 1,
            report_id: report.map(str::to_owned),
            cleared: false,
        }
    }

    #[test]
    fn the_strongest_sample_wins_by_level_then_score_and_the_report_is_kept() {
        let mut f = WallFlag {
            samples: 0,
            ..flag("review", 0.9, None)
        };
        merge(&mut f, flag("review", 0.9, None));
        merge(&mut f, flag("high", 0.75, Some("r1")));
        merge(&mut f, flag("review", 0.95, None));
        assert_eq!((f.level.as_str(), f.score, f.samples), ("high", 0.75, 3));
        assert_eq!(f.report_id.as_deref(), Some("r1"));
    }
}
