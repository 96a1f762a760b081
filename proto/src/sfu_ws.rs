//! The browser's WebSocket to its SFU node (`/sfu/ws?token=…`): SDP
//! offer/answer, trickle ICE both ways, state events and errors.
//! One peer connection per visit: the browser offers once (sendrecv audio
//! and video), the SFU answers; later offers are ICE restarts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest message the SFU accepts from a client (an SDP offer fits easily).
pub const MAX_SFU_WS_MESSAGE_BYTES: usize = 64 * 1024;

/// A trickled ICE candidate, as `RTCIceCandidateInit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, rename = "sdpMid", skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
}

/// Client -> SFU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SfuClientMsg {
    Offer {
        sdp: String,
    },
    Candidate {
        candidate: IceCandidate,
    },
    /// The browser finished gathering.
    EndOfCandidates,
    Ping,
}

/// Connection state reported to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// SFU -> client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfuServerMsg {
    Answer { sdp: String },
    Candidate { candidate: IceCandidate },
    State { state: PeerState },
    Pong,
    Error { code: String, message: String },
}
