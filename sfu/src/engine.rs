//! The media loop: one task owns the UDP socket, the TURN hand-off, every
//! peer connection, the routing table, the forwarding graph and the
//! mungers. The WebSocket and internal API reach it only through
//! [`Command`]s on a channel; nothing on the packet path takes a lock.

use crate::extensions::{self, LegExtensions};
use crate::graph::{Change, ForwardingGraph, SlotRef};
use crate::munger::{Munger, Throttle};
use crate::peer::{self, AUDIO_CLOCK, OPUS_PT, VIDEO_CLOCK, VP8_PT};
use crate::remb::{RateMeter, RembRelay};
use crate::routing::{Key, PathAddr, Route, RoutingTable, UnknownReason};
use crate::vp8::{self, KeyframeAssembler};
use crate::{SfuError, Shared};
use bytes::BytesMut;
use proto::handoff::{HandoffError, HandoffReceiver, HandoffSender, RelayedDatagram, SfuEnd};
use proto::sfu_api::{ParticipantInfo, SfuEvent, WatchRequest};
use proto::sfu_ws::{IceCandidate, PeerState, SfuServerMsg};
use proto::token::SfuRole;
use proto::ParticipantId;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Errors the internal API maps to HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    NotFound(String),
    BadRequest(String),
}

/// What the routers ask of the media loop.
pub enum Command {
    /// A participant was admitted (slot reserved).
    Admit {
        pid: ParticipantId,
        role: SfuRole,
    },
    /// A WebSocket session attached to an admitted participant.
    Join {
        pid: ParticipantId,
        session: u64,
        tx: mpsc::Sender<SfuServerMsg>,
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
    /// The WebSocket session ended.
    Leave {
        pid: ParticipantId,
        session: u64,
        reason: &'static str,
    },
    Kick {
        pid: ParticipantId,
        reply: oneshot::Sender<bool>,
    },
    Link {
        a: ParticipantId,
        b: ParticipantId,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Unlink {
        a: ParticipantId,
        b: ParticipantId,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Watch {
        req: WatchRequest,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    KeyframeInterval {
        interval: Option<Duration>,
    },
    List {
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
    /// Latest keyframe as WebP, and its age.
    Snapshot {
        pid: ParticipantId,
        reply: oneshot::Sender<Option<(Vec<u8>, Duration)>>,
    },
}

/// Binds the node's one UDP socket (non-blocking, large buffers).
pub fn bind_media_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, SfuError> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = s.set_send_buffer_size(4 * 1024 * 1024);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

const RECV_BUF: usize = 64 * 1024;
const TICK: Duration = Duration::from_millis(250);
const FAR: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Audio,
    Video,
}

struct OutTrack {
    munger: Munger,
}

struct OutSlot {
    audio: OutTrack,
    video: OutTrack,
    /// Track ids of the two senders (to attribute inbound PLI/FIR).
    video_track_id: String,
}

struct Incoming {
    track_id: String,
    kind: Kind,
    ssrc: u32,
}

struct Participant {
    key: Key,
    pid: ParticipantId,
    role: SfuRole,
    ws: Option<(u64, mpsc::Sender<SfuServerMsg>)>,
    pc: Option<Box<RTCPeerConnection>>,
    slots: Vec<OutSlot>,
    incoming: Vec<Incoming>,
    /// Header extension ids this participant's leg negotiated.
    extensions: LegExtensions,
    /// Remote addresses this participant's agent may answer, by path.
    remotes: Vec<PathAddr>,
    connected: bool,
    /// When ICE first connected; DTLS must follow within `dtls_timeout`.
    ice_connected_at: Option<Instant>,
    via_turn: bool,
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    /// Video RTP bytes received from this participant, and their rate (for
    /// `remb`: receive-side estimates cover the video a subscriber gets).
    video_bytes_in: u64,
    video_rate: RateMeter,
    bytes_out: u64,
    snapshot: KeyframeAssembler,
    keyframe_throttle: Throttle,
    last_periodic: Instant,
    admitted_at: Instant,
    joined_at: Option<Instant>,
    scheduled: Option<Instant>,
    /// Input reached the peer connection since its last service.
    needs_read: bool,
    removed: Option<&'static str>,
}

impl Participant {
    fn video_ssrc(&self) -> Option<u32> {
        self.incoming
            .iter()
            .find(|i| i.kind == Kind::Video)
            .map(|i| i.ssrc)
    }
    fn kind_of(&self, track_id: &str) -> Option<Kind> {
        self.incoming
            .iter()
            .find(|i| i.track_id == track_id)
            .map(|i| i.kind)
    }
}

pub(crate) struct Engine {
    shared: Arc<Shared>,
    socket: Option<std::net::UdpSocket>,
    handoff: Option<SfuEnd>,
    commands: mpsc::Receiver<Command>,
}

struct Io {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    to_turn: Option<HandoffSender>,
    /// Pending UDP writes (destination, bytes), flushed in batches.
    out: Vec<(SocketAddr, BytesMut)>,
    gso: Vec<u8>,
}

struct Loop {
    shared: Arc<Shared>,
    local: SocketAddr,
    participants: HashMap<Key, Participant>,
    by_pid: HashMap<ParticipantId, Key>,
    next_key: Key,
    routing: RoutingTable,
    graph: ForwardingGraph,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    dirty: Vec<Key>,
    keyframe_interval: Option<Duration>,
    remb: RembRelay,
    /// Participants whose `removed` was set since the last `service_dirty`.
    marked_for_removal: Vec<Key>,
    /// Origin of the abs-send-time the SFU writes.
    epoch: Instant,
    scratch_reads: Vec<TaggedRTCMessage>,
    scratch_sinks: Vec<SlotRef>,
    scratch_writes: Vec<TaggedBytesMut>,
}

impl Engine {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: std::net::UdpSocket,
        handoff: Option<SfuEnd>,
        commands: mpsc::Receiver<Command>,
    ) -> Result<Self, SfuError> {
        Ok(Self {
            shared,
            socket: Some(socket),
            handoff,
            commands,
        })
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> Result<(), SfuError> {
        let socket = self.socket.take().ok_or(SfuError::AlreadyRunning)?;
        let socket = UdpSocket::from_std(socket)?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let (mut from_turn, to_turn): (Option<HandoffReceiver>, Option<HandoffSender>) =
            match self.handoff.take() {
                Some(end) => (Some(end.from_turn), Some(end.to_turn)),
                None => (None, None),
            };
        let mut io = Io {
            socket,
            state,
            to_turn,
            out: Vec::with_capacity(256),
            gso: Vec::with_capacity(64 * 1024),
        };
        let shared = self.shared.clone();
        let mut lp = Loop {
            local: shared.advertised,
            routing: RoutingTable::new(shared.config.unknown_rate_per_sec, shared.config.unknown_burst),
            shared,
            participants: HashMap::new(),
            by_pid: HashMap::new(),
            next_key: 1,
            graph: ForwardingGraph::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            keyframe_interval: None,
            remb: RembRelay::default(),
            marked_for_removal: Vec::new(),
            epoch: Instant::now(),
            scratch_reads: Vec::new(),
            scratch_sinks: Vec::new(),
            scratch_writes: Vec::new(),
        };
        let mut bufs: Vec<Vec<u8>> = (0..quinn_udp::BATCH_SIZE).map(|_| vec![0u8; RECV_BUF]).collect();
        let mut metas = vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
        let mut relayed: Vec<RelayedDatagram> = Vec::with_capacity(64);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(media = %lp.local, "sfu media loop running");
        loop {
            let next_timer = lp
                .timers
                .peek()
                .map(|Reverse((t, _))| *t)
                .unwrap_or_else(|| Instant::now() + FAR);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next_timer));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = io.socket.readable() => {
                    if r.is_ok() {
                        lp.read_socket(&mut io, &mut bufs, &mut metas);
                    }
                }
                n = recv_turn(&mut from_turn, &mut relayed) => {
                    if n == 0 {
                        // TURN side gone: stop polling it.
                        from_turn = None;
                    }
                    let now = Instant::now();
                    for d in relayed.drain(..) {
                        lp.shared.metrics.handoff_in.inc();
                        lp.input(PathAddr::Turn(d.relay_addr), &d.payload, now);
                    }
                }
                cmd = self.commands.recv() => {
                    match cmd {
                        Some(cmd) => lp.command(cmd, Instant::now()),
                        None => break,
                    }
                }
                _ = sleep => lp.timers_due(Instant::now()),
                _ = tick.tick() => lp.tick(Instant::now()),
            }
            lp.service_dirty(&mut io);
            io.flush().await;
        }
        lp.shutdown(&mut io);
        io.flush().await;
        Ok(())
    }
}

async fn recv_turn(rx: &mut Option<HandoffReceiver>, buf: &mut Vec<RelayedDatagram>) -> usize {
    match rx {
        Some(rx) => rx.recv_many(buf, 64).await,
        None => std::future::pending().await,
    }
}

impl Io {
    /// Sends the queued datagrams; consecutive equal-size datagrams to one
    /// destination go out as one GSO batch where the kernel supports it.
    async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let max_segments = self.state.max_gso_segments().max(1);
        let mut i = 0;
        let out = std::mem::take(&mut self.out);
        while i < out.len() {
            let (dest, first) = (&out[i].0, &out[i].1);
            let seg = first.len();
            let mut j = i + 1;
            if max_segments > 1 {
                while j < out.len() && j - i < max_segments && out[j].0 == *dest && out[j].1.len() <= seg {
                    let last = out[j].1.len() < seg;
                    j += 1;
                    if last {
                        break;
                    }
                }
            }
            let contents: &[u8] = if j - i == 1 {
                first
            } else {
                self.gso.clear();
                for (_, b) in &out[i..j] {
                    self.gso.extend_from_slice(b);
                }
                &self.gso
            };
            let transmit = quinn_udp::Transmit {
                destination: *dest,
                ecn: None,
                contents,
                segment_size: (j - i > 1).then_some(seg),
                src_ip: None,
            };
            let mut ok = self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            });
            if matches!(&ok, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                && self.socket.writable().await.is_ok()
            {
                ok = self.socket.try_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.socket).into(), &transmit)
                });
            }
            if ok.is_err() {
                debug!("udp send failed");
            }
            i = j;
        }
        self.out = out;
        self.out.clear();
    }
}

fn classify_first_byte(b: u8) -> bool {
    // RFC 7983: STUN 0..=3, DTLS 20..=63, RTP/RTCP 128..=191.
    b <= 3 || (20..=63).contains(&b) || (128..=191).contains(&b)
}

impl Loop {
    fn read_socket(&mut self, io: &mut Io, bufs: &mut [Vec<u8>], metas: &mut [quinn_udp::RecvMeta]) {
        loop {
            let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let r = io.socket.try_io(Interest::READABLE, || {
                io.state.recv((&io.socket).into(), &mut slices, metas)
            });
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(error = %e, "udp recv");
                    return;
                }
            };
            drop(slices);
            let now = Instant::now();
            for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
                let stride = meta.stride.max(1);
                let data = &buf[..meta.len.min(buf.len())];
                for dgram in data.chunks(stride) {
                    self.input(PathAddr::Udp(meta.addr), dgram, now);
                }
            }
            if n == 0 {
                return;
            }
        }
    }

    /// One datagram from the network (UDP or TURN hand-off).
    fn input(&mut self, path: PathAddr, dgram: &[u8], now: Instant) {
        let m = &self.shared.metrics;
        m.packets_in.inc();
        m.bytes_in.inc_by(dgram.len() as u64);
        if dgram.len() < 12 {
            m.drop("short");
            return;
        }
        if dgram.len() > self.shared.config.max_datagram_bytes {
            m.drop("oversized");
            return;
        }
        if !classify_first_byte(dgram[0]) {
            m.drop("not_rtc");
            return;
        }
        let key = match self.routing.route(path, dgram, now) {
            Route::Pinned(k) | Route::Candidate(k) => k,
            Route::Unknown(UnknownReason::RateLimited) => {
                m.drop("rate_limited");
                return;
            }
            Route::Unknown(UnknownReason::TooManyCandidates) => {
                m.drop("too_many_candidates");
                return;
            }
            Route::Unknown(UnknownReason::NoUfrag) => {
                m.drop("unknown_path");
                return;
            }
        };
        let local = self.local;
        let Some(p) = self.participants.get_mut(&key) else {
            m.drop("unknown_path");
            return;
        };
        let Some(pc) = p.pc.as_mut() else {
            m.drop("unknown_path");
            return;
        };
        p.packets_in += 1;
        p.bytes_in += dgram.len() as u64;
        if !p.remotes.contains(&path) {
            // Most recent first; a handful is plenty (one per interface).
            p.remotes.insert(0, path);
            p.remotes.truncate(8);
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: path.addr(),
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(dgram),
        };
        if pc.handle_read(msg).is_err() {
            m.drop("rejected_by_peer");
        }
        self.mark_dirty(key);
    }

    /// `key`'s peer connection took input (a datagram, a timeout, a
    /// command): its events, reads and writes all need draining.
    fn mark_dirty(&mut self, key: Key) {
        if let Some(p) = self.participants.get_mut(&key) {
            p.needs_read = true;
        }
        self.mark_written(key);
    }

    /// Only `handle_write` was called on `key`'s peer connection (forwarded
    /// media, a keyframe request, a REMB): writes only, no events or reads
    /// to drain. Each `poll_read`/`poll_event` walks the whole `rtc`
    /// pipeline, so a subscriber's leg skips them for every forwarded packet.
    fn mark_written(&mut self, key: Key) {
        if !self.dirty.contains(&key) {
            self.dirty.push(key);
        }
    }

    fn service_dirty(&mut self, io: &mut Io) {
        let now = Instant::now();
        // Servicing one participant can dirty others (forwarded media).
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 8 {
            rounds += 1;
            let keys = std::mem::take(&mut self.dirty);
            for key in &keys {
                self.service(*key, io, now);
            }
            let mut keys = keys;
            keys.clear();
            if self.dirty.is_empty() {
                self.dirty = keys;
            }
        }
        // Only participants marked since the last pass (no scan of everyone
        // on every loop turn).
        let marked = std::mem::take(&mut self.marked_for_removal);
        for key in marked {
            let Some(reason) = self.participants.get(&key).and_then(|p| p.removed) else {
                continue;
            };
            self.remove(key, reason, io, now);
        }
    }

    fn service(&mut self, key: Key, io: &mut Io, now: Instant) {
        let needs_read = self
            .participants
            .get_mut(&key)
            .is_some_and(|p| std::mem::take(&mut p.needs_read));
        if needs_read {
            self.drain_events(key, now);
            self.drain_reads(key, now);
        }
        self.drain_writes(key, io, now);
        self.schedule(key);
    }

    fn schedule(&mut self, key: Key) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(pc) = p.pc.as_mut() else { return };
        if let Some(t) = pc.poll_timeout() {
            if p.scheduled.is_none_or(|s| t < s) {
                p.scheduled = Some(t);
                self.timers.push(Reverse((t, key)));
            }
        }
    }

    fn timers_due(&mut self, now: Instant) {
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.participants.get_mut(&key) else {
                continue;
            };
            if p.scheduled != Some(t) {
                continue;
            }
            p.scheduled = None;
            if let Some(pc) = p.pc.as_mut() {
                if let Err(e) = pc.handle_timeout(now) {
                    debug!(error = %e, "handle_timeout");
                }
            }
            self.mark_dirty(key);
        }
    }

    fn send_ws(&self, key: Key, msg: SfuServerMsg) {
        if let Some((_, tx)) = self.participants.get(&key).and_then(|p| p.ws.as_ref()) {
            // A full queue means a stuck client: drop the message rather than block media.
            let _ = tx.try_send(msg);
        }
    }

    fn drain_events(&mut self, key: Key, _now: Instant) {
        let mut events = Vec::new();
        {
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            let Some(pc) = p.pc.as_mut() else { return };
            while let Some(e) = pc.poll_event() {
                events.push(e);
            }
        }
        for e in events {
            match e {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => self.on_state(key, state),
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(RTCIceConnectionState::Failed) => {
                    self.mark_removed(key, "ice_failed");
                }
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(RTCIceConnectionState::Connected) => {
                    if let Some(p) = self.participants.get_mut(&key) {
                        p.ice_connected_at.get_or_insert(Instant::now());
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let Some(p) = self.participants.get_mut(&key) else {
                        continue;
                    };
                    let Some(pc) = p.pc.as_mut() else { continue };
                    let kind = match pc.rtp_receiver(init.receiver_id) {
                        Some(r) if r.track().kind() == RtpCodecKind::Video => Kind::Video,
                        Some(_) => Kind::Audio,
                        None => continue,
                    };
                    p.incoming.retain(|i| i.track_id != init.track_id);
                    p.incoming.push(Incoming {
                        track_id: init.track_id,
                        kind,
                        ssrc: init.ssrc,
                    });
                    if kind == Kind::Video {
                        // Subscribers already pointed at this publisher wait for a keyframe.
                        self.request_keyframe(key, "switch", true, Instant::now());
                    }
                }
                _ => {}
            }
        }
    }

    fn on_state(&mut self, key: Key, state: RTCPeerConnectionState) {
        let ws_state = match state {
            RTCPeerConnectionState::Connecting => Some(PeerState::Connecting),
            RTCPeerConnectionState::Connected => Some(PeerState::Connected),
            RTCPeerConnectionState::Disconnected => Some(PeerState::Disconnected),
            RTCPeerConnectionState::Failed => Some(PeerState::Failed),
            RTCPeerConnectionState::Closed => Some(PeerState::Closed),
            _ => None,
        };
        if let Some(s) = ws_state {
            self.send_ws(key, SfuServerMsg::State { state: s });
        }
        match state {
            RTCPeerConnectionState::Connected => {
                let Some(p) = self.participants.get_mut(&key) else {
                    return;
                };
                if !p.connected {
                    p.connected = true;
                    p.via_turn = p.remotes.first().is_some_and(PathAddr::is_turn);
                    let _ = self.shared.events.send(SfuEvent::Connected {
                        participant_id: p.pid.clone(),
                    });
                    // Whatever this participant receives starts with a keyframe.
                    let sources: Vec<Key> = (0..p.slots.len() as u8)
                        .filter_map(|s| self.graph.source((key, s)))
                        .collect();
                    let now = Instant::now();
                    for s in sources {
                        self.request_keyframe(s, "switch", true, now);
                    }
                }
            }
            RTCPeerConnectionState::Failed => self.mark_removed(key, "connection_failed"),
            RTCPeerConnectionState::Closed => self.mark_removed(key, "connection_closed"),
            _ => {}
        }
    }

    fn mark_removed(&mut self, key: Key, reason: &'static str) {
        if let Some(p) = self.participants.get_mut(&key) {
            if p.removed.is_none() {
                p.removed = Some(reason);
                self.marked_for_removal.push(key);
            }
        }
    }

    fn drain_reads(&mut self, key: Key, now: Instant) {
        let mut reads = std::mem::take(&mut self.scratch_reads);
        {
            let Some(p) = self.participants.get_mut(&key) else {
                self.scratch_reads = reads;
                return;
            };
            let Some(pc) = p.pc.as_mut() else {
                self.scratch_reads = reads;
                return;
            };
            while let Some(m) = pc.poll_read() {
                reads.push(m);
            }
        }
        for m in reads.drain(..) {
            match m.message {
                RTCMessage::RtpPacket(track_id, pkt) => self.forward_rtp(key, &track_id, pkt, now),
                RTCMessage::RtcpPacket(track_id, pkts) => {
                    self.subscriber_feedback(key, &track_id, &pkts, now)
                }
                _ => {}
            }
        }
        self.scratch_reads = reads;
    }

    /// RTCP a subscriber sent about one of its outgoing tracks; only PLI,
    /// FIR and REMB get here (`peer::FeedbackToApplication`). Keyframe
    /// requests go to the track's current source; bandwidth estimates are
    /// relayed to it (see `remb`). Nothing is passed on as is: the other
    /// leg knows neither these SSRCs nor this sender.
    fn subscriber_feedback(
        &mut self,
        key: Key,
        track_id: &str,
        pkts: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        for pkt in pkts {
            if let Some(remb) = pkt.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                // A hidden watcher must not slow the pair down (nor give
                // itself away by doing so): only users' estimates count.
                let Some(p) = self.participants.get(&key).filter(|p| p.role == SfuRole::User) else {
                    continue;
                };
                // A REMB names the SSRCs it covers: find the slot they belong to.
                let slot = p.slots.iter().position(|s| {
                    remb.ssrcs
                        .iter()
                        .any(|ssrc| *ssrc == s.video.munger.out_ssrc() || *ssrc == s.audio.munger.out_ssrc())
                });
                let Some(src) = slot.and_then(|slot| self.graph.source((key, slot as u8))) else {
                    continue;
                };
                let bps = if remb.bitrate.is_finite() && remb.bitrate > 0.0 {
                    remb.bitrate as u64
                } else {
                    continue;
                };
                let source_bps = self.participants.get(&src).map_or(0, |p| p.video_rate.bps());
                if let Some(send) = self.remb.handle_estimate(src, key, bps, source_bps, now) {
                    self.send_remb(src, send, now);
                }
            } else {
                // PLI or FIR on one of this subscriber's video tracks.
                let slot = self
                    .participants
                    .get(&key)
                    .and_then(|p| p.slots.iter().position(|s| s.video_track_id == track_id));
                if let Some(src) = slot.and_then(|slot| self.graph.source((key, slot as u8))) {
                    self.request_keyframe(src, "subscriber", false, now);
                }
            }
        }
    }

    /// Sends `source` a REMB for its media streams: the cap `remb` decided
    /// (a limiting subscriber estimate, or the release).
    fn send_remb(&mut self, source: Key, bps: u64, now: Instant) {
        let Some(p) = self.participants.get_mut(&source) else {
            return;
        };
        if !p.connected {
            return;
        }
        let ssrcs: Vec<u32> = p.incoming.iter().map(|i| i.ssrc).collect();
        let sender_ssrc = p.slots.first().map(|s| s.video.munger.out_ssrc()).unwrap_or(0);
        let Some(pc) = p.pc.as_mut() else { return };
        let remb: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc,
            bitrate: bps as f32,
            ssrcs,
        });
        let msg = TaggedRTCMessage {
            now,
            message: RTCMessage::RtcpPacket(String::new(), vec![remb]),
        };
        if pc.handle_write(msg).is_ok() {
            self.shared.metrics.remb_relayed.inc();
            self.mark_written(source);
        }
    }

    fn forward_rtp(&mut self, key: Key, track_id: &str, mut pkt: rtc::rtp::Packet, now: Instant) {
        let (kind, src_extensions) = {
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            if p.role == SfuRole::Watcher {
                // Watchers send nothing anyone receives.
                return;
            }
            let Some(kind) = p.kind_of(track_id) else { return };
            if kind == Kind::Video {
                p.video_bytes_in += 12 + pkt.payload.len() as u64;
                p.snapshot.push(
                    pkt.header.sequence_number,
                    pkt.header.timestamp,
                    pkt.header.marker,
                    &pkt.payload,
                    now,
                );
            }
            (kind, *p.extensions.for_kind(kind == Kind::Video))
        };
        let mut sinks = std::mem::take(&mut self.scratch_sinks);
        sinks.clear();
        sinks.extend_from_slice(self.graph.sinks(key));
        if sinks.is_empty() {
            self.scratch_sinks = sinks;
            return;
        }
        let keyframe = kind == Kind::Video && vp8::is_keyframe_start(&pkt.payload);
        pkt.header.csrc.clear();
        let send_time = now.saturating_duration_since(self.epoch);
        let (src_ssrc, seq, ts) = (pkt.header.ssrc, pkt.header.sequence_number, pkt.header.timestamp);
        let mut need_keyframe = false;
        let n = sinks.len();
        for (i, (sink, slot)) in sinks.iter().copied().enumerate() {
            let Some(sp) = self.participants.get_mut(&sink) else {
                continue;
            };
            let Some(out) = sp.slots.get_mut(slot as usize) else {
                continue;
            };
            let track = if kind == Kind::Video {
                &mut out.video
            } else {
                &mut out.audio
            };
            let munged = match track.munger.munge(key, src_ssrc, seq, ts, keyframe, now) {
                Ok(m) => m,
                Err(e) => {
                    if e == crate::munger::MungeDrop::WaitingKeyframe {
                        need_keyframe = true;
                    }
                    self.shared.metrics.drop(e.label());
                    continue;
                }
            };
            let Some(pc) = sp.pc.as_mut() else { continue };
            if !sp.connected {
                continue;
            }
            let mut out_pkt = if i + 1 == n {
                std::mem::take(&mut pkt)
            } else {
                pkt.clone()
            };
            out_pkt.header.ssrc = munged.ssrc;
            out_pkt.header.payload_type = munged.payload_type;
            out_pkt.header.sequence_number = munged.sequence_number;
            out_pkt.header.timestamp = munged.timestamp;
            // Extension ids are per leg: rebuild them for this subscriber.
            extensions::rewrite(
                &mut out_pkt.header,
                &src_extensions,
                sp.extensions.for_kind(kind == Kind::Video),
                send_time,
            );
            let msg = TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(String::new(), out_pkt),
            };
            if pc.handle_write(msg).is_ok() {
                self.shared.metrics.rtp_forwarded.inc();
                self.mark_written(sink);
            } else {
                self.shared.metrics.drop("write_failed");
            }
        }
        self.scratch_sinks = sinks;
        if need_keyframe {
            self.request_keyframe(key, "switch", false, now);
        }
    }

    /// Sends a PLI to `source`'s video stream (throttled unless `force`).
    fn request_keyframe(&mut self, source: Key, cause: &'static str, force: bool, now: Instant) {
        let Some(p) = self.participants.get_mut(&source) else {
            return;
        };
        if !p.connected {
            return;
        }
        let Some(media_ssrc) = p.video_ssrc() else { return };
        if force {
            p.keyframe_throttle.reset();
        }
        if !p.keyframe_throttle.allow(now) {
            return;
        }
        let sender_ssrc = p.slots.first().map(|s| s.video.munger.out_ssrc()).unwrap_or(0);
        let Some(pc) = p.pc.as_mut() else { return };
        let pli: Box<dyn rtc::rtcp::Packet> = Box::new(PictureLossIndication {
            sender_ssrc,
            media_ssrc,
        });
        let msg = TaggedRTCMessage {
            now,
            message: RTCMessage::RtcpPacket(String::new(), vec![pli]),
        };
        if pc.handle_write(msg).is_ok() {
            self.shared
                .metrics
                .keyframe_requests
                .with_label_values(&[cause])
                .inc();
            self.mark_written(source);
        }
    }

    fn drain_writes(&mut self, key: Key, io: &mut Io, now: Instant) {
        let mut writes = std::mem::take(&mut self.scratch_writes);
        {
            let Some(p) = self.participants.get_mut(&key) else {
                self.scratch_writes = writes;
                return;
            };
            let Some(pc) = p.pc.as_mut() else {
                self.scratch_writes = writes;
                return;
            };
            while let Some(w) = pc.poll_write() {
                writes.push(w);
            }
        }
        for w in writes.drain(..) {
            let addr = w.transport.peer_addr;
            let Some(p) = self.participants.get_mut(&key) else {
                break;
            };
            // Which path does this address belong to? A TURN relay address
            // and a UDP address may be equal: the most recent wins.
            let path = p
                .remotes
                .iter()
                .copied()
                .find(|r| r.addr() == addr)
                .unwrap_or(PathAddr::Udp(addr));
            if w.message.first().is_some_and(|b| *b <= 3) {
                // A STUN answer: the agent accepted this path.
                self.routing.confirm(path, key, now);
            }
            p.packets_out += 1;
            p.bytes_out += w.message.len() as u64;
            let m = &self.shared.metrics;
            m.packets_out.inc();
            m.bytes_out.inc_by(w.message.len() as u64);
            match path {
                PathAddr::Udp(a) => io.out.push((a, w.message)),
                PathAddr::Turn(relay_addr) => {
                    let Some(to_turn) = io.to_turn.as_ref() else {
                        m.drop("write_failed");
                        continue;
                    };
                    let d = RelayedDatagram {
                        relay_addr,
                        sfu_addr: self.local,
                        payload: w.message.freeze(),
                    };
                    match to_turn.send(d) {
                        Ok(()) => m.handoff_out.inc(),
                        Err(HandoffError::Full) => m.drop("handoff_full"),
                        Err(HandoffError::Closed) => m.drop("write_failed"),
                    }
                }
            }
        }
        self.scratch_writes = writes;
    }

    // ---- commands -------------------------------------------------------

    fn command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Admit { pid, role } => self.admit(pid, role, now),
            Command::Join { pid, session, tx } => {
                let Some(&key) = self.by_pid.get(&pid) else { return };
                let Some(p) = self.participants.get_mut(&key) else {
                    return;
                };
                if p.ws.is_some() {
                    return;
                }
                p.ws = Some((session, tx));
                p.joined_at = Some(now);
            }
            Command::Offer { pid, session, sdp } => {
                if let Some(key) = self.session_key(&pid, session) {
                    self.offer(key, sdp, now);
                }
            }
            Command::Candidate {
                pid,
                session,
                candidate,
            } => {
                if let Some(key) = self.session_key(&pid, session) {
                    if let Some(pc) = self.participants.get_mut(&key).and_then(|p| p.pc.as_mut()) {
                        let init = RTCIceCandidateInit {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_mline_index: candidate.sdp_mline_index,
                            ..Default::default()
                        };
                        // ICE-lite answers the browser's checks anyway; a bad
                        // candidate is only worth a debug line.
                        if let Err(e) = pc.add_remote_candidate(init) {
                            debug!(error = %e, "remote candidate refused");
                        }
                    }
                }
            }
            Command::Leave { pid, session, reason } => {
                if let Some(key) = self.session_key(&pid, session) {
                    self.mark_removed(key, reason);
                    self.mark_dirty(key);
                }
            }
            Command::Kick { pid, reply } => {
                let found = match self.by_pid.get(&pid).copied() {
                    Some(key) => {
                        self.mark_removed(key, "kicked");
                        self.mark_dirty(key);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
            Command::Link { a, b, reply } => {
                let r = self.users(&a, &b).map(|(ka, kb)| {
                    let c = self.graph.link(ka, kb);
                    self.apply(c, now);
                });
                let _ = reply.send(r);
            }
            Command::Unlink { a, b, reply } => {
                let r = self.users(&a, &b).map(|(ka, kb)| {
                    let c = self.graph.unlink(ka, kb);
                    self.apply(c, now);
                });
                let _ = reply.send(r);
            }
            Command::Watch { req, reply } => {
                let _ = reply.send(self.watch(req, now));
            }
            Command::KeyframeInterval { interval } => self.keyframe_interval = interval,
            Command::List { reply } => {
                let _ = reply.send(self.list(now));
            }
            Command::Snapshot { pid, reply } => {
                let snap = self
                    .by_pid
                    .get(&pid)
                    .and_then(|k| self.participants.get(k))
                    .and_then(|p| p.snapshot.latest())
                    .map(|k| {
                        (
                            vp8::webp_from_keyframe(&k.data),
                            now.saturating_duration_since(k.at),
                        )
                    });
                let _ = reply.send(snap);
            }
        }
        self.shared.metrics.links.set(self.graph.link_count() as i64);
    }

    fn session_key(&self, pid: &ParticipantId, session: u64) -> Option<Key> {
        let key = *self.by_pid.get(pid)?;
        let p = self.participants.get(&key)?;
        matches!(p.ws, Some((s, _)) if s == session).then_some(key)
    }

    fn users(&self, a: &ParticipantId, b: &ParticipantId) -> Result<(Key, Key), ApiError> {
        if a == b {
            return Err(ApiError::BadRequest("a and b must differ".into()));
        }
        let mut keys = [0; 2];
        for (i, pid) in [a, b].into_iter().enumerate() {
            let key = *self
                .by_pid
                .get(pid)
                .ok_or_else(|| ApiError::NotFound(format!("unknown participant {pid}")))?;
            let p = self
                .participants
                .get(&key)
                .ok_or_else(|| ApiError::NotFound(format!("unknown participant {pid}")))?;
            if p.role != SfuRole::User {
                return Err(ApiError::BadRequest(format!("{pid} is not a user")));
            }
            keys[i] = key;
        }
        Ok((keys[0], keys[1]))
    }

    fn watch(&mut self, req: WatchRequest, now: Instant) -> Result<(), ApiError> {
        let w = *self
            .by_pid
            .get(&req.watcher)
            .ok_or_else(|| ApiError::NotFound(format!("unknown participant {}", req.watcher)))?;
        if self.participants.get(&w).map(|p| p.role) != Some(SfuRole::Watcher) {
            return Err(ApiError::BadRequest(
                "watcher must be admitted with role watcher".into(),
            ));
        }
        if req.stop {
            let c = self.graph.unwatch(w);
            self.apply(c, now);
            return Ok(());
        }
        let (a, b) = self.users(&req.a, &req.b)?;
        let c = self.graph.watch(w, a, b);
        self.apply(c, now);
        Ok(())
    }

    /// Applies a graph change to the mungers and asks new sources for keyframes.
    fn apply(&mut self, change: Change, now: Instant) {
        for ((sink, slot), src) in change.switched {
            if let Some(out) = self
                .participants
                .get_mut(&sink)
                .and_then(|p| p.slots.get_mut(slot as usize))
            {
                if let Some(old) = out.video.munger.source().filter(|old| Some(*old) != src) {
                    self.remb.unsubscribe(old, sink);
                }
                out.audio.munger.switch_source(src);
                out.video.munger.switch_source(src);
            }
            if let Some(src) = src {
                self.request_keyframe(src, "switch", true, now);
            }
        }
    }

    fn admit(&mut self, pid: ParticipantId, role: SfuRole, now: Instant) {
        if self.by_pid.contains_key(&pid) {
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.by_pid.insert(pid.clone(), key);
        self.participants.insert(
            key,
            Participant {
                key,
                pid,
                role,
                ws: None,
                pc: None,
                slots: Vec::new(),
                incoming: Vec::new(),
                extensions: LegExtensions::default(),
                remotes: Vec::new(),
                connected: false,
                ice_connected_at: None,
                via_turn: false,
                packets_in: 0,
                packets_out: 0,
                bytes_in: 0,
                video_bytes_in: 0,
                video_rate: RateMeter::default(),
                bytes_out: 0,
                snapshot: KeyframeAssembler::default(),
                keyframe_throttle: Throttle::new(self.shared.config.keyframe_request_min_interval),
                last_periodic: now,
                admitted_at: now,
                joined_at: None,
                scheduled: None,
                needs_read: false,
                removed: None,
            },
        );
    }

    fn offer(&mut self, key: Key, sdp: String, now: Instant) {
        let result = if self.participants.get(&key).is_some_and(|p| p.pc.is_some()) {
            self.renegotiate(key, sdp, now)
        } else {
            self.first_offer(key, sdp, now)
        };
        match result {
            Ok(answer) => {
                // Each answer (the first, and one per ICE restart) carries
                // fresh credentials; binding requests name its ufrag.
                if let Some(ufrag) = peer::sdp_ice_ufrag(&answer) {
                    self.routing.replace_ufrag(key, ufrag);
                }
                self.send_ws(key, SfuServerMsg::Answer { sdp: answer });
                let cand = self.host_candidate();
                if let Some(c) = cand {
                    self.send_ws(key, SfuServerMsg::Candidate { candidate: c });
                }
                self.mark_dirty(key);
            }
            Err(message) => {
                debug!(%message, "offer refused");
                self.send_ws(
                    key,
                    SfuServerMsg::Error {
                        code: "bad_offer".into(),
                        message,
                    },
                );
            }
        }
    }

    fn host_candidate_init(&self) -> Result<RTCIceCandidateInit, String> {
        let c = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.local.ip().to_string(),
                port: self.local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| e.to_string())?;
        RTCIceCandidate::from(&c).to_json().map_err(|e| e.to_string())
    }

    fn host_candidate(&self) -> Option<IceCandidate> {
        let init = self.host_candidate_init().ok()?;
        Some(IceCandidate {
            candidate: init.candidate,
            sdp_mid: init.sdp_mid,
            sdp_mline_index: init.sdp_mline_index,
        })
    }

    fn first_offer(&mut self, key: Key, sdp: String, now: Instant) -> Result<String, String> {
        let cand = self.host_candidate_init()?;
        let p = self.participants.get_mut(&key).ok_or("gone")?;
        let mut pc = Box::new(peer::build_sfu_peer(now).map_err(|e| e.to_string())?);
        let n_slots = if p.role == SfuRole::Watcher { 2 } else { 1 };
        let mut senders = Vec::new();
        for slot in 0..n_slots {
            let stream = format!("duet-{slot}");
            let (a_ssrc, v_ssrc, rtx_ssrc) = (
                rand::random::<u32>() | 1,
                rand::random::<u32>() | 1,
                rand::random::<u32>() | 1,
            );
            let a_id = format!("audio-{slot}");
            let v_id = format!("video-{slot}");
            let a = pc
                .add_track(peer::outgoing_track(
                    &stream,
                    &a_id,
                    RtpCodecKind::Audio,
                    a_ssrc,
                    None,
                ))
                .map_err(|e| e.to_string())?;
            let v = pc
                .add_track(peer::outgoing_track(
                    &stream,
                    &v_id,
                    RtpCodecKind::Video,
                    v_ssrc,
                    Some(rtx_ssrc),
                ))
                .map_err(|e| e.to_string())?;
            senders.push((a, a_ssrc, v, v_ssrc, v_id));
        }
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
        pc.set_remote_description(now, offer).map_err(|e| e.to_string())?;
        pc.add_local_candidate(cand).map_err(|e| e.to_string())?;
        let answer = pc.create_answer(None).map_err(|e| e.to_string())?;
        pc.set_local_description(now, answer.clone())
            .map_err(|e| e.to_string())?;
        let mut slots = Vec::new();
        for (a, a_ssrc, v, v_ssrc, v_id) in senders {
            let a_pt = negotiated_pt(&mut pc, a, "audio/opus").unwrap_or(OPUS_PT);
            let v_pt = negotiated_pt(&mut pc, v, "video/vp8").unwrap_or(VP8_PT);
            slots.push(OutSlot {
                audio: OutTrack {
                    munger: Munger::new(a_ssrc, a_pt, AUDIO_CLOCK, false),
                },
                video: OutTrack {
                    munger: Munger::new(v_ssrc, v_pt, VIDEO_CLOCK, true),
                },
                video_track_id: v_id,
            });
        }
        // Sources chosen before the peer connection existed.
        for (i, s) in slots.iter_mut().enumerate() {
            let src = self.graph.source((key, i as u8));
            s.audio.munger.switch_source(src);
            s.video.munger.switch_source(src);
        }
        let p = self.participants.get_mut(&key).ok_or("gone")?;
        p.slots = slots;
        p.pc = Some(pc);
        p.extensions = LegExtensions::from_sdp(&answer.sdp);
        Ok(answer.sdp)
    }

    fn renegotiate(&mut self, key: Key, sdp: String, now: Instant) -> Result<String, String> {
        // A later offer is an ICE restart (same tracks, no new m-lines).
        let p = self.participants.get_mut(&key).ok_or("gone")?;
        let pc = p.pc.as_mut().ok_or("no peer connection")?;
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
        pc.set_remote_description(now, offer).map_err(|e| e.to_string())?;
        let answer = pc.create_answer(None).map_err(|e| e.to_string())?;
        pc.set_local_description(now, answer.clone())
            .map_err(|e| e.to_string())?;
        p.extensions = LegExtensions::from_sdp(&answer.sdp);
        Ok(answer.sdp)
    }

    fn list(&self, now: Instant) -> Vec<ParticipantInfo> {
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
                packets_in: p.packets_in,
                packets_out: p.packets_out,
                bytes_in: p.bytes_in,
                bytes_out: p.bytes_out,
                snapshot_age_ms: p.snapshot.latest().map(|k| {
                    u64::try_from(now.saturating_duration_since(k.at).as_millis()).unwrap_or(u64::MAX)
                }),
            })
            .collect();
        v.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
        v
    }

    // ---- housekeeping ---------------------------------------------------

    fn tick(&mut self, now: Instant) {
        self.routing.expire(now);
        let cfg = &self.shared.config;
        let (admit_ttl, connect_timeout, dtls_timeout) =
            (cfg.admit_ttl, cfg.connect_timeout, cfg.dtls_timeout);
        let mut expired = Vec::new();
        let mut oldest_snapshot = Duration::ZERO;
        let mut periodic = Vec::new();
        for p in self.participants.values_mut() {
            p.video_rate.update(p.video_bytes_in, now);
            match p.joined_at {
                None if now.saturating_duration_since(p.admitted_at) > admit_ttl => {
                    expired.push((p.key, "admission_expired"))
                }
                Some(j) if !p.connected && now.saturating_duration_since(j) > connect_timeout => {
                    expired.push((p.key, "connect_timeout"))
                }
                _ => {}
            }
            // `rtc` reports a failed DTLS handshake (a certificate that does
            // not match the offer's fingerprint, a fatal alert) only in its
            // log and keeps the connection "connecting": ICE up without DTLS
            // following is how the loop sees a DTLS failure.
            if let Some(ice_at) = p.ice_connected_at {
                if !p.connected && now.saturating_duration_since(ice_at) > dtls_timeout {
                    expired.push((p.key, "dtls_failed"));
                }
            }
            if p.connected && p.role == SfuRole::User {
                if let Some(k) = p.snapshot.latest() {
                    oldest_snapshot = oldest_snapshot.max(now.saturating_duration_since(k.at));
                }
                if let Some(iv) = self.keyframe_interval {
                    if now.saturating_duration_since(p.last_periodic) >= iv {
                        p.last_periodic = now;
                        periodic.push(p.key);
                    }
                }
            }
        }
        for (k, reason) in expired {
            self.mark_removed(k, reason);
            self.mark_dirty(k);
        }
        for k in periodic {
            self.request_keyframe(k, "periodic", false, now);
        }
        for source in self.remb.releases_due(now) {
            self.send_remb(source, crate::remb::RELEASE_BPS, now);
        }
        self.shared
            .metrics
            .snapshot_age_seconds
            .set(oldest_snapshot.as_secs() as i64);
        // Admissions the loop never heard of (raced with removal) are dropped too.
        let n = self.shared.admissions().len();
        self.shared.metrics.participants.set(n as i64);
    }

    fn remove(&mut self, key: Key, reason: &'static str, io: &mut Io, now: Instant) {
        // Let the peer say goodbye (DTLS close_notify) before forgetting it.
        if let Some(pc) = self.participants.get_mut(&key).and_then(|p| p.pc.as_mut()) {
            let _ = pc.close();
        }
        self.drain_writes(key, io, now);
        let Some(p) = self.participants.remove(&key) else {
            return;
        };
        self.by_pid.remove(&p.pid);
        self.routing.remove_participant(key);
        self.remb.remove(key);
        let change = self.graph.remove(key);
        self.apply(change, now);
        {
            let mut adm = self.shared.admissions();
            adm.remove(&p.pid);
            self.shared.metrics.participants.set(adm.len() as i64);
        }
        if let Some((_, tx)) = &p.ws {
            let _ = tx.try_send(SfuServerMsg::State {
                state: PeerState::Closed,
            });
        }
        self.shared.metrics.links.set(self.graph.link_count() as i64);
        debug!(participant = %p.pid, reason, "participant removed");
        self.shared.metrics.removed(reason);
        let _ = self.shared.events.send(SfuEvent::Disconnected {
            participant_id: p.pid,
            reason: reason.to_owned(),
        });
    }

    fn shutdown(&mut self, io: &mut Io) {
        let now = Instant::now();
        let keys: Vec<Key> = self.participants.keys().copied().collect();
        for k in keys {
            self.remove(k, "shutdown", io, now);
        }
        if !self.timers.is_empty() {
            warn!(timers = self.timers.len(), "timers left at shutdown");
        }
    }
}

fn negotiated_pt(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId, mime: &str) -> Option<u8> {
    let mut s = pc.rtp_sender(sender)?;
    s.get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}
