//! The SFU's internal API, used by signaling only (a separate listener,
//! every request with `Authorization: Bearer <internal token>`; never
//! exposed publicly). Paths are relative to a node's `internal_url`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/internal/v1/participants` | [`AdmitRequest`] | 200 [`Admitted`]; 503 full; 409 draining |
//! | GET | `/internal/v1/participants` | – | 200 [`ParticipantList`] |
//! | DELETE | `/internal/v1/participants/{id}` | – | 204 (kick; 404 unknown) |
//! | GET | `/internal/v1/participants/{id}/snapshot` | – | 200 `image/webp`; 404 no keyframe yet |
//! | PUT | `/internal/v1/participants/{id}/video-hold` | [`VideoHold`] | 204; 404 unknown |
//! | POST | `/internal/v1/link` | [`LinkRequest`] | 204 |
//! | POST | `/internal/v1/unlink` | [`LinkRequest`] | 204 |
//! | POST | `/internal/v1/watch` | [`WatchRequest`] | 204 |
//! | PUT | `/internal/v1/keyframe-interval` | [`KeyframeInterval`] | 204 |
//! | GET | `/internal/v1/events` | – | `text/event-stream` of [`SfuEvent`] (JSON per `data:` line) |
//! | GET | `/internal/v1/node` | – | 200 [`crate::registry::NodeRecord`] |
//! | GET | `/internal/v1/openapi.json` | – | 200 this table as OpenAPI 3.1 |
//!
//! Errors are JSON [`crate::signal::ErrorBody`].

use crate::token::SfuRole;
use crate::ParticipantId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const PATH_PARTICIPANTS: &str = "/internal/v1/participants";
pub const PATH_LINK: &str = "/internal/v1/link";
pub const PATH_UNLINK: &str = "/internal/v1/unlink";
pub const PATH_WATCH: &str = "/internal/v1/watch";
pub const PATH_KEYFRAME_INTERVAL: &str = "/internal/v1/keyframe-interval";
pub const PATH_EVENTS: &str = "/internal/v1/events";
pub const PATH_NODE: &str = "/internal/v1/node";
/// The OpenAPI 3.1 document of this API.
pub const PATH_OPENAPI: &str = "/internal/v1/openapi.json";

/// Reserve a slot for a participant who will connect with an SFU token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdmitRequest {
    pub participant_id: ParticipantId,
    pub role: SfuRole,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Admitted {
    pub participant_id: ParticipantId,
}

/// Link (or unlink) two participants: each receives the other's media.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub a: ParticipantId,
    pub b: ParticipantId,
}

/// A hidden receive-only watcher receives `a`'s and `b`'s media; `stop`
/// ends watching.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    pub watcher: ParticipantId,
    pub a: ParticipantId,
    pub b: ParticipantId,
    #[serde(default)]
    pub stop: bool,
}

/// Holds (or releases) a participant's video towards the partner it is
/// linked with (not towards hidden watchers): automatic screening's
/// optional block. A hold lasts until released or until the next link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoHold {
    pub held: bool,
}

/// Periodic keyframe requests that keep snapshots fresh; `None` turns them off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyframeInterval {
    pub interval_ms: Option<u64>,
}

/// Per-participant figures for `GET /internal/v1/participants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParticipantInfo {
    pub participant_id: ParticipantId,
    pub role: SfuRole,
    pub connected: bool,
    /// Whether the media path runs through the in-process TURN relay.
    pub via_turn: bool,
    /// Participant whose media this one receives, if linked.
    pub linked_to: Option<ParticipantId>,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Age of the latest snapshot keyframe, if any.
    pub snapshot_age_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParticipantList {
    pub participants: Vec<ParticipantInfo>,
}

/// Events a node sends to signaling on `/internal/v1/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfuEvent {
    /// ICE and DTLS are up: media can flow.
    Connected { participant_id: ParticipantId },
    /// The participant is gone (WS closed, ICE/DTLS failed, timeout, kick).
    Disconnected {
        participant_id: ParticipantId,
        reason: String,
    },
    /// The node starts draining: place nobody new here.
    Draining,
}
