//! Live state shared by the replicas: the matching queue, current and last
//! pairings, chat transcripts, who is online, and delivery of messages to the
//! replica holding a user's WebSocket. In memory (`duet up`) or in Redis.

pub mod memory;
pub mod redis;

use crate::error::SignalingError;
use crate::matching::{MatchEvent, Pairing, Ticket};
use proto::signal::ServerMsg;
use proto::{DeviceId, NodeId, PairingId};
use serde::{Deserialize, Serialize};

/// One chat line of a pairing's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    pub at_ms: u64,
    /// `a` or `b`: which side of the pairing wrote it.
    pub from: String,
    /// The device that wrote it.
    pub device: String,
    /// The text as relayed (after the word filter).
    pub text: String,
}

/// A message for one user, wherever their WebSocket is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub user: String,
    pub msg: ServerMsg,
}

#[async_trait::async_trait]
pub trait LiveState: Send + Sync {
    /// Queues `ticket` (replacing its earlier ticket) and returns the events
    /// this produced (a match, at most).
    async fn join(&self, ticket: Ticket, now_ms: u64) -> Result<Vec<MatchEvent>, SignalingError>;
    /// Takes `user` out of the queue.
    async fn leave(&self, user: &str) -> Result<bool, SignalingError>;
    /// Widening and retries; call every `tick_interval` (any replica).
    async fn tick(&self, now_ms: u64) -> Result<Vec<MatchEvent>, SignalingError>;
    /// The two devices never meet again.
    async fn block(&self, a: &DeviceId, b: &DeviceId) -> Result<(), SignalingError>;
    async fn current_pairing(&self, user: &str) -> Result<Option<Pairing>, SignalingError>;
    /// Ends `user`'s current pairing for both sides (exactly one caller gets
    /// it back) and keeps it as both sides' last pairing for reports.
    async fn end_pairing(&self, user: &str, now_ms: u64) -> Result<Option<Pairing>, SignalingError>;
    /// Pairings running now (at most `limit`, in no particular order).
    async fn current_pairings(&self, limit: usize) -> Result<Vec<Pairing>, SignalingError>;
    /// The current or else the most recent pairing of `user` (within the report window).
    async fn last_pairing(&self, user: &str) -> Result<Option<Pairing>, SignalingError>;
    async fn append_chat(&self, pairing: &PairingId, line: ChatLine) -> Result<(), SignalingError>;
    async fn transcript(&self, pairing: &PairingId) -> Result<Vec<ChatLine>, SignalingError>;
    /// Waiting visitors `(video, text)`.
    async fn waiting(&self) -> Result<(u64, u64), SignalingError>;
    /// Visitors with an open WebSocket, all replicas.
    async fn online(&self) -> Result<u64, SignalingError>;
    /// This replica holds `user`'s WebSocket now.
    async fn attach(&self, user: &str) -> Result<(), SignalingError>;
    async fn detach(&self, user: &str) -> Result<(), SignalingError>;
    /// Whether some replica holds `user`'s WebSocket.
    async fn is_attached(&self, user: &str) -> Result<bool, SignalingError>;
    /// Sends a message to `user` through the replica holding their WebSocket.
    async fn deliver(&self, d: Delivery) -> Result<(), SignalingError>;
    /// Background duties (heartbeats); called every tick by each replica.
    async fn housekeeping(&self, now_ms: u64) -> Result<(), SignalingError>;
    async fn ping(&self) -> Result<(), SignalingError>;
    /// Whether the shared state was lost since the last call (Redis came
    /// back empty after a restart): the caller then puts its visitors back
    /// (`Inner::recover_lost_state`). In memory it never is.
    async fn state_lost(&self) -> Result<bool, SignalingError> {
        Ok(false)
    }

    // ---- relocation (node lost or draining; see crate::relocate) ----

    /// The SFU node `user`'s media was moved to, if it moved since the
    /// session token was minted (the token still names the first node).
    async fn user_node(&self, user: &str) -> Result<Option<NodeId>, SignalingError>;
    /// Records that `user`'s media is on `node` now (kept `ttl_ms`).
    async fn set_user_node(&self, user: &str, node: &NodeId, ttl_ms: u64) -> Result<(), SignalingError>;
    /// The pairing's two sides are linked on `node` now (unlink, reports
    /// and snapshots go there). No-op for an unknown pairing.
    async fn set_pairing_node(&self, pairing: &PairingId, node: &NodeId) -> Result<(), SignalingError>;
    /// A short exclusive claim on `key` across replicas: `Some(token)` if
    /// this caller won it (it lapses after `ttl_ms`).
    async fn claim(&self, key: &str, ttl_ms: u64) -> Result<Option<String>, SignalingError>;
    /// Gives a claim back (only if `token` still holds it).
    async fn release(&self, key: &str, token: &str) -> Result<(), SignalingError>;
}
