//! Types that cross process boundaries in duet.
//!
//! Nothing here does I/O: the signaling service, the SFU and the TURN relay
//! meet only through these types (over HTTP, WebSocket, Redis or the
//! in-process datagram hand-off).

pub mod handoff;
pub mod ids;
pub mod openapi;
pub mod registry;
pub mod screen_api;
pub mod sfu_api;
pub mod sfu_ws;
pub mod signal;
pub mod token;
pub mod trace;
pub mod turn_cred;

pub use ids::{DeviceId, NodeId, PairingId, ParticipantId, Region};
