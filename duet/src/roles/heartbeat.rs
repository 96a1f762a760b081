//! Keeps an SFU node's record in the Redis node registry: `SET` with a TTL
//! and `SADD` to the index on every beat, removed on a clean stop. A node
//! that dies simply expires.

use anyhow::Context;
use proto::registry::{redis_keys, NodeRecord};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn spawn(
    url: &str,
    prefix: &str,
    record: impl Fn() -> NodeRecord + Send + Sync + 'static,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let client = redis::Client::open(url).with_context(|| "bad --redis-url".to_owned())?;
    let prefix = prefix.to_owned();
    Ok(tokio::spawn(async move {
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(redis_keys::HEARTBEAT_INTERVAL_MS));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if conn.is_none() {
                match client.get_multiplexed_async_connection().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "node registry: cannot reach Redis");
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = beat(c, &prefix, &record()).await {
                tracing::warn!(error = %e, "node registry: heartbeat failed");
                conn = None;
            }
        }
        if let Some(c) = conn.as_mut() {
            let rec = record();
            let _: Result<(), _> = redis::pipe()
                .del(redis_keys::node(&prefix, &rec.node_id))
                .srem(redis_keys::node_index(&prefix), rec.node_id.as_str())
                .query_async(c)
                .await;
            tracing::info!("node registry: record removed");
        }
    }))
}

async fn beat(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    rec: &NodeRecord,
) -> anyhow::Result<()> {
    let json = serde_json::to_string(rec)?;
    redis::pipe()
        .set_ex(
            redis_keys::node(prefix, &rec.node_id),
            json,
            redis_keys::NODE_TTL_SECS,
        )
        .sadd(redis_keys::node_index(prefix), rec.node_id.as_str())
        .query_async::<()>(conn)
        .await?;
    Ok(())
}
