//! Signaling's internal screening API, used by screeners (`duet screen`, or
//! the in-process screener of `duet up`) only. It is served on signaling's
//! internal listener, never on the public port; every request carries
//! `Authorization: Bearer <internal token>` (the token SFU nodes take too).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/internal/v1/screening/calls?keyframe_interval_ms=N` | – | 200 [`ScreeningCalls`] |
//! | POST | `/internal/v1/screening/claims` | [`ClaimRequest`] | 200 [`ClaimGranted`] |
//! | POST | `/internal/v1/screening/results` | [`ScreeningResult`] | 200 [`ResultAccepted`] |
//!
//! A screener lists the live video calls, works out which samples are due
//! (its own schedule), claims them (so that several screeners never screen
//! the same sample), fetches each side's snapshot from the call's SFU node
//! (`GET {internal_url}/internal/v1/participants/{id}/snapshot`), scores it
//! and posts the result. Signaling stores flagged samples, sorts the wall
//! and files automatic reports. Errors are JSON [`crate::signal::ErrorBody`].

use crate::signal::ReportCategory;
use crate::{NodeId, PairingId, ParticipantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PATH_CALLS: &str = "/internal/v1/screening/calls";
pub const PATH_CLAIMS: &str = "/internal/v1/screening/claims";
pub const PATH_RESULTS: &str = "/internal/v1/screening/results";

/// Most claims in one request.
pub const MAX_CLAIMS: usize = 256;
/// Most categories in one result.
pub const MAX_CATEGORIES: usize = 32;
/// Longest category name, model id or screener id.
pub const MAX_NAME_LEN: usize = 64;

/// Which side of a pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

/// One side of a live video call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSide {
    pub side: Side,
    pub participant: ParticipantId,
}

/// A live video call as a screener needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreeningCall {
    pub pairing_id: PairingId,
    /// Unix milliseconds of the match (the schedule starts here).
    pub matched_ms: u64,
    pub node_id: NodeId,
    /// The node's internal API base URL (where the snapshots are).
    pub internal_url: String,
    pub sides: Vec<CallSide>,
    /// A moderator cleared this call: it is not screened any more.
    #[serde(default)]
    pub cleared: bool,
}

/// `GET /internal/v1/screening/calls` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreeningCalls {
    pub calls: Vec<ScreeningCall>,
    /// Signaling's clock (Unix milliseconds) when it listed them.
    pub now_ms: u64,
}

/// One sample: side `side` of `pairing_id`, the `slot`-th of its schedule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleKey {
    pub pairing_id: PairingId,
    pub side: Side,
    pub slot: u32,
}

/// `POST /internal/v1/screening/claims`: the samples a screener wants to take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub screener: String,
    pub samples: Vec<SampleKey>,
    /// How long a claim holds (the sampling period is enough).
    pub ttl_ms: u64,
}

/// The claimed samples this screener won (no other screener takes them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimGranted {
    pub samples: Vec<SampleKey>,
}

/// How far a category's score went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below the review threshold.
    Clear,
    /// At or above the review threshold: the wall shows it first.
    Review,
    /// At or above the high threshold: an automatic report too.
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Clear => "clear",
            Level::Review => "review",
            Level::High => "high",
        }
    }
}

/// One category's score in one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryScore {
    pub category: String,
    /// In `0.0..=1.0`.
    pub score: f32,
    pub level: Level,
    /// The report category an automatic report of this category files under.
    pub report_category: ReportCategory,
}

/// `POST /internal/v1/screening/results`: one screened sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreeningResult {
    pub screener: String,
    /// The model's id from its config (recorded with every flag).
    pub model: String,
    pub sample: SampleKey,
    pub participant: ParticipantId,
    pub scores: Vec<CategoryScore>,
    /// The snapshot that produced the scores (base64 WebP), sent only when a
    /// category reached review: pictures of clear samples never leave the screener.
    #[serde(default)]
    pub snapshot_webp_b64: Option<String>,
    /// Age of the snapshot when the screener fetched it.
    pub snapshot_age_ms: u64,
}

impl ScreeningResult {
    /// The highest level any category reached.
    pub fn level(&self) -> Level {
        self.scores.iter().map(|s| s.level).max().unwrap_or(Level::Clear)
    }

    /// The category with the highest level, then the highest score.
    pub fn top(&self) -> Option<&CategoryScore> {
        self.scores
            .iter()
            .max_by(|a, b| a.level.cmp(&b.level).then(a.score.total_cmp(&b.score)))
    }

    /// Per category score (for storage).
    pub fn score_map(&self) -> BTreeMap<String, f32> {
        self.scores
            .iter()
            .map(|s| (s.category.clone(), s.score))
            .collect()
    }
}

/// What signaling did with a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultOutcome {
    /// Nothing reached review; nothing stored.
    Clear,
    /// Stored and flagged (the wall shows it first).
    Flagged,
    /// Flagged and an automatic report was filed (the first of this pairing side).
    Reported,
    /// A moderator cleared the call; not flagged again.
    Cleared,
    /// The call is not running any more.
    Gone,
}

impl ResultOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultOutcome::Clear => "clear",
            ResultOutcome::Flagged => "flagged",
            ResultOutcome::Reported => "reported",
            ResultOutcome::Cleared => "cleared",
            ResultOutcome::Gone => "gone",
        }
    }
}

/// `POST /internal/v1/screening/results` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultAccepted {
    pub outcome: ResultOutcome,
    /// The automatic report of this pairing side, if there is one.
    #[serde(default)]
    pub report_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(category: &str, score: f32, level: Level) -> CategoryScore {
        CategoryScore {
            category: category.into(),
            score,
            level,
            report_category: ReportCategory::Nudity,
        }
    }

    #[test]
    fn the_top_category_is_the_highest_level_then_the_highest_score() {
        let r = ScreeningResult {
            screener: "s".into(),
            model: "m".into(),
            sample: SampleKey {
                pairing_id: PairingId::new("p"),
                side: Side::A,
                slot: 0,
            },
            participant: ParticipantId::new("x"),
            scores: vec![
                score("a", 0.95, Level::Review),
                score("b", 0.7, Level::High),
                score("c", 0.75, Level::High),
            ],
            snapshot_webp_b64: None,
            snapshot_age_ms: 0,
        };
        assert_eq!(r.level(), Level::High);
        assert_eq!(r.top().map(|s| s.category.as_str()), Some("c"));
    }
}
