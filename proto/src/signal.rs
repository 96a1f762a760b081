//! Signaling: the visitor's REST bodies and WebSocket (`/ws`) messages.
//! Every message is documented with examples in docs/api.md.

use crate::{NodeId, PairingId, ParticipantId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest WebSocket text frame signaling accepts from a client.
pub const MAX_WS_MESSAGE_BYTES: usize = 4 * 1024;
/// Most interests a visitor may give.
pub const MAX_INTERESTS: usize = 10;
/// Longest interest, in characters.
pub const MAX_INTEREST_CHARS: usize = 32;
/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 500;
/// Longest report text, in bytes.
pub const MAX_REPORT_TEXT_BYTES: usize = 1024;

/// Call mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Video,
    Text,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Video, Mode::Text];
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Video => "video",
            Mode::Text => "text",
        }
    }
}

/// `POST /api/session` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// Must be `true`: the visitor accepted the rules (18+).
    #[schemars(extend("const" = true))]
    pub accept_rules: bool,
    /// The browser's stable random id.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{8,64}$"))]
    pub device_id: String,
    /// Preferred region; normally set by the ingress header or config.
    #[serde(default)]
    pub region: Option<String>,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Where a visit's media goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SfuPlacement {
    pub node_id: NodeId,
    pub region: String,
    /// WebSocket URL of the node's client endpoint (`…/sfu/ws`).
    pub url: String,
    /// JWT for that node (audience `duet-sfu`).
    pub token: String,
}

/// `iceTransportPolicy` the page should use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum IceTransportPolicy {
    #[default]
    All,
    Relay,
}

/// `POST /api/session` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionResponse {
    pub session_id: String,
    /// Session JWT for `/ws?token=…` and `Authorization: Bearer` on REST.
    pub token: String,
    pub participant_id: ParticipantId,
    pub expires_at: u64,
    pub sfu: SfuPlacement,
    pub ice_servers: Vec<IceServer>,
    pub ice_transport_policy: IceTransportPolicy,
    /// A one-time message for this device, shown once: e.g. that an appeal
    /// was accepted and the ban lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// `POST /api/reports` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub category: ReportCategory,
    #[serde(default)]
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportCategory {
    Nudity,
    Minor,
    Harassment,
    Hate,
    Spam,
    Violence,
    Other,
}

impl ReportCategory {
    /// Higher is more urgent; the report queue sorts by it.
    pub fn severity(self) -> u8 {
        match self {
            ReportCategory::Minor => 5,
            ReportCategory::Violence => 4,
            ReportCategory::Nudity => 3,
            ReportCategory::Hate => 3,
            ReportCategory::Harassment => 2,
            ReportCategory::Spam => 1,
            ReportCategory::Other => 1,
        }
    }
}

/// `POST /api/reports` answer (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReportCreated {
    pub report_id: String,
}

/// `GET /api/stats` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    pub online: u64,
    pub waiting_video: u64,
    pub waiting_text: u64,
}

/// JSON body of every error answer, REST and WebSocket alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `banned`, `rate_limited`, `bad_request`.
    pub code: String,
    pub message: String,
    /// For `banned`: the written statement of reasons, expiry and appeal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban: Option<BanNotice>,
}

/// What a banned visitor is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BanNotice {
    pub ban_id: String,
    pub reason: String,
    /// Unix seconds; `None` for a permanent ban.
    pub expires_at: Option<u64>,
    pub can_appeal: bool,
    /// `pending`, `upheld` or `lifted` once an appeal exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appeal_status: Option<String>,
    /// Token that authorises one appeal of this ban.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appeal_token: Option<String>,
}

/// Messages a visitor sends on `/ws`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    Join {
        mode: Mode,
        #[serde(default)]
        interests: Vec<String>,
        #[serde(default)]
        lang: Option<String>,
    },
    Chat {
        text: String,
    },
    Typing,
    Next,
    Stop,
}

/// Messages signaling sends on `/ws`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// In the queue, looking for a partner.
    Queued {
        mode: Mode,
    },
    /// No one with shared interests yet: now matching with anyone.
    Widened,
    /// Paired. Media flows through the SFU already (no renegotiation).
    Matched {
        pairing_id: PairingId,
        common_interests: Vec<String>,
    },
    /// A chat message from the partner (already filtered).
    Chat {
        text: String,
    },
    /// The partner is typing.
    Typing,
    /// The partner pressed Next/Stop, disconnected or was removed.
    PartnerLeft {
        reason: PartnerLeftReason,
    },
    /// The visit must move to another SFU node (node lost or draining, or
    /// the partner's media is on another node): open a new peer connection
    /// there. The participant id and the session token stay the same.
    Relocate {
        sfu: SfuPlacement,
        /// ICE servers (the TURN relay beside the new node) for the new peer
        /// connection; empty: keep the session's `ice_servers`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// Automatic screening flagged a side of this call above its high
    /// threshold and the operator holds flagged video until a moderator
    /// looks (`held: true`), or a moderator cleared it (`held: false`).
    /// `mine`: it is this visitor's own video the partner no longer sees;
    /// otherwise the partner's video stopped coming. Audio and chat go on.
    VideoHeld {
        held: bool,
        mine: bool,
    },
    Error(ErrorBody),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartnerLeftReason {
    Next,
    Stop,
    Disconnected,
    Reported,
    Ended,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_from_documented_json() {
        let m: ClientMsg =
            serde_json::from_str(r#"{"type":"join","mode":"video","interests":["music"],"lang":"en"}"#)
                .unwrap();
        assert_eq!(
            m,
            ClientMsg::Join {
                mode: Mode::Video,
                interests: vec!["music".into()],
                lang: Some("en".into())
            }
        );
        assert_eq!(
            serde_json::from_str::<ClientMsg>(r#"{"type":"next"}"#).unwrap(),
            ClientMsg::Next
        );
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"fly"}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"chat","text":"x","extra":1}"#).is_err());
    }

    #[test]
    fn a_video_hold_serializes_as_documented() {
        let m = ServerMsg::VideoHeld {
            held: true,
            mine: false,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"video_held","held":true,"mine":false}"#
        );
    }

    #[test]
    fn server_error_serializes_flat() {
        let m = ServerMsg::Error(ErrorBody {
            code: "rate_limited".into(),
            message: "slow".into(),
            ban: None,
        });
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"error","code":"rate_limited","message":"slow"}"#
        );
    }

    #[test]
    fn relocate_without_ice_servers_keeps_its_old_shape() {
        let sfu = SfuPlacement {
            node_id: NodeId::new("eu-2"),
            region: "eu".into(),
            url: "wss://eu-2.example/sfu/ws".into(),
            token: "t".into(),
        };
        let old = r#"{"type":"relocate","sfu":{"node_id":"eu-2","region":"eu","url":"wss://eu-2.example/sfu/ws","token":"t"}}"#;
        let m: ServerMsg = serde_json::from_str(old).unwrap();
        assert_eq!(
            m,
            ServerMsg::Relocate {
                sfu: sfu.clone(),
                ice_servers: vec![]
            }
        );
        assert_eq!(serde_json::to_string(&m).unwrap(), old);
        let with = ServerMsg::Relocate {
            sfu,
            ice_servers: vec![IceServer {
                urls: vec!["turn:10.0.0.2:3478?transport=udp".into()],
                username: Some("u".into()),
                credential: Some("p".into()),
            }],
        };
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["ice_servers"][0]["username"], "u");
        assert_eq!(serde_json::from_value::<ServerMsg>(json).unwrap(), with);
    }
}
