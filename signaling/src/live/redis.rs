//! Live state in Redis, shared by several signaling replicas.
//!
//! Matching runs in one Lua script (`match.lua`, the rules of
//! [`crate::matching`]) so that a join, a tick or the end of a pairing is
//! atomic whichever replica runs it. Messages for a user go to the replica
//! that holds the user's WebSocket (`{prefix}conn:{user}` names it) over the
//! pub/sub channel `{prefix}replica:{id}`.

use super::{ChatLine, Delivery, LiveState};
use crate::conns::LocalConns;
use crate::error::SignalingError;
use crate::matching::{MatchEvent, MatchRules, PairSide, Pairing, Ticket, SCAN_LIMIT};
use futures::StreamExt;
use parking_lot::Mutex;
use proto::signal::Mode;
use proto::{DeviceId, NodeId, PairingId, ParticipantId};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = include_str!("match.lua");
/// How long a `conn:` key lives without a refresh (replica crash clean-up).
const CONN_TTL_SECS: u64 = 60;
const CONN_REFRESH_MS: u64 = 20_000;
/// A replica's online count older than this is ignored.
const ONLINE_STALE_MS: u64 = 15_000;

pub struct RedisLive {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
    rules: MatchRules,
    report_window_ms: u64,
    transcript_max: usize,
    replica_id: String,
    conns: Arc<LocalConns>,
    last_refresh_ms: Mutex<u64>,
    /// The value of `{prefix}epoch` this replica last saw. The first replica
    /// writes a random one; a Redis that restarted empty has none, so a
    /// missing or different value means the live state was lost.
    epoch: Mutex<Option<String>>,
}

/// Backoff of the pub/sub listener's reconnection attempts.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);

/// Hands deliveries from this replica's pub/sub channel to its sockets until
/// `cancel`; when the connection to Redis drops it subscribes again (with
/// backoff), so cross-replica delivery comes back with Redis. Deliveries
/// published while it was away are lost (pub/sub keeps nothing); what they
/// said is put right by the state recovery.
async fn listen(
    client: redis::Client,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    conns: Arc<LocalConns>,
    cancel: CancellationToken,
) {
    loop {
        {
            let mut stream = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        match serde_json::from_slice::<Delivery>(msg.get_payload_bytes()) {
                            Ok(d) => {
                                conns.deliver(&d.user, d.msg);
                            }
                            Err(e) => tracing::warn!(error = %e, "bad delivery on pub/sub"),
                        }
                    }
                }
            }
        }
        tracing::warn!("redis pub/sub connection lost; subscribing again");
        let mut wait = RESUBSCRIBE_MIN;
        pubsub = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match subscribe(&client, &channel).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::debug!(error = %e, "redis pub/sub: subscribing failed");
                    wait = (wait * 2).min(RESUBSCRIBE_MAX);
                }
            }
        };
        tracing::info!("redis pub/sub subscribed again");
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

impl RedisLive {
    /// Connects and starts the pub/sub listener for this replica (ends with `cancel`).
    #[allow(clippy::too_many_arguments)]
    pub async fn connect(
        url: &str,
        prefix: String,
        rules: MatchRules,
        report_window_ms: u64,
        transcript_max: usize,
        replica_id: String,
        conns: Arc<LocalConns>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, SignalingError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        let channel = format!("{prefix}replica:{replica_id}");
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        tokio::spawn(listen(client, channel, pubsub, conns.clone(), cancel));
        let live = Arc::new(Self {
            conn,
            prefix,
            script: redis::Script::new(SCRIPT),
            rules,
            report_window_ms,
            transcript_max,
            replica_id,
            conns,
            last_refresh_ms: Mutex::new(0),
            epoch: Mutex::new(None),
        });
        live.state_lost().await?;
        Ok(live)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{}", self.prefix, rest)
    }

    async fn run(&self, op: &str, now_ms: u64, args: &[&str]) -> Result<Vec<String>, SignalingError> {
        let stem = format!("{}-", uuid::Uuid::new_v4().simple());
        let mut inv = self.script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(op)
            .arg(now_ms)
            .arg(self.rules.widen_after.as_millis() as u64)
            .arg(self.rules.cooldown.as_millis() as u64)
            .arg(SCAN_LIMIT)
            .arg(self.report_window_ms.max(1))
            .arg(stem);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    async fn events(&self, out: Vec<String>) -> Result<Vec<MatchEvent>, SignalingError> {
        let mut events = Vec::new();
        for chunk in out.chunks(2) {
            match chunk {
                [t, v] if t == "m" => {
                    if let Some(p) = self.load_pairing(v).await? {
                        events.push(MatchEvent::Matched(p));
                    }
                }
                [t, v] if t == "w" => events.push(MatchEvent::Widened { user: v.clone() }),
                _ => {}
            }
        }
        Ok(events)
    }

    async fn load_pairing(&self, pid: &str) -> Result<Option<Pairing>, SignalingError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn.hgetall(self.key(&format!("pair:{pid}"))).await?;
        if h.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| h.get(k).cloned().unwrap_or_default();
        let split = |s: String| -> Vec<String> {
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let side = |p: &str| PairSide {
            user: get(&format!("{p}_user")),
            device: DeviceId::new(get(&format!("{p}_device"))),
            participant: ParticipantId::new(get(&format!("{p}_part"))),
            node: NodeId::new(get(&format!("{p}_node"))),
            waited_ms: get(&format!("{p}_waited")).parse().unwrap_or(0),
            lang: Some(get(&format!("{p}_lang"))).filter(|l| !l.is_empty()),
            interests: split(get(&format!("{p}_interests"))),
        };
        let mode = match get("mode").as_str() {
            "text" => Mode::Text,
            _ => Mode::Video,
        };
        Ok(Some(Pairing {
            pairing_id: PairingId::new(pid),
            mode,
            a: side("a"),
            b: side("b"),
            common_interests: split(get("common")),
            matched_ms: get("matched").parse().unwrap_or(0),
        }))
    }
}

#[async_trait::async_trait]
impl LiveState for RedisLive {
    async fn join(&self, ticket: Ticket, now_ms: u64) -> Result<Vec<MatchEvent>, SignalingError> {
        let interests = ticket.interests.join(",");
        let lang = ticket.lang.clone().unwrap_or_default();
        let out = self
            .run(
                "join",
                now_ms,
                &[
                    &ticket.user,
                    ticket.device.as_str(),
                    ticket.participant.as_str(),
                    ticket.node.as_str(),
                    ticket.mode.as_str(),
                    &lang,
                    &interests,
                ],
            )
            .await?;
        self.events(out).await
    }

    async fn leave(&self, user: &str) -> Result<bool, SignalingError> {
        let out = self.run("leave", 0, &[user]).await?;
        Ok(out.first().is_some_and(|s| s == "1"))
    }

    async fn tick(&self, now_ms: u64) -> Result<Vec<MatchEvent>, SignalingError> {
        let out = self.run("tick", now_ms, &[]).await?;
        self.events(out).await
    }

    async fn block(&self, a: &DeviceId, b: &DeviceId) -> Result<(), SignalingError> {
        self.run("block", 0, &[a.as_str(), b.as_str()]).await?;
        Ok(())
    }

    async fn current_pairing(&self, user: &str) -> Result<Option<Pairing>, SignalingError> {
        let mut conn = self.conn.clone();
        let pid: Option<String> = conn.get(self.key(&format!("cur:{user}"))).await?;
        match pid {
            Some(pid) => self.load_pairing(&pid).await,
            None => Ok(None),
        }
    }

    async fn end_pairing(&self, user: &str, now_ms: u64) -> Result<Option<Pairing>, SignalingError> {
        let out = self.run("end", now_ms, &[user]).await?;
        match out.first() {
            Some(pid) => self.load_pairing(pid).await,
            None => Ok(None),
        }
    }

    async fn current_pairings(&self, limit: usize) -> Result<Vec<Pairing>, SignalingError> {
        // Every `cur:{user}` names its pairing; each pairing has two.
        let glob_escaped: String = self
            .prefix
            .chars()
            .flat_map(|c| {
                let esc = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
                esc.into_iter().chain(std::iter::once(c))
            })
            .collect();
        let pattern = format!("{glob_escaped}cur:*");
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut ids = std::collections::BTreeSet::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let pids: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
                ids.extend(pids.into_iter().flatten());
            }
            cursor = next;
            if cursor == 0 || ids.len() >= limit {
                break;
            }
        }
        let mut out = Vec::new();
        for pid in ids.into_iter().take(limit) {
            if let Some(p) = self.load_pairing(&pid).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn last_pairing(&self, user: &str) -> Result<Option<Pairing>, SignalingError> {
        if let Some(p) = self.current_pairing(user).await? {
            return Ok(Some(p));
        }
        let mut conn = self.conn.clone();
        let pid: Option<String> = conn.get(self.key(&format!("last:{user}"))).await?;
        match pid {
            Some(pid) => self.load_pairing(&pid).await,
            None => Ok(None),
        }
    }

    async fn append_chat(&self, pairing: &PairingId, line: ChatLine) -> Result<(), SignalingError> {
        let key = self.key(&format!("tr:{pairing}"));
        let json = serde_json::to_string(&line).map_err(|e| SignalingError::Data(e.to_string()))?;
        let mut conn = self.conn.clone();
        let max = self.transcript_max.max(1) as isize;
        redis::pipe()
            .rpush(&key, json)
            .ignore()
            .ltrim(&key, -max, -1)
            .ignore()
            .pexpire(&key, 86_400_000)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn transcript(&self, pairing: &PairingId) -> Result<Vec<ChatLine>, SignalingError> {
        let mut conn = self.conn.clone();
        let lines: Vec<String> = conn.lrange(self.key(&format!("tr:{pairing}")), 0, -1).await?;
        Ok(lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    async fn waiting(&self) -> Result<(u64, u64), SignalingError> {
        let mut conn = self.conn.clone();
        let (v, t): (Option<i64>, Option<i64>) = redis::pipe()
            .get(self.key("wc:video"))
            .get(self.key("wc:text"))
            .query_async(&mut conn)
            .await?;
        Ok((v.unwrap_or(0).max(0) as u64, t.unwrap_or(0).max(0) as u64))
    }

    async fn online(&self) -> Result<u64, SignalingError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn.hgetall(self.key("online")).await?;
        let now = crate::now_ms();
        let mut total = 0;
        for v in h.values() {
            if let Some((count, at)) = v.split_once(':') {
                let at: u64 = at.parse().unwrap_or(0);
                if at + ONLINE_STALE_MS >= now {
                    total += count.parse::<u64>().unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    async fn attach(&self, user: &str) -> Result<(), SignalingError> {
        let mut conn = self.conn.clone();
        conn.set_ex::<_, _, ()>(self.key(&format!("conn:{user}")), &self.replica_id, CONN_TTL_SECS)
            .await?;
        self.publish_online(crate::now_ms()).await
    }

    async fn detach(&self, user: &str) -> Result<(), SignalingError> {
        // Delete only if it still names this replica (the user may have
        // reconnected elsewhere).
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let mut conn = self.conn.clone();
        script
            .key(self.key(&format!("conn:{user}")))
            .arg(&self.replica_id)
            .invoke_async::<i64>(&mut conn)
            .await?;
        self.publish_online(crate::now_ms()).await
    }

    async fn is_attached(&self, user: &str) -> Result<bool, SignalingError> {
        if self.conns.contains(user) {
            return Ok(true);
        }
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.key(&format!("conn:{user}"))).await?)
    }

    async fn deliver(&self, d: Delivery) -> Result<(), SignalingError> {
        if self.conns.contains(&d.user) {
            self.conns.deliver(&d.user, d.msg);
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let replica: Option<String> = conn.get(self.key(&format!("conn:{}", d.user))).await?;
        if let Some(replica) = replica {
            let payload = serde_json::to_string(&d).map_err(|e| SignalingError::Data(e.to_string()))?;
            conn.publish::<_, _, ()>(self.key(&format!("replica:{replica}")), payload)
                .await?;
        }
        Ok(())
    }

    async fn housekeeping(&self, now_ms: u64) -> Result<(), SignalingError> {
        {
            let mut last = self.last_refresh_ms.lock();
            if now_ms < *last + CONN_REFRESH_MS / 4 {
                return Ok(());
            }
            *last = now_ms;
        }
        self.publish_online(now_ms).await?;
        let users = self.conns.users();
        let mut conn = self.conn.clone();
        for chunk in users.chunks(500) {
            let mut pipe = redis::pipe();
            for u in chunk {
                let key = self.key(&format!("conn:{u}"));
                // Written again if Redis lost it; extended if the user
                // reconnected to another replica meanwhile (that one's name stays).
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(&self.replica_id)
                    .arg("NX")
                    .arg("EX")
                    .arg(CONN_TTL_SECS)
                    .ignore();
                pipe.expire(&key, CONN_TTL_SECS as i64).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    async fn state_lost(&self) -> Result<bool, SignalingError> {
        let key = self.key("epoch");
        let mut conn = self.conn.clone();
        let mut now: Option<String> = conn.get(&key).await?;
        if now.is_none() {
            let fresh = uuid::Uuid::new_v4().simple().to_string();
            let _: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&fresh)
                .arg("NX")
                .query_async(&mut conn)
                .await?;
            now = conn.get(&key).await?;
        }
        let mut seen = self.epoch.lock();
        let lost = seen.is_some() && *seen != now;
        if lost {
            // Write this replica's connections back at the next housekeeping.
            *self.last_refresh_ms.lock() = 0;
        }
        *seen = now;
        Ok(lost)
    }

    async fn ping(&self) -> Result<(), SignalingError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    async fn user_node(&self, user: &str) -> Result<Option<NodeId>, SignalingError> {
        let mut conn = self.conn.clone();
        let node: Option<String> = conn.get(self.key(&format!("unode:{user}"))).await?;
        Ok(node.map(NodeId::new))
    }

    async fn set_user_node(&self, user: &str, node: &NodeId, ttl_ms: u64) -> Result<(), SignalingError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(&format!("unode:{user}")))
            .arg(node.as_str())
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn set_pairing_node(&self, pairing: &PairingId, node: &NodeId) -> Result<(), SignalingError> {
        // Only an existing pairing hash is touched (no half-written pairings).
        let script = redis::Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then \
               redis.call('HSET', KEYS[1], 'a_node', ARGV[1], 'b_node', ARGV[1]) return 1 end return 0",
        );
        let mut conn = self.conn.clone();
        script
            .key(self.key(&format!("pair:{pairing}")))
            .arg(node.as_str())
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    async fn claim(&self, key: &str, ttl_ms: u64) -> Result<Option<String>, SignalingError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = self.conn.clone();
        let won: Option<String> = redis::cmd("SET")
            .arg(self.key(&format!("claim:{key}")))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(won.map(|_| token))
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), SignalingError> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let mut conn = self.conn.clone();
        script
            .key(self.key(&format!("claim:{key}")))
            .arg(token)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}

impl RedisLive {
    async fn publish_online(&self, now_ms: u64) -> Result<(), SignalingError> {
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(
            self.key("online"),
            &self.replica_id,
            format!("{}:{}", self.conns.len(), now_ms),
        )
        .await?;
        Ok(())
    }
}
