//! What happens around the matcher: links on the SFU, messages to both
//! sides, ends of pairings, relocation, SFU event streams, ticks.

use crate::conns::Visit;
use crate::error::SignalingError;
use crate::live::{ChatLine, Delivery};
use crate::matching::{MatchEvent, Pairing, Ticket};
use crate::{now_ms, now_secs, Inner, WeakInner};
use proto::registry::NodeRecord;
use proto::sfu_api::SfuEvent;
use proto::signal::{Mode, PartnerLeftReason, ServerMsg, SfuPlacement};
use proto::token::{SfuClaims, SfuRole, AUD_SFU};
use proto::NodeId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl Inner {
    pub(crate) async fn node(&self, id: &NodeId) -> Result<Option<NodeRecord>, SignalingError> {
        Ok(self
            .registry
            .nodes()
            .await?
            .into_iter()
            .find(|n| &n.node_id == id))
    }

    /// The pages' CSP allows connections to these nodes' WebSocket origins.
    pub(crate) fn set_sfu_origins(&self, nodes: &[NodeRecord]) {
        let mut origins: Vec<String> = nodes
            .iter()
            .filter_map(|n| crate::pages::ws_origin(&n.public_ws_url))
            .collect();
        origins.sort();
        origins.dedup();
        let mut current = self.sfu_origins.write();
        if *current != origins {
            *current = origins;
        }
    }

    pub(crate) fn send_local(&self, user: &str, msg: ServerMsg) {
        self.conns.deliver(user, msg);
    }

    pub(crate) async fn deliver(&self, user: &str, msg: ServerMsg) {
        if let Err(e) = self
            .live
            .deliver(Delivery {
                user: user.to_owned(),
                msg,
            })
            .await
        {
            tracing::warn!(error = %e, "could not deliver a message");
        }
    }

    /// Queues `ticket` and handles what follows (a match, at most).
    /// `Ok(true)`: the ticket's user was paired (and linked) in this call.
    pub(crate) async fn join(&self, ticket: Ticket) -> Result<bool, SignalingError> {
        let user = ticket.user.clone();
        let mode = ticket.mode;
        // Queued goes out before a possible Matched.
        self.conns.set_visit(&user, Visit::Queued(ticket.clone()));
        self.send_local(&user, ServerMsg::Queued { mode });
        tracing::debug!(target: "duet::timing", participant = %ticket.participant, "queued");
        let events = self.live.join(ticket, now_ms()).await?;
        Ok(self.process(events).await.contains(&user))
    }

    /// Handles matcher events; returns the users paired by them.
    pub(crate) async fn process(&self, events: Vec<MatchEvent>) -> Vec<String> {
        let mut paired = Vec::new();
        let mut work: VecDeque<MatchEvent> = events.into();
        while let Some(ev) = work.pop_front() {
            match ev {
                MatchEvent::Widened { user } => self.deliver(&user, ServerMsg::Widened).await,
                MatchEvent::Matched(p) => {
                    let users = [p.a.user.clone(), p.b.user.clone()];
                    match self.on_matched(p).await {
                        Ok(None) => paired.extend(users),
                        Ok(Some(more)) => work.extend(more),
                        Err(e) => tracing::warn!(error = %e, "handling a match failed"),
                    }
                }
            }
        }
        paired
    }

    /// Links a new pair and tells both sides; `Some(events)` when a side
    /// was gone and the other went back to the queue instead.
    async fn on_matched(&self, p: Pairing) -> Result<Option<Vec<MatchEvent>>, SignalingError> {
        // A side whose WebSocket is gone (replica crash, race with a close)
        // is dropped and the other side goes back to the queue.
        let a_here = self.live.is_attached(&p.a.user).await?;
        let b_here = self.live.is_attached(&p.b.user).await?;
        if !(a_here && b_here) {
            self.live.end_pairing(&p.a.user, now_ms()).await?;
            let mut more = Vec::new();
            for (side, here) in [(&p.a, a_here), (&p.b, b_here)] {
                if here {
                    more.extend(self.live.join(side.ticket(p.mode), now_ms()).await?);
                }
            }
            return Ok(Some(more));
        }
        self.metrics.matches.inc();
        self.metrics.time_to_match.observe(p.a.waited_ms as f64 / 1000.0);
        self.metrics.time_to_match.observe(p.b.waited_ms as f64 / 1000.0);
        // In the trace of side a (of b when a's connection is elsewhere), linked to the other's.
        let trace_of = |user: &str| self.conns.get(user).and_then(|e| e.trace);
        let (ta, tb) = (trace_of(&p.a.user), trace_of(&p.b.user));
        let span = tracing::info_span!(
            target: "signaling::visit",
            "match",
            pairing_id = p.pairing_id.as_str(),
            mode = p.mode.as_str(),
            waited_ms_a = p.a.waited_ms,
            waited_ms_b = p.b.waited_ms,
            same_node = p.a.node == p.b.node,
        );
        let (parent, other) = if ta.is_some() { (ta, tb) } else { (tb, ta) };
        proto::trace::set_parent(&span, parent.as_ref());
        proto::trace::add_link(&span, other.as_ref());
        tracing::debug!(
            target: "duet::timing",
            pairing = %p.pairing_id,
            a = %p.a.participant,
            b = %p.b.participant,
            "matched"
        );
        let link = async {
            if p.mode != Mode::Video {
                return;
            }
            let asked = Instant::now();
            match self.link(&p).await {
                Ok(()) => tracing::debug!(
                    target: "duet::timing",
                    pairing = %p.pairing_id,
                    link_ms = asked.elapsed().as_secs_f64() * 1000.0,
                    "linked"
                ),
                Err(e) => {
                    self.metrics.sfu_errors.inc();
                    tracing::warn!(error = %e, pairing = %p.pairing_id, "linking on the SFU failed");
                }
            }
        };
        let tell = async {
            for me in [&p.a, &p.b] {
                self.deliver(
                    &me.user,
                    ServerMsg::Matched {
                        pairing_id: p.pairing_id.clone(),
                        common_interests: p.common_interests.clone(),
                    },
                )
                .await;
            }
            tracing::debug!(target: "duet::timing", pairing = %p.pairing_id, "matched sent");
        };
        // Matched goes out after the link, not beside it: a side that moves
        // to its partner's node hears Relocate first. The link costs about
        // a millisecond on a local node, and the picture waits for the
        // keyframe, not for this message.
        link.instrument(span).await;
        tell.await;
        Ok(None)
    }

    /// An SFU placement (URL + token) for `participant` on `node`.
    pub(crate) fn placement(
        &self,
        node: &NodeRecord,
        participant: &proto::ParticipantId,
    ) -> Result<SfuPlacement, SignalingError> {
        let now = now_secs();
        let claims = SfuClaims {
            sub: participant.clone(),
            aud: AUD_SFU.into(),
            exp: now + self.config.session_ttl.as_secs(),
            iat: now,
            node: node.node_id.clone(),
            role: SfuRole::User,
            // The SFU's spans for this visit join the span that placed it.
            tp: proto::trace::current(),
        };
        Ok(SfuPlacement {
            node_id: node.node_id.clone(),
            region: node.region.to_string(),
            url: node.public_ws_url.clone(),
            token: self.sfu_key.mint(&claims)?,
        })
    }

    /// Ends `user`'s pairing (if any): unlink on the SFU, tell the partner.
    pub(crate) async fn end_pairing(
        &self,
        user: &str,
        reason: PartnerLeftReason,
    ) -> Result<Option<Pairing>, SignalingError> {
        let Some(p) = self.live.end_pairing(user, now_ms()).await? else {
            return Ok(None);
        };
        self.on_pairing_ended(&p, reason, now_ms());
        if p.mode == Mode::Video {
            let asked = Instant::now();
            match self.node(&p.a.node).await {
                Ok(Some(node)) => {
                    if let Err(e) = self.sfu.unlink(&node, &p.a.participant, &p.b.participant).await {
                        self.metrics.sfu_errors.inc();
                        tracing::warn!(error = %e, "unlink failed");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "registry unavailable for unlink"),
            }
            tracing::debug!(
                target: "duet::timing",
                pairing = %p.pairing_id,
                unlink_ms = asked.elapsed().as_secs_f64() * 1000.0,
                "unlinked"
            );
        }
        if let Some((_, partner)) = p.sides_for(user) {
            self.deliver(&partner.user, ServerMsg::PartnerLeft { reason })
                .await;
        }
        Ok(Some(p))
    }

    /// Relays a chat line to the partner and keeps it in the transcript.
    /// `Ok(false)` when not paired.
    pub(crate) async fn chat(&self, user: &str, text: &str) -> Result<bool, SignalingError> {
        let Some(p) = self.live.current_pairing(user).await? else {
            return Ok(false);
        };
        let Some((me, partner)) = p.sides_for(user) else {
            return Ok(false);
        };
        let filtered = self.filter.apply(text);
        let from = if p.a.user == user { "a" } else { "b" };
        self.live
            .append_chat(
                &p.pairing_id,
                ChatLine {
                    at_ms: now_ms(),
                    from: from.into(),
                    device: me.device.to_string(),
                    text: filtered.clone(),
                },
            )
            .await?;
        self.metrics.chat_messages.inc();
        self.deliver(&partner.user, ServerMsg::Chat { text: filtered })
            .await;
        Ok(true)
    }

    pub(crate) async fn typing(&self, user: &str) -> Result<bool, SignalingError> {
        let Some(p) = self.live.current_pairing(user).await? else {
            return Ok(false);
        };
        let Some((_, partner)) = p.sides_for(user) else {
            return Ok(false);
        };
        self.deliver(&partner.user, ServerMsg::Typing).await;
        Ok(true)
    }

    /// The user's WebSocket closed (or media vanished): leave everything.
    pub(crate) async fn leave_all(&self, user: &str, reason: PartnerLeftReason) {
        if let Err(e) = self.live.leave(user).await {
            tracing::warn!(error = %e, "leaving the queue failed");
        }
        if let Err(e) = self.end_pairing(user, reason).await {
            tracing::warn!(error = %e, "ending a pairing failed");
        }
    }

    /// The live state was lost (Redis restarted empty): puts this replica's
    /// visitors back as far as it can. Waiting ones join the queue again with
    /// their ticket. Paired ones lost their pairing with it — nobody could
    /// Next, report or chat in it any more — so each is told the partner left
    /// and its link on the SFU is undone; their media connection stays and
    /// Next queues them as usual. (Their connections are written back by the
    /// next housekeeping, right after this.)
    pub(crate) async fn recover_lost_state(&self) {
        let visits = self.conns.visits();
        tracing::warn!(
            visitors = visits.len(),
            "live state lost (Redis restarted empty?): re-queueing waiting visitors, ending pairings"
        );
        self.metrics.live_state_lost.inc();
        self.restore_report_blocks().await;
        let mut linked: HashMap<NodeId, HashMap<proto::ParticipantId, proto::ParticipantId>> = HashMap::new();
        for (user, participant, node, visit) in visits {
            match visit {
                Visit::Idle => {}
                Visit::Queued(mut ticket) => {
                    ticket.participant = participant;
                    ticket.node = node;
                    if let Err(e) = self.join(ticket).await {
                        tracing::warn!(error = %e, "re-queueing after the live state was lost failed");
                    }
                }
                Visit::Paired(_) => {
                    if !linked.contains_key(&node) {
                        let links = self.links_on(&node).await;
                        linked.insert(node.clone(), links);
                    }
                    if let Some(partner) = linked.get(&node).and_then(|l| l.get(&participant)) {
                        if let Ok(Some(rec)) = self.node(&node).await {
                            if let Err(e) = self.sfu.unlink(&rec, &participant, partner).await {
                                tracing::warn!(error = %e, "unlink after the live state was lost failed");
                            }
                        }
                    }
                    self.send_local(
                        &user,
                        ServerMsg::PartnerLeft {
                            reason: PartnerLeftReason::Disconnected,
                        },
                    );
                }
            }
        }
    }

    /// Reporters and reported devices never meet again: the blocks went
    /// with the live state, the reports are in the database. One replica
    /// (a claim) writes them back, before anyone is queued again.
    async fn restore_report_blocks(&self) {
        let Ok(Some(_)) = self.live.claim("report-blocks-restore", 60_000).await else {
            return;
        };
        match self.store.report_blocks().await {
            Ok(blocks) => {
                for (a, b) in &blocks {
                    let (a, b) = (proto::DeviceId::new(a.as_str()), proto::DeviceId::new(b.as_str()));
                    if let Err(e) = self.live.block(&a, &b).await {
                        tracing::warn!(error = %e, "restoring a report block failed");
                        return;
                    }
                }
                tracing::info!(
                    blocks = blocks.len(),
                    "report blocks restored into the live state"
                );
            }
            Err(e) => tracing::warn!(error = %e, "report blocks not restored: database unavailable"),
        }
    }

    /// Who is linked to whom on `node` (empty if it cannot be asked).
    async fn links_on(&self, node: &NodeId) -> HashMap<proto::ParticipantId, proto::ParticipantId> {
        let Ok(Some(rec)) = self.node(node).await else {
            return HashMap::new();
        };
        match self.admin.sfu.participants(&rec).await {
            Ok(list) => list
                .into_iter()
                .filter_map(|p| Some((p.participant_id, p.linked_to?)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list a node's links");
                HashMap::new()
            }
        }
    }

    async fn on_sfu_event(&self, node: &NodeId, ev: SfuEvent) {
        if let SfuEvent::Draining = ev {
            // Nobody new goes there; its visitors move (crate::relocate).
            self.nodes.mark_draining(node);
            return;
        }
        if let SfuEvent::Connected { participant_id } = &ev {
            self.conns.mark_media_connected(node, participant_id);
            // ICE and DTLS are up: a mark in the visit's trace.
            if let Some((user, _)) = self.conns.find_participant(node, participant_id) {
                let span = tracing::info_span!(
                    target: "signaling::visit",
                    "media_connected",
                    participant_id = participant_id.as_str(),
                    node_id = node.as_str(),
                );
                proto::trace::set_parent(&span, self.conns.get(&user).and_then(|e| e.trace).as_ref());
            }
            return;
        }
        if let SfuEvent::Disconnected {
            participant_id,
            reason,
        } = ev
        {
            if let Some((user, _)) = self.conns.find_participant(node, &participant_id) {
                if !self.conns.media_connected(&user) {
                    // Never connected media (text mode, or a page still
                    // connecting): the node only let its admission lapse.
                    tracing::debug!(%reason, "admission lapsed without media; visit goes on");
                    return;
                }
                tracing::debug!(%reason, "participant left its SFU node");
                self.leave_all(&user, PartnerLeftReason::Disconnected).await;
                self.send_local(
                    &user,
                    ServerMsg::Error(proto::signal::ErrorBody {
                        code: "media_disconnected".into(),
                        message: "your media connection to the server ended".into(),
                        ban: None,
                    }),
                );
            }
        }
    }
}

/// Starts the tick loop and the SFU event subscriptions.
pub(crate) fn spawn_background(weak: WeakInner, cancel: CancellationToken) {
    let tick_weak = weak.clone();
    let tick_cancel = cancel.clone();
    tokio::spawn(async move {
        let interval = match tick_weak.upgrade() {
            Some(i) => i.config.tick_interval,
            None => return,
        };
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick_cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let Some(inner) = tick_weak.upgrade() else { break };
            let now = now_ms();
            match inner.live.tick(now).await {
                Ok(events) => {
                    inner.note_dependency("redis", true);
                    inner.process(events).await;
                }
                Err(e) => {
                    // Once per outage at warn (the gauge was up), then quietly.
                    if inner.metrics.dependency_up.with_label_values(&["redis"]).get() == 1 {
                        tracing::warn!(error = %e, "matching tick failed");
                    } else {
                        tracing::debug!(error = %e, "matching tick failed");
                    }
                    inner.note_dependency("redis", false);
                }
            }
            let lost = match inner.live.state_lost().await {
                Ok(lost) => lost,
                Err(e) => {
                    tracing::debug!(error = %e, "live state epoch unreadable");
                    false
                }
            };
            // After a loss this writes the connections back first, so that
            // matches made by the recovery see both sides connected.
            if let Err(e) = inner.live.housekeeping(now).await {
                tracing::warn!(error = %e, "housekeeping failed");
            }
            if lost {
                inner.recover_lost_state().await;
            }
            if let Ok((v, t)) = inner.live.waiting().await {
                inner.metrics.waiting.with_label_values(&["video"]).set(v as i64);
                inner.metrics.waiting.with_label_values(&["text"]).set(t as i64);
            }
            inner.metrics.online.set(inner.conns.len() as i64);
        }
    });

    // SFU events: one stream per registered node.
    let (tx, mut rx) = mpsc::unbounded_channel::<(NodeId, SfuEvent)>();
    let ev_weak = weak.clone();
    let ev_cancel = cancel.clone();
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                _ = ev_cancel.cancelled() => break,
                item = rx.recv() => item,
            };
            let Some((node, ev)) = item else { break };
            let Some(inner) = ev_weak.upgrade() else { break };
            inner.on_sfu_event(&node, ev).await;
        }
    });
    crate::relocate::spawn(weak.clone(), cancel.clone());
    tokio::spawn(async move {
        let mut subs: HashMap<NodeId, (String, CancellationToken)> = HashMap::new();
        loop {
            let nodes = {
                let Some(inner) = weak.upgrade() else { break };
                inner.registry.nodes().await
            };
            match nodes {
                Ok(nodes) => {
                    if let Some(inner) = weak.upgrade() {
                        inner.set_sfu_origins(&nodes);
                    }
                    subs.retain(|id, (url, tok)| {
                        let keep = nodes.iter().any(|n| &n.node_id == id && &n.internal_url == url);
                        if !keep {
                            tok.cancel();
                        }
                        keep
                    });
                    for n in nodes {
                        if subs.contains_key(&n.node_id) {
                            continue;
                        }
                        let tok = cancel.child_token();
                        subs.insert(n.node_id.clone(), (n.internal_url.clone(), tok.clone()));
                        spawn_subscription(weak.clone(), n, tx.clone(), tok);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "node registry unavailable"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        for (_, (_, tok)) in subs {
            tok.cancel();
        }
    });
}

fn spawn_subscription(
    weak: WeakInner,
    node: NodeRecord,
    tx: mpsc::UnboundedSender<(NodeId, SfuEvent)>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        // After a stream that was open ends, reconnect at once; a node whose
        // stream cannot be reopened is marked unreachable (crate::relocate).
        let mut was_open = false;
        loop {
            let Some(client) = weak.upgrade().map(|i| i.sfu.clone()) else {
                break;
            };
            let id = node.node_id.clone();
            let txc = tx.clone();
            let opened = std::sync::atomic::AtomicBool::new(false);
            let on_open = || {
                opened.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(i) = weak.upgrade() {
                    i.nodes.mark_reachable(&node.node_id);
                }
            };
            let res = tokio::select! {
                _ = cancel.cancelled() => break,
                r = client.events(&node, on_open, move |ev| { let _ = txc.send((id.clone(), ev)); }) => r,
            };
            if let Err(e) = &res {
                tracing::debug!(error = %e, node = %node.node_id, "SFU event stream failed; retrying");
            }
            let opened = opened.load(std::sync::atomic::Ordering::SeqCst);
            if !opened {
                if was_open {
                    if let Some(i) = weak.upgrade() {
                        i.nodes.mark_unreachable(&node.node_id);
                    }
                }
                was_open = false;
            } else {
                was_open = true;
                // It was open: try again almost at once.
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}
