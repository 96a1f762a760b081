//! Moving a visit's media between SFU nodes.
//!
//! - **Node lost.** A node that stops heart-beating is out of the registry
//!   after [`NODE_STALE_AFTER_MS`]; a node whose event stream breaks and
//!   cannot be reopened is suspect at once. Every replica scans its own
//!   visitors each second (and at once on such a signal): a visitor whose node
//!   is out of the registry or suspect, and does not answer a probe, is
//!   *lost*. A lost visitor in a video pairing moves together with its
//!   partner: one replica (a claim in live state) admits both on a healthy node
//!   of the region (then the configured fallbacks), sends each `relocate`,
//!   links them there and sends `matched` again with the same pairing id. A
//!   lost visitor without a video pairing just gets `relocate`.
//! - **Draining.** A node that announced `Draining` (SIGTERM) or whose record
//!   says so gets nobody new; its visitors who are not in a video call move at
//!   once, those in a call stay until the call ends and move then, so the
//!   node's calls are never cut and it empties by itself.
//! - **Linking a new pair.** Both sides must be on one node: a's node, else
//!   b's node (when healthy and not draining), else a fresh one.
//!
//! A visitor's current node is kept in live state ([`LiveState::user_node`]):
//! a reconnecting WebSocket (whose token names the first node) and the linking
//! of later pairs use it.
//!
//! [`LiveState::user_node`]: crate::live::LiveState::user_node

use crate::error::SignalingError;
use crate::matching::{PairSide, Pairing};
use crate::registry::{placement_order, NODE_STALE_AFTER_MS};
use crate::{now_ms, now_secs, Inner, WeakInner};
use futures::StreamExt;
use parking_lot::Mutex;
use proto::registry::NodeRecord;
use proto::signal::{IceServer, Mode, ServerMsg};
use proto::{NodeId, ParticipantId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often each replica checks the nodes of its visitors.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// A node that does not answer its own status within this is taken for lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Lifetime of a relocation claim (a crashed replica's claim lapses).
const CLAIM_TTL_MS: u64 = 15_000;
/// How long linking waits for a visitor another task is moving.
const CLAIM_WAIT: Duration = Duration::from_secs(3);
/// Candidate nodes tried per move.
const MAX_TRIES: usize = 4;
/// Visitors one replica moves at the same time.
const PARALLEL_MOVES: usize = 16;
/// A node's last record is remembered this long (a lost node's region and URL).
const FORGET_AFTER_MS: u64 = 3_600_000;
/// An announced `Draining` lapses when a beat this much later says otherwise
/// (the node restarted), or after [`FORGET_AFTER_MS`].
const DRAIN_MARK_GRACE_MS: u64 = 2 * NODE_STALE_AFTER_MS / 3;

/// What this replica knows about nodes beyond their registry records.
#[derive(Default)]
pub(crate) struct NodeWatch {
    state: Mutex<WatchState>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct WatchState {
    /// The latest record seen per node, and when (this replica's clock).
    seen: HashMap<NodeId, (NodeRecord, u64)>,
    /// Node -> when its event stream broke and could not be reopened.
    unreachable: HashMap<NodeId, u64>,
    /// Node -> when it announced `Draining` on its event stream.
    draining: HashMap<NodeId, u64>,
}

impl NodeWatch {
    /// The node's event stream broke and could not be reopened.
    pub fn mark_unreachable(&self, node: &NodeId) {
        let fresh = self
            .state
            .lock()
            .unreachable
            .insert(node.clone(), now_ms())
            .is_none();
        if fresh {
            tracing::info!(node = %node, "SFU node unreachable (event stream down)");
            self.wake.notify_one();
        }
    }

    /// The node's event stream is open.
    pub fn mark_reachable(&self, node: &NodeId) {
        self.state.lock().unreachable.remove(node);
    }

    /// The node announced `Draining`.
    pub fn mark_draining(&self, node: &NodeId) {
        self.state.lock().draining.insert(node.clone(), now_ms());
        tracing::info!(node = %node, "SFU node draining");
        self.wake.notify_one();
    }

    fn seen(&self, node: &NodeId) -> Option<NodeRecord> {
        self.state.lock().seen.get(node).map(|(r, _)| r.clone())
    }

    /// Fresh registry records minus unreachable nodes, with announced
    /// draining applied.
    fn apply(&self, nodes: Vec<NodeRecord>) -> Vec<NodeRecord> {
        let now = now_ms();
        let mut st = self.state.lock();
        for n in &nodes {
            st.seen.insert(n.node_id.clone(), (n.clone(), now));
        }
        st.seen
            .retain(|_, (_, at)| now.saturating_sub(*at) < FORGET_AFTER_MS);
        st.draining
            .retain(|id, at| match nodes.iter().find(|n| &n.node_id == id) {
                Some(n) => n.draining || n.heartbeat_ms <= at.saturating_add(DRAIN_MARK_GRACE_MS),
                None => now.saturating_sub(*at) < FORGET_AFTER_MS,
            });
        st.unreachable
            .retain(|_, at| now.saturating_sub(*at) < FORGET_AFTER_MS);
        nodes
            .into_iter()
            .filter(|n| !st.unreachable.contains_key(&n.node_id))
            .map(|mut n| {
                if st.draining.contains_key(&n.node_id) {
                    n.draining = true;
                }
                n
            })
            .collect()
    }
}

/// Why a visitor moves (the `reason` label of `duet_signaling_relocations_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Match,
    NodeLost,
    Draining,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Match => "match",
            Reason::NodeLost => "node_lost",
            Reason::Draining => "draining",
        }
    }
}

/// A node as seen from one scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    Draining,
    Lost,
}

enum Outcome {
    Moved,
    Skipped,
    Failed,
}

fn move_key(user: &str) -> String {
    format!("mv:{user}")
}

/// Starts the relocation scan of this replica (ends with `cancel`).
pub(crate) fn spawn(weak: WeakInner, cancel: CancellationToken) {
    let Some(wake) = weak.upgrade().map(|i| i.nodes.wake.clone()) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(SCAN_EVERY) => {}
            }
            let Some(inner) = weak.upgrade() else { break };
            inner.relocation_scan().await;
        }
    });
}

impl Inner {
    /// Nodes fit for placement now: fresh registry records, minus nodes
    /// whose event stream is down, with announced draining applied.
    pub(crate) async fn healthy_nodes(&self) -> Result<Vec<NodeRecord>, SignalingError> {
        let nodes = self.registry.nodes().await?;
        Ok(self.nodes.apply(nodes))
    }

    /// ICE servers for a visit on `node`: its TURN relay, with REST
    /// credentials for `participant`.
    pub(crate) fn ice_servers(&self, node: &NodeRecord, participant: &ParticipantId) -> Vec<IceServer> {
        let cred = proto::turn_cred::mint(
            &self.config.turn_secret,
            participant.as_str(),
            now_secs() + self.config.turn_credential_ttl.as_secs(),
        );
        let host = if node.turn_host.contains(':') && !node.turn_host.starts_with('[') {
            format!("[{}]", node.turn_host)
        } else {
            node.turn_host.clone()
        };
        let mut urls = vec![
            format!("turn:{host}:{}?transport=udp", node.turn_udp_port),
            format!("turn:{host}:{}?transport=tcp", node.turn_tcp_port),
        ];
        if let Some(tls) = node.turn_tls_port {
            urls.push(format!("turns:{host}:{tls}?transport=tcp"));
        }
        vec![IceServer {
            urls,
            username: Some(cred.username),
            credential: Some(cred.password),
        }]
    }

    /// The `relocate` message that moves `participant` to `node`.
    pub(crate) fn relocation(
        &self,
        node: &NodeRecord,
        participant: &ParticipantId,
    ) -> Result<ServerMsg, SignalingError> {
        Ok(ServerMsg::Relocate {
            sfu: self.placement(node, participant)?,
            ice_servers: self.ice_servers(node, participant),
        })
    }

    /// The node a pairing side's media is on now.
    async fn current_node(&self, side: &PairSide) -> NodeId {
        match self.live.user_node(&side.user).await {
            Ok(Some(n)) => n,
            _ => side.node.clone(),
        }
    }

    fn region_of(&self, node: &NodeId, healthy: &[NodeRecord]) -> String {
        healthy
            .iter()
            .find(|n| &n.node_id == node)
            .map(|n| n.region.to_string())
            .or_else(|| self.nodes.seen(node).map(|n| n.region.to_string()))
            .unwrap_or_else(|| self.config.region.clone())
    }

    /// Waits (bounded) for an exclusive claim on `key`; `None` if it stays taken.
    async fn claim_wait(&self, key: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            match self.live.claim(key, CLAIM_TTL_MS).await {
                Ok(Some(token)) => return Some(token),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "relocation claim failed");
                    return None;
                }
            }
        }
    }

    async fn release(&self, key: &str, token: Option<String>) {
        if let Some(t) = token {
            if let Err(e) = self.live.release(key, &t).await {
                tracing::debug!(error = %e, "releasing a relocation claim failed");
            }
        }
    }

    /// Records that `user`'s media moves to `node` (admitted there already)
    /// and tells the user, wherever its WebSocket is.
    async fn tell_moved(
        &self,
        user: &str,
        participant: &ParticipantId,
        node: &NodeRecord,
        reason: Reason,
    ) -> Result<(), SignalingError> {
        let ttl_ms = u64::try_from(self.config.session_ttl.as_millis()).unwrap_or(u64::MAX);
        self.live.set_user_node(user, &node.node_id, ttl_ms).await?;
        let msg = self.relocation(node, participant)?;
        self.deliver(user, msg).await;
        self.metrics
            .relocations
            .with_label_values(&[reason.label(), "ok"])
            .inc();
        Ok(())
    }

    /// Links a new pair on one node (a's, else b's, else a fresh one; never
    /// a draining or lost one), moving the sides that are elsewhere.
    pub(crate) async fn link(&self, p: &Pairing) -> Result<(), SignalingError> {
        let (ka, kb) = (move_key(&p.a.user), move_key(&p.b.user));
        let ta = self.claim_wait(&ka).await;
        let tb = self.claim_wait(&kb).await;
        let r = self.link_on_one_node(p, Reason::Match, None).await;
        self.release(&kb, tb).await;
        self.release(&ka, ta).await;
        r.map(|_| ())
    }

    /// The linking itself; `avoid`: a node that must not be used (lost).
    async fn link_on_one_node(
        &self,
        p: &Pairing,
        reason: Reason,
        avoid: Option<&NodeId>,
    ) -> Result<NodeRecord, SignalingError> {
        let na = self.current_node(&p.a).await;
        let nb = self.current_node(&p.b).await;
        let healthy = self.healthy_nodes().await?;
        let region = self.region_of(&na, &healthy);
        let mut cands: Vec<NodeRecord> = Vec::new();
        for id in [&na, &nb] {
            if let Some(n) = healthy.iter().find(|n| &n.node_id == id && !n.draining) {
                cands.push(n.clone());
            }
        }
        cands.extend(placement_order(&healthy, &region, &self.config.region_fallbacks));
        let mut tried: Vec<NodeId> = Vec::new();
        for node in cands {
            if avoid == Some(&node.node_id) || tried.contains(&node.node_id) {
                continue;
            }
            if tried.len() >= MAX_TRIES {
                break;
            }
            tried.push(node.node_id.clone());
            let movers: Vec<&PairSide> = [(&p.a, &na), (&p.b, &nb)]
                .into_iter()
                .filter(|(_, n)| **n != node.node_id)
                .map(|(s, _)| s)
                .collect();
            let mut admitted = true;
            for s in &movers {
                if let Err(e) = self.sfu.admit(&node, &s.participant).await {
                    self.metrics.sfu_errors.inc();
                    tracing::warn!(error = %e, "admission for a pair refused; trying the next node");
                    admitted = false;
                    break;
                }
            }
            if !admitted {
                continue;
            }
            for s in &movers {
                self.tell_moved(&s.user, &s.participant, &node, reason).await?;
            }
            self.sfu.link(&node, &p.a.participant, &p.b.participant).await?;
            if node.node_id != p.a.node || node.node_id != p.b.node {
                self.live.set_pairing_node(&p.pairing_id, &node.node_id).await?;
            }
            return Ok(node);
        }
        Err(SignalingError::Sfu {
            node: na.to_string(),
            message: "no node can take this pair".into(),
        })
    }

    /// One pass over this replica's visitors (see the module doc).
    pub(crate) async fn relocation_scan(&self) {
        let entries = self.conns.placements();
        if entries.is_empty() {
            return;
        }
        let healthy = match self.healthy_nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "node registry unavailable; relocation scan skipped");
                return;
            }
        };
        let mut verdicts: HashMap<NodeId, Verdict> = HashMap::new();
        let mut work = Vec::new();
        for (user, participant, node) in entries {
            let verdict = match verdicts.get(&node) {
                Some(v) => *v,
                None => {
                    let v = self.judge(&node, &healthy).await;
                    if v == Verdict::Lost {
                        tracing::warn!(node = %node, "SFU node lost; moving its visitors");
                    }
                    verdicts.insert(node.clone(), v);
                    v
                }
            };
            if verdict != Verdict::Fine {
                work.push((user, participant, node, verdict));
            }
        }
        if work.is_empty() {
            return;
        }
        let outcomes: Vec<(Verdict, Outcome)> = futures::stream::iter(work)
            .map(|(user, participant, node, verdict)| async move {
                let o = self.move_visitor(&user, &participant, &node, verdict).await;
                (verdict, o)
            })
            .buffer_unordered(PARALLEL_MOVES)
            .collect()
            .await;
        let failed_lost = outcomes
            .iter()
            .filter(|(v, o)| *v == Verdict::Lost && matches!(o, Outcome::Failed))
            .count();
        let failed_draining = outcomes
            .iter()
            .filter(|(v, o)| *v == Verdict::Draining && matches!(o, Outcome::Failed))
            .count();
        if failed_lost > 0 {
            tracing::warn!(
                visitors = failed_lost,
                "visitors of a lost node could not be moved yet (no node with room)"
            );
        }
        if failed_draining > 0 {
            tracing::debug!(
                visitors = failed_draining,
                "visitors of a draining node could not be moved yet"
            );
        }
    }

    async fn judge(&self, node: &NodeId, healthy: &[NodeRecord]) -> Verdict {
        if let Some(n) = healthy.iter().find(|n| &n.node_id == node) {
            return if n.draining {
                Verdict::Draining
            } else {
                Verdict::Fine
            };
        }
        // Out of the registry, or its event stream is down: ask the node.
        let Some(rec) = self.nodes.seen(node) else {
            return Verdict::Lost;
        };
        match self.sfu.node_info(&rec, PROBE_TIMEOUT).await {
            Ok(r) if &r.node_id == node && r.draining => Verdict::Draining,
            Ok(r) if &r.node_id == node => Verdict::Fine,
            _ => Verdict::Lost,
        }
    }

    async fn move_visitor(
        &self,
        user: &str,
        participant: &ParticipantId,
        from: &NodeId,
        verdict: Verdict,
    ) -> Outcome {
        let pairing = match self.live.current_pairing(user).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "live state unavailable for a relocation");
                return Outcome::Failed;
            }
        };
        match (verdict, pairing) {
            (Verdict::Lost, Some(p)) if p.mode == Mode::Video => self.move_pair(user, p, from).await,
            // The call goes on; the visitor moves when it ends.
            (Verdict::Draining, Some(p)) if p.mode == Mode::Video => Outcome::Skipped,
            _ => self.move_alone(user, participant, from, verdict).await,
        }
    }

    /// Moves a visitor who is not in a video call to another node.
    async fn move_alone(
        &self,
        user: &str,
        participant: &ParticipantId,
        from: &NodeId,
        verdict: Verdict,
    ) -> Outcome {
        let key = move_key(user);
        let token = match self.live.claim(&key, CLAIM_TTL_MS).await {
            Ok(Some(t)) => t,
            _ => return Outcome::Skipped,
        };
        let outcome = self.move_alone_claimed(user, participant, from, verdict).await;
        self.release(&key, Some(token)).await;
        outcome
    }

    async fn move_alone_claimed(
        &self,
        user: &str,
        participant: &ParticipantId,
        from: &NodeId,
        verdict: Verdict,
    ) -> Outcome {
        // Moved meanwhile, or matched meanwhile (linking moves the pair)?
        if self.conns.get(user).map(|e| e.node).as_ref() != Some(from) {
            return Outcome::Skipped;
        }
        match self.live.current_pairing(user).await {
            Ok(Some(p)) if p.mode == Mode::Video => return Outcome::Skipped,
            Ok(_) => {}
            Err(_) => return Outcome::Failed,
        }
        let reason = match verdict {
            Verdict::Lost => Reason::NodeLost,
            _ => Reason::Draining,
        };
        let healthy = match self.healthy_nodes().await {
            Ok(n) => n,
            Err(_) => return Outcome::Failed,
        };
        let region = self.region_of(from, &healthy);
        let cands = placement_order(&healthy, &region, &self.config.region_fallbacks);
        for node in cands.into_iter().filter(|n| &n.node_id != from).take(MAX_TRIES) {
            if let Err(e) = self.sfu.admit(&node, participant).await {
                self.metrics.sfu_errors.inc();
                tracing::warn!(error = %e, "admission refused; trying the next node");
                continue;
            }
            return match self.tell_moved(user, participant, &node, reason).await {
                Ok(()) => {
                    tracing::info!(from = %from, to = %node.node_id, reason = reason.label(), "visitor moved");
                    Outcome::Moved
                }
                Err(e) => {
                    tracing::warn!(error = %e, "telling a visitor about its move failed");
                    Outcome::Failed
                }
            };
        }
        self.metrics
            .relocations
            .with_label_values(&[reason.label(), "failed"])
            .inc();
        Outcome::Failed
    }

    /// Moves a video pair whose node was lost to one healthy node, links it
    /// there and tells both sides (`relocate`, then `matched` again).
    async fn move_pair(&self, user: &str, p: Pairing, from: &NodeId) -> Outcome {
        // One replica moves the pair; the claim is kept until it lapses so
        // a replica that has not yet seen the move does not repeat it.
        let pair_key = format!("mvp:{}:{}", p.pairing_id, from);
        let pair_token = match self.live.claim(&pair_key, CLAIM_TTL_MS).await {
            Ok(Some(t)) => t,
            _ => return Outcome::Skipped,
        };
        let (ka, kb) = (move_key(&p.a.user), move_key(&p.b.user));
        let ta = self.claim_wait(&ka).await;
        let tb = self.claim_wait(&kb).await;
        let still = matches!(
            self.live.current_pairing(user).await,
            Ok(Some(ref cur)) if cur.pairing_id == p.pairing_id
        );
        let outcome = if !still {
            Outcome::Skipped
        } else {
            match self.link_on_one_node(&p, Reason::NodeLost, Some(from)).await {
                Ok(node) => {
                    tracing::info!(from = %from, to = %node.node_id, pairing = %p.pairing_id, "pair moved off a lost node");
                    for side in [&p.a, &p.b] {
                        self.deliver(
                            &side.user,
                            ServerMsg::Matched {
                                pairing_id: p.pairing_id.clone(),
                                common_interests: p.common_interests.clone(),
                            },
                        )
                        .await;
                    }
                    Outcome::Moved
                }
                Err(e) => {
                    self.metrics
                        .relocations
                        .with_label_values(&[Reason::NodeLost.label(), "failed"])
                        .inc();
                    tracing::debug!(error = %e, "moving a pair off a lost node failed");
                    Outcome::Failed
                }
            }
        };
        self.release(&kb, tb).await;
        self.release(&ka, ta).await;
        if !matches!(outcome, Outcome::Moved) {
            self.release(&pair_key, Some(pair_token)).await;
        }
        outcome
    }
}
