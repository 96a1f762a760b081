//! SFU node registry records, written by nodes (heartbeat with a TTL) and
//! read by signaling for placement.

use crate::{NodeId, Region};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a node says about itself on every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeRecord {
    pub node_id: NodeId,
    pub region: Region,
    /// Public WebSocket URL for browsers (`ws(s)://…/sfu/ws`).
    pub public_ws_url: String,
    /// Internal API base URL (`http://…`), reachable by signaling only.
    pub internal_url: String,
    /// Public TURN host (name or IP) for `turn:`/`turns:` URLs.
    pub turn_host: String,
    pub turn_udp_port: u16,
    pub turn_tcp_port: u16,
    pub turn_tls_port: Option<u16>,
    /// Participants the node accepts at most.
    pub capacity: u32,
    /// Participants on the node now.
    pub load: u32,
    /// Draining nodes take no new visitors.
    pub draining: bool,
    /// Unix milliseconds of the heartbeat.
    pub heartbeat_ms: u64,
}

impl NodeRecord {
    /// Free participant slots.
    pub fn spare(&self) -> u32 {
        self.capacity.saturating_sub(self.load)
    }

    /// Whether the node may take a new visitor.
    pub fn accepts_visitors(&self) -> bool {
        !self.draining && self.spare() > 0
    }
}

/// Redis layout of the node registry, shared by the SFU (writer) and
/// signaling (reader). `prefix` lets several deployments or tests share one
/// Redis.
pub mod redis_keys {
    use crate::NodeId;

    /// How long a node's record lives without a heartbeat.
    pub const NODE_TTL_SECS: u64 = 6;
    /// How often a node refreshes its record.
    pub const HEARTBEAT_INTERVAL_MS: u64 = 1_000;

    /// `SET {prefix}node:{id} <NodeRecord JSON> EX NODE_TTL_SECS`.
    pub fn node(prefix: &str, node_id: &NodeId) -> String {
        format!("{prefix}node:{node_id}")
    }

    /// A set of node ids, `SADD` on heartbeat; readers drop members whose
    /// record key has expired.
    pub fn node_index(prefix: &str) -> String {
        format!("{prefix}nodes")
    }
}
