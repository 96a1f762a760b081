//! Reason templates (the starting text of the written statement of reasons
//! a banned or warned visitor is shown) and the preset ban durations.

use super::Me;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Template {
    pub id: String,
    pub label: String,
    /// The statement shown to the visitor; the moderator may edit it.
    pub statement: String,
    /// Report category this template fits best (preselected in the dialog).
    pub category: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Duration {
    pub label: String,
    pub secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Templates {
    pub templates: Vec<Template>,
    /// Temporary ban presets (report actions use exactly these).
    pub durations: Vec<Duration>,
}

const TEMPLATES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "nudity",
        "Nudity or sexual content",
        "You showed nudity or sexual content on camera. duet does not allow this.",
        Some("nudity"),
    ),
    (
        "minor",
        "Under 18",
        "You appear to be under 18. duet is only for adults.",
        Some("minor"),
    ),
    (
        "harassment",
        "Harassment",
        "You harassed, bullied or insulted the person you were talking to.",
        Some("harassment"),
    ),
    (
        "hate",
        "Hate speech",
        "You used hateful language or symbols against people for who they are.",
        Some("hate"),
    ),
    (
        "violence",
        "Threats or violence",
        "You threatened the person you were talking to or showed violence.",
        Some("violence"),
    ),
    (
        "spam",
        "Spam or scams",
        "You used duet to advertise, spam or scam people.",
        Some("spam"),
    ),
    (
        "other",
        "Other rule breach",
        "You broke duet's rules.",
        Some("other"),
    ),
    ("custom", "Custom statement", "", None),
];

/// Preset temporary ban lengths.
pub const DURATIONS: &[(&str, u64)] = &[
    ("1 hour", 3_600),
    ("1 day", 86_400),
    ("7 days", 7 * 86_400),
    ("30 days", 30 * 86_400),
];

/// Longest statement of reasons, in characters.
pub const MAX_STATEMENT_CHARS: usize = 500;

pub fn templates() -> Templates {
    Templates {
        templates: TEMPLATES
            .iter()
            .map(|(id, label, statement, category)| Template {
                id: (*id).into(),
                label: (*label).into(),
                statement: (*statement).into(),
                category: category.map(str::to_owned),
            })
            .collect(),
        durations: DURATIONS
            .iter()
            .map(|(label, secs)| Duration {
                label: (*label).into(),
                secs: *secs,
            })
            .collect(),
    }
}

pub fn is_template(id: &str) -> bool {
    TEMPLATES.iter().any(|(t, ..)| *t == id)
}

pub fn is_preset_duration(secs: u64) -> bool {
    DURATIONS.iter().any(|(_, s)| *s == secs)
}

/// A cleaned statement: trimmed, control characters removed, 1..=500 characters.
pub fn clean_statement(s: &str) -> Option<String> {
    let s: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (!s.is_empty() && s.chars().count() <= MAX_STATEMENT_CHARS).then_some(s)
}

/// `GET /api/admin/templates`.
pub async fn list(Extension(_me): Extension<Me>) -> Json<Templates> {
    Json(templates())
}
