//! The SFU node registry (read by placement) and placement by region and load.

use crate::error::SignalingError;
use parking_lot::RwLock;
use proto::registry::{redis_keys, NodeRecord};
use proto::NodeId;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::BTreeMap;

/// A record whose heartbeat is older than this is ignored by readers (the
/// node beats every second; Redis drops the record after
/// [`redis_keys::NODE_TTL_SECS`]). Placement stops using a node that died
/// within about this long.
pub const NODE_STALE_AFTER_MS: u64 = 3_000;

/// Whether `rec`'s last heartbeat is recent enough to trust at `now_ms`.
pub fn is_fresh(rec: &NodeRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(rec.heartbeat_ms) <= NODE_STALE_AFTER_MS
}

/// Where SFU nodes are listed. `duet up` uses [`MemoryRegistry`] and upserts
/// its embedded node; deployments use [`RedisRegistry`], which nodes write
/// with a heartbeat TTL.
#[async_trait::async_trait]
pub trait NodeRegistry: Send + Sync {
    /// Adds or replaces a node's record.
    async fn upsert(&self, rec: NodeRecord) -> Result<(), SignalingError>;
    /// Removes a node.
    async fn remove(&self, node_id: &NodeId) -> Result<(), SignalingError>;
    /// Every live node (for Redis: records with a fresh heartbeat only).
    async fn nodes(&self) -> Result<Vec<NodeRecord>, SignalingError>;
}

/// In-process registry; records live until replaced or removed.
#[derive(Default)]
pub struct MemoryRegistry {
    nodes: RwLock<BTreeMap<NodeId, NodeRecord>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl NodeRegistry for MemoryRegistry {
    async fn upsert(&self, rec: NodeRecord) -> Result<(), SignalingError> {
        self.nodes.write().insert(rec.node_id.clone(), rec);
        Ok(())
    }
    async fn remove(&self, node_id: &NodeId) -> Result<(), SignalingError> {
        self.nodes.write().remove(node_id);
        Ok(())
    }
    async fn nodes(&self) -> Result<Vec<NodeRecord>, SignalingError> {
        Ok(self.nodes.read().values().cloned().collect())
    }
}

/// Registry in Redis with the layout of [`proto::registry::redis_keys`].
pub struct RedisRegistry {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisRegistry {
    pub async fn connect(url: &str, prefix: String) -> Result<Self, SignalingError> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            conn: ConnectionManager::new(client).await?,
            prefix,
        })
    }
}

#[async_trait::async_trait]
impl NodeRegistry for RedisRegistry {
    /// A heartbeat: `heartbeat_ms` is set to now.
    async fn upsert(&self, mut rec: NodeRecord) -> Result<(), SignalingError> {
        rec.heartbeat_ms = crate::now_ms();
        let json = serde_json::to_string(&rec).map_err(|e| SignalingError::Data(e.to_string()))?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .set_ex(
                redis_keys::node(&self.prefix, &rec.node_id),
                json,
                redis_keys::NODE_TTL_SECS,
            )
            .ignore()
            .sadd(redis_keys::node_index(&self.prefix), rec.node_id.as_str())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn remove(&self, node_id: &NodeId) -> Result<(), SignalingError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .del(redis_keys::node(&self.prefix, node_id))
            .ignore()
            .srem(redis_keys::node_index(&self.prefix), node_id.as_str())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, SignalingError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(redis_keys::node_index(&self.prefix)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| redis_keys::node(&self.prefix, &NodeId::new(id.as_str())))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let now = crate::now_ms();
        for (id, v) in ids.iter().zip(values) {
            match v.and_then(|v| serde_json::from_str::<NodeRecord>(&v).ok()) {
                // A node that stopped beating is out before its key expires.
                Some(rec) if is_fresh(&rec, now) => out.push(rec),
                Some(_) => {}
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            // The record expired (no heartbeat): drop it from the index.
            let _: Result<(), _> = conn.srem(redis_keys::node_index(&self.prefix), gone).await;
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(out)
    }
}

/// Candidate nodes for a visitor, best first: the visitor's region, then the
/// configured fallbacks in order, then any other region; within a region the
/// least loaded (by share of capacity) first. Only nodes that accept visitors.
pub fn placement_order(nodes: &[NodeRecord], region: &str, fallbacks: &[String]) -> Vec<NodeRecord> {
    let mut regions: Vec<&str> = vec![region];
    for f in fallbacks {
        if !regions.contains(&f.as_str()) {
            regions.push(f);
        }
    }
    let rank = |r: &str| regions.iter().position(|x| *x == r).unwrap_or(regions.len());
    let mut cands: Vec<NodeRecord> = nodes.iter().filter(|n| n.accepts_visitors()).cloned().collect();
    cands.sort_by(|a, b| {
        let la = a.load as f64 / a.capacity.max(1) as f64;
        let lb = b.load as f64 / b.capacity.max(1) as f64;
        rank(a.region.as_str())
            .cmp(&rank(b.region.as_str()))
            .then(la.partial_cmp(&lb).unwrap_or(std::cmp::Ordering::Equal))
            .then(b.spare().cmp(&a.spare()))
            .then(a.node_id.cmp(&b.node_id))
    });
    cands
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Region;

    fn node(id: &str, region: &str, capacity: u32, load: u32, draining: bool) -> NodeRecord {
        NodeRecord {
            node_id: NodeId::new(id),
            region: Region::new(region),
            public_ws_url: format!("ws://{id}/sfu/ws"),
            internal_url: format!("http://{id}"),
            turn_host: "127.0.0.1".into(),
            turn_udp_port: 3478,
            turn_tcp_port: 3478,
            turn_tls_port: None,
            capacity,
            load,
            draining,
            heartbeat_ms: 0,
        }
    }

    #[test]
    fn a_record_is_stale_three_seconds_after_its_heartbeat() {
        let mut n = node("eu1", "eu", 10, 0, false);
        n.heartbeat_ms = 100_000;
        assert!(is_fresh(&n, 100_000));
        assert!(is_fresh(&n, 100_000 + NODE_STALE_AFTER_MS));
        assert!(!is_fresh(&n, 100_001 + NODE_STALE_AFTER_MS));
        // A clock slightly behind the node's is not "stale".
        assert!(is_fresh(&n, 99_000));
    }

    #[test]
    fn placement_prefers_own_region_then_fallbacks_then_least_loaded() {
        let nodes = vec![
            node("eu1", "eu", 100, 90, false),
            node("eu2", "eu", 100, 10, false),
            node("eu3", "eu", 100, 0, true),
            node("us1", "us", 100, 0, false),
            node("ap1", "ap", 100, 0, false),
            node("eu4", "eu", 100, 100, false),
        ];
        let order: Vec<String> = placement_order(&nodes, "eu", &["ap".into()])
            .into_iter()
            .map(|n| n.node_id.to_string())
            .collect();
        assert_eq!(order, vec!["eu2", "eu1", "ap1", "us1"]);
    }
}
