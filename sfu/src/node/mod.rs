//! The SFU node as a state machine with no I/O: duet's own small WebRTC
//! endpoint (ICE-lite, passive DTLS, in-place SRTP) and the forwarding
//! plane, in the shape of str0m and quinn-proto.
//!
//! Input, each with the current time:
//! - [`Node::handle_datagram`]: a datagram from a path (UDP or TURN relay);
//! - [`Node::handle_command`]: what signaling and WebSocket sessions ask;
//! - [`Node::handle_timeout`]: the time given by [`Node::poll_timeout`] came.
//!
//! Output, drained after each input (in any order):
//! - [`Node::poll_transmit`]: datagrams to send; give each buffer back with
//!   [`Node::recycle`] once it is sent;
//! - [`Node::poll_event`]: messages for a participant's WebSocket and
//!   events for signaling;
//! - [`Node::poll_timeout`]: when to call `handle_timeout` next.
//!
//! The node reads no clock and draws randomness only from the RNG it was
//! given. A forwarded packet is decrypted, rewritten and encrypted inside
//! the buffer it arrived in ([`buffer`]), and leaves in that same buffer.

pub mod buffer;
mod feedback;
mod forward;
#[cfg(fuzzing)]
mod fuzzing;
pub mod leg;
pub mod participant;
pub mod rtp;
mod signal;

use crate::endpoint::dtls::DtlsIdentity;
use crate::graph::ForwardingGraph;
use crate::metrics::Metrics;
use crate::remb::RembRelay;
use crate::routing::{Key, PathAddr, Route, RoutingTable, UnknownReason};
use buffer::{BufferPool, PacketBuf, Transmit};
use participant::Participant;
use proto::sfu_api::{ParticipantInfo, SfuEvent, WatchRequest};
use proto::sfu_ws::{IceCandidate, SfuServerMsg};
use proto::token::SfuRole;
use proto::ParticipantId;
use rand::RngCore;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often housekeeping runs (expiry, reports, NACK retries, REMB releases).
pub const TICK: Duration = Duration::from_millis(20);

/// The node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The address announced in the host candidate.
    pub advertised: SocketAddr,
    pub admit_ttl: Duration,
    pub connect_timeout: Duration,
    pub dtls_timeout: Duration,
    pub keyframe_request_min_interval: Duration,
    pub unknown_rate_per_sec: u32,
    pub unknown_burst: u32,
    pub max_datagram_bytes: usize,
}

/// Why the node refused a command (the internal API maps these to statuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("unknown participant {0}")]
    NotFound(ParticipantId),
    #[error("{0}")]
    BadRequest(&'static str),
}

/// What signaling and WebSocket sessions ask of the node.
#[derive(Debug, Clone)]
pub enum NodeCommand {
    Admit {
        pid: ParticipantId,
        role: SfuRole,
    },
    Join {
        pid: ParticipantId,
        session: u64,
    },
    Offer {
        pid: ParticipantId,
        session: u64,
        sdp: String,
    },
    Candidate {
        pid: ParticipantId,
        session: u64,
        candidate: IceCandidate,
    },
    Leave {
        pid: ParticipantId,
        session: u64,
        reason: &'static str,
    },
    Kick {
        pid: ParticipantId,
    },
    Link {
        a: ParticipantId,
        b: ParticipantId,
    },
    Unlink {
        a: ParticipantId,
        b: ParticipantId,
    },
    Watch(WatchRequest),
    KeyframeInterval(Option<Duration>),
    /// Stops (or resumes) forwarding `pid`'s video to the partner it is
    /// linked with; audio and watchers are unaffected (automatic screening).
    HoldVideo {
        pid: ParticipantId,
        held: bool,
    },
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    Done,
    /// `Kick`: whether the participant was there.
    Found(bool),
}

/// What the node tells the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A message for one participant's WebSocket session.
    ToClient {
        pid: ParticipantId,
        session: u64,
        msg: SfuServerMsg,
    },
    /// For signaling (via the node's event stream).
    Sfu(SfuEvent),
    /// The participant is gone (its admission is released).
    Removed {
        pid: ParticipantId,
        reason: &'static str,
    },
}

pub struct Node {
    config: NodeConfig,
    identity: Arc<DtlsIdentity>,
    rng: Box<dyn RngCore + Send>,
    metrics: Metrics,
    participants: HashMap<Key, Participant>,
    by_pid: HashMap<ParticipantId, Key>,
    next_key: Key,
    routing: RoutingTable,
    graph: ForwardingGraph,
    remb: RembRelay,
    keyframe_interval: Option<Duration>,
    /// Origin of the abs-send-time the node writes, and the wall-clock time
    /// it stands for (sender reports carry NTP time).
    epoch: Instant,
    wall_epoch: SystemTime,
    next_tick: Instant,
    /// The earliest ICE/DTLS timer of any leg, as last computed: scanned
    /// in full on every timeout and command, lowered after a leg's own
    /// STUN or DTLS input. Forwarded media never moves a timer earlier, so
    /// the packet path never scans the participants. A stale value only
    /// costs one early wake-up.
    leg_deadline: Option<Instant>,
    pool: BufferPool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    /// Participants marked for removal since the last turn.
    marked_for_removal: Vec<Key>,
    /// Reused list of a source's sinks (no allocation per packet).
    scratch_sinks: Vec<crate::graph::SlotRef>,
}

impl Node {
    pub fn new(
        config: NodeConfig,
        identity: Arc<DtlsIdentity>,
        rng: Box<dyn RngCore + Send>,
        metrics: Metrics,
        wall: SystemTime,
        now: Instant,
    ) -> Self {
        Self {
            routing: RoutingTable::new(config.unknown_rate_per_sec, config.unknown_burst),
            config,
            identity,
            rng,
            metrics,
            participants: HashMap::new(),
            by_pid: HashMap::new(),
            next_key: 1,
            graph: ForwardingGraph::default(),
            remb: RembRelay::default(),
            keyframe_interval: None,
            epoch: now,
            wall_epoch: wall,
            next_tick: now + TICK,
            leg_deadline: None,
            pool: BufferPool::default(),
            transmits: VecDeque::with_capacity(1024),
            events: VecDeque::new(),
            marked_for_removal: Vec::new(),
            scratch_sinks: Vec::new(),
        }
    }

    // ---- buffers ----------------------------------------------------------

    /// A buffer to receive the next datagram into.
    pub fn buffer(&mut self) -> PacketBuf {
        self.pool.take()
    }

    /// Gives back a sent (or unused) buffer.
    pub fn recycle(&mut self, buf: PacketBuf) {
        self.pool.put(buf);
    }

    /// Buffers ever allocated (steady while forwarding: no allocation per packet).
    pub fn buffers_allocated(&self) -> usize {
        self.pool.allocated()
    }

    // ---- input ------------------------------------------------------------

    /// One datagram from `path`.
    pub fn handle_datagram(&mut self, path: PathAddr, buf: PacketBuf, now: Instant) {
        let m = &self.metrics;
        m.packets_in.inc();
        m.bytes_in.inc_by(buf.len() as u64);
        let first = buf.as_slice().first().copied();
        let reason = match (buf.len(), first) {
            (n, _) if n < 12 => Some("short"),
            (n, _) if n > self.config.max_datagram_bytes => Some("oversized"),
            (_, Some(b)) if !is_webrtc_first_byte(b) => Some("not_rtc"),
            _ => None,
        };
        if let Some(reason) = reason {
            m.drop(reason);
            self.pool.put(buf);
            return;
        }
        let key = match self.routing.route(path, buf.as_slice(), now) {
            Route::Pinned(k) | Route::Candidate(k) => k,
            Route::Unknown(r) => {
                self.metrics.drop(match r {
                    UnknownReason::RateLimited => "rate_limited",
                    UnknownReason::TooManyCandidates => "too_many_candidates",
                    UnknownReason::NoUfrag => "unknown_path",
                });
                self.pool.put(buf);
                return;
            }
        };
        let Some(p) = self.participants.get_mut(&key) else {
            self.metrics.drop("unknown_path");
            self.pool.put(buf);
            return;
        };
        p.traffic.packets_in += 1;
        p.traffic.bytes_in += buf.len() as u64;
        match first {
            Some(0..=3) => {
                self.on_stun(key, path, buf, now);
                self.lower_leg_deadline(key);
            }
            Some(20..=63) => {
                self.on_dtls(key, path, buf, now);
                self.lower_leg_deadline(key);
            }
            _ => self.on_srtp(key, path, buf, now),
        }
        self.remove_marked(now);
    }

    /// A command; its result (events and transmits follow through `poll_*`).
    pub fn handle_command(&mut self, cmd: NodeCommand, now: Instant) -> Result<CommandResult, NodeError> {
        let r = self.command(cmd, now);
        self.remove_marked(now);
        self.refresh_leg_deadline();
        self.metrics.links.set(self.graph.link_count() as i64);
        r
    }

    /// Timers: housekeeping every [`TICK`] and each leg's ICE/DTLS timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let keys: Vec<Key> = self
            .participants
            .values()
            .filter(|p| {
                p.leg
                    .as_ref()
                    .and_then(leg::Leg::poll_timeout)
                    .is_some_and(|t| t <= now)
            })
            .map(|p| p.key)
            .collect();
        for key in keys {
            self.leg_timeout(key, now);
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
        self.remove_marked(now);
        self.refresh_leg_deadline();
    }

    /// Scans every leg for its next timer.
    fn refresh_leg_deadline(&mut self) {
        self.leg_deadline = self
            .participants
            .values()
            .filter_map(|p| p.leg.as_ref().and_then(leg::Leg::poll_timeout))
            .min();
    }

    /// Takes one leg's next timer into account after its own input.
    fn lower_leg_deadline(&mut self, key: Key) {
        let t = self
            .participants
            .get(&key)
            .and_then(|p| p.leg.as_ref())
            .and_then(leg::Leg::poll_timeout);
        if let Some(t) = t {
            self.leg_deadline = Some(self.leg_deadline.map_or(t, |d| d.min(t)));
        }
    }

    // ---- output -----------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Instant {
        self.leg_deadline
            .map_or(self.next_tick, |d| d.min(self.next_tick))
    }

    // ---- queries ----------------------------------------------------------

    /// Participants and their traffic, sorted by id (the internal API's list).
    pub fn list(&self, now: Instant) -> Vec<ParticipantInfo> {
        let mut v: Vec<ParticipantInfo> = self
            .participants
            .values()
            .map(|p| ParticipantInfo {
                participant_id: p.pid.clone(),
                role: p.role,
                connected: p.connected,
                via_turn: p.via_turn,
                linked_to: self
                    .graph
                    .source((p.key, 0))
                    .and_then(|k| self.participants.get(&k))
                    .map(|s| s.pid.clone()),
                packets_in: p.traffic.packets_in,
                packets_out: p.traffic.packets_out,
                bytes_in: p.traffic.bytes_in,
                bytes_out: p.traffic.bytes_out,
                snapshot_age_ms: p.snapshot.latest().map(|k| {
                    u64::try_from(now.saturating_duration_since(k.at).as_millis()).unwrap_or(u64::MAX)
                }),
            })
            .collect();
        v.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
        v
    }

    /// The latest keyframe of `pid` as WebP, and its age.
    pub fn snapshot(&self, pid: &ParticipantId, now: Instant) -> Option<(Vec<u8>, Duration)> {
        let k = self.participants.get(self.by_pid.get(pid)?)?.snapshot.latest()?;
        Some((
            crate::vp8::webp_from_keyframe(&k.data),
            now.saturating_duration_since(k.at),
        ))
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    // ---- shared plumbing ----------------------------------------------------

    /// The wall clock as sender reports need it.
    fn wallclock(&self) -> crate::stream::reports::WallClock {
        crate::stream::reports::WallClock {
            at: self.epoch,
            since_unix_epoch: self
                .wall_epoch
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    fn send_to_client(&mut self, key: Key, msg: SfuServerMsg) {
        if let Some(p) = self.participants.get(&key) {
            if let Some(session) = p.session {
                self.events.push_back(NodeEvent::ToClient {
                    pid: p.pid.clone(),
                    session,
                    msg,
                });
            }
        }
    }

    /// Queues `bytes` (a copy: control traffic, not forwarded media) to `path`.
    fn transmit_copy(&mut self, key: Key, path: PathAddr, bytes: &[u8]) {
        let mut buf = self.pool.take();
        buf.fill(bytes);
        self.transmit(key, path, buf);
    }

    fn transmit(&mut self, key: Key, path: PathAddr, buf: PacketBuf) {
        if let Some(p) = self.participants.get_mut(&key) {
            p.traffic.packets_out += 1;
            p.traffic.bytes_out += buf.len() as u64;
        }
        self.metrics.packets_out.inc();
        self.metrics.bytes_out.inc_by(buf.len() as u64);
        self.transmits.push_back(Transmit { path, buf });
    }

    fn mark_removed(&mut self, key: Key, reason: &'static str) {
        if let Some(p) = self.participants.get_mut(&key) {
            if p.removed.is_none() {
                p.removed = Some(reason);
                self.marked_for_removal.push(key);
            }
        }
    }

    fn remove_marked(&mut self, now: Instant) {
        while let Some(key) = self.marked_for_removal.pop() {
            if let Some(reason) = self.participants.get(&key).and_then(|p| p.removed) {
                self.remove(key, reason, now);
            }
        }
    }

    fn remove(&mut self, key: Key, reason: &'static str, now: Instant) {
        // Let the peer hear a goodbye (DTLS close_notify) before forgetting it.
        let mut out = leg::LegOutput::default();
        if let Some(l) = self.participants.get_mut(&key).and_then(|p| p.leg.as_mut()) {
            l.close(now, &mut out);
        }
        self.send_leg_output(key, out, now);
        let Some(p) = self.participants.remove(&key) else {
            return;
        };
        self.by_pid.remove(&p.pid);
        self.routing.remove_participant(key);
        self.remb.remove(key);
        let change = self.graph.remove(key);
        self.apply(change, now);
        if let Some(session) = p.session {
            self.events.push_back(NodeEvent::ToClient {
                pid: p.pid.clone(),
                session,
                msg: SfuServerMsg::State {
                    state: proto::sfu_ws::PeerState::Closed,
                },
            });
        }
        tracing::debug!(participant = %p.pid, reason, "participant removed");
        self.metrics.removed(reason);
        self.events.push_back(NodeEvent::Sfu(SfuEvent::Disconnected {
            participant_id: p.pid.clone(),
            reason: reason.to_owned(),
        }));
        self.events.push_back(NodeEvent::Removed { pid: p.pid, reason });
        self.metrics.links.set(self.graph.link_count() as i64);
    }

    /// Removes everyone (shutdown), saying goodbye to each.
    pub fn close_all(&mut self, now: Instant) {
        let keys: Vec<Key> = self.participants.keys().copied().collect();
        for key in keys {
            self.remove(key, "shutdown", now);
        }
    }
}

/// RFC 7983: STUN 0..=3, DTLS 20..=63, RTP/RTCP 128..=191.
fn is_webrtc_first_byte(b: u8) -> bool {
    b <= 3 || (20..=63).contains(&b) || (128..=191).contains(&b)
}
