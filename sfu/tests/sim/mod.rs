//! A node and its participants on simulated time, with no sockets: every
//! participant is a full `rtc` peer connection (ICE, DTLS, SRTP, NACK,
//! RTCP — an implementation independent of duet's), and the harness moves
//! datagrams between them and the node, advancing one shared clock.
#![allow(dead_code)]
// Test-only harness code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proto::sfu_api::SfuEvent;
use proto::sfu_ws::SfuServerMsg;
use proto::token::SfuRole;
use proto::ParticipantId;
use rand::SeedableRng;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCOfferOptions};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use sfu::endpoint::dtls::DtlsIdentity;
use sfu::metrics::Metrics;
use sfu::node::buffer::PacketBuf;
use sfu::node::{Node, NodeCommand, NodeConfig, NodeEvent};
use sfu::routing::PathAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NODE_ADDR: &str = "127.0.0.1:40000";

thread_local! {
    /// Set while the node handles an RTP datagram in a counted window.
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while the node runs (any `Node` method the harness calls).
    static IN_NODE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Bytes allocated on this thread while the node ran and not yet freed
    /// (per thread: tests run in parallel, each with its own node).
    static NODE_LIVE_BYTES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}
static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Marks a block allocated while the node ran.
const NODE_TAG: u8 = 0xA5;

/// Runs `f` with the node's allocations attributed to the node.
fn in_node<T>(f: impl FnOnce() -> T) -> T {
    IN_NODE.with(|n| n.set(true));
    let out = f();
    IN_NODE.with(|n| n.set(false));
    out
}

/// The system allocator, counting allocations made while [`COUNTING`] is
/// set, and measuring the heap the node holds: every block carries a prefix
/// whose last byte says whether it was allocated while the node ran, so
/// freeing it takes it off [`NODE_LIVE_BYTES`] (of the freeing thread: a
/// test's node lives and dies on the test's thread).
/// A test binary that wants the count installs it as `#[global_allocator]`.
pub struct CountingAlloc;

impl CountingAlloc {
    fn prefix(layout: std::alloc::Layout) -> usize {
        layout.align().max(16)
    }

    /// `layout` with room for the prefix.
    fn widened(layout: std::alloc::Layout) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(layout.size() + Self::prefix(layout), layout.align())
            .expect("no test allocation comes near isize::MAX")
    }
}

#[allow(unsafe_code)]
// SAFETY: every block is a system block with an alignment-sized prefix in
// front; the pointer handed out is aligned (the prefix is a multiple of the
// alignment) and `dealloc` finds the block's start from the same layout.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if COUNTING.with(std::cell::Cell::get) {
            ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let prefix = Self::prefix(layout);
        // SAFETY: same contract as ours, on the widened layout.
        let base = unsafe { std::alloc::System.alloc(Self::widened(layout)) };
        if base.is_null() {
            return base;
        }
        let in_node = IN_NODE.with(std::cell::Cell::get);
        // SAFETY: `base` has `prefix` bytes before the caller's block.
        unsafe { base.add(prefix - 1).write(if in_node { NODE_TAG } else { 0 }) };
        if in_node {
            NODE_LIVE_BYTES.with(|b| b.set(b.get() + layout.size() as i64));
        }
        // SAFETY: within the widened block.
        unsafe { base.add(prefix) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        let prefix = Self::prefix(layout);
        // SAFETY: `ptr` came from `alloc` with this layout: its prefix precedes it.
        if unsafe { ptr.sub(1).read() } == NODE_TAG {
            NODE_LIVE_BYTES.with(|b| b.set(b.get() - layout.size() as i64));
        }
        // SAFETY: the block started `prefix` bytes earlier, with the widened layout.
        unsafe { std::alloc::System.dealloc(ptr.sub(prefix), Self::widened(layout)) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size` with the old alignment is valid per `realloc`'s contract.
        let new_layout = unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as `alloc`; then the old block is copied and freed as `dealloc`.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// One RTP packet a participant received.
#[derive(Clone, Debug)]
pub struct Received {
    pub video: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Bytes,
}

/// SRTP profiles a participant offers, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profiles {
    /// libwebrtc's order: AES-CM-SHA1-80 first, then GCM-256, GCM-128.
    Chromium,
    /// Only AES-CM-SHA1-80.
    CmOnly,
}

pub struct Participant {
    pub name: String,
    pub pid: ParticipantId,
    pub addr: SocketAddr,
    pub pc: RTCPeerConnection,
    senders: Option<(RTCRtpSenderId, RTCRtpSenderId)>,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    aseq: u16,
    vseq: u16,
    ats: u32,
    vts: u32,
    counter: u64,
    pub session: u64,
    pub connected: bool,
    pub received: Vec<Received>,
    pub plis: usize,
    pub rembs: Vec<(u64, Vec<u32>)>,
    pub messages: Vec<SfuServerMsg>,
    pub answers: Vec<String>,
}

impl Participant {
    /// Packets received whose payload carries `who`'s label.
    pub fn received_from(&self, who: &str, video: bool) -> Vec<Received> {
        let tag = format!("from-{who}:");
        self.received
            .iter()
            .filter(|r| r.video == video && contains(&r.payload, tag.as_bytes()))
            .cloned()
            .collect()
    }

    pub fn srtp_cipher(&mut self, now: Instant) -> String {
        let report = self.pc.get_stats(now, StatsSelector::None);
        report
            .transport()
            .map(|t| t.srtp_cipher.clone())
            .unwrap_or_default()
    }

    pub fn retransmitted_received(&mut self, now: Instant) -> u64 {
        let report = self.pc.get_stats(now, StatsSelector::None);
        report
            .inbound_rtp_streams()
            .map(|s| s.retransmitted_packets_received)
            .sum()
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A one-packet VP8 frame: descriptor (S=1, PID=0) and a frame tag whose P
/// bit says key or delta, then a label.
pub fn labelled_frame(keyframe: bool, label: &[u8]) -> Vec<u8> {
    let mut p = vec![0x10, if keyframe { 0x10 } else { 0x11 }, 0, 0];
    p.extend_from_slice(label);
    p
}

/// Decides whether a datagram to participant `i` is lost.
pub type DropFilter = Box<dyn FnMut(usize, &[u8]) -> bool>;

pub struct Sim {
    pub node: Node,
    pub now: Instant,
    pub node_addr: SocketAddr,
    pub participants: Vec<Participant>,
    pub events: Vec<NodeEvent>,
    /// Drops a datagram from the node to a participant when it returns true
    /// (participant index, datagram).
    pub drop_to_participant: Option<DropFilter>,
    next_session: u64,
    /// While set, allocations made by the node handling RTP are counted.
    count_rtp: bool,
    /// RTP datagrams handed to the node while counting.
    counted_rtp: u64,
}

impl Sim {
    pub fn new() -> Self {
        let now = Instant::now();
        let node_addr: SocketAddr = NODE_ADDR.parse().unwrap();
        let config = NodeConfig {
            advertised: node_addr,
            admit_ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            dtls_timeout: Duration::from_secs(10),
            keyframe_request_min_interval: Duration::from_millis(300),
            unknown_rate_per_sec: 5_000,
            unknown_burst: 2_000,
            max_datagram_bytes: 1_600,
        };
        let identity = Arc::new(DtlsIdentity::generate().unwrap());
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(7));
        Self {
            node: Node::new(config, identity, rng, metrics, std::time::SystemTime::now(), now),
            now,
            node_addr,
            participants: Vec::new(),
            events: Vec::new(),
            drop_to_participant: None,
            next_session: 1,
            count_rtp: false,
            counted_rtp: 0,
        }
    }

    pub fn index(&self, name: &str) -> usize {
        self.participants.iter().position(|p| p.name == name).unwrap()
    }

    pub fn p(&mut self, name: &str) -> &mut Participant {
        let i = self.index(name);
        &mut self.participants[i]
    }

    /// Admits, joins and offers; the answer is applied. Media then needs
    /// [`Sim::progress`] for ICE and DTLS.
    pub fn join(&mut self, name: &str, role: SfuRole) -> usize {
        self.join_with(name, role, Profiles::Chromium, |sdp| sdp)
    }

    pub fn join_with(
        &mut self,
        name: &str,
        role: SfuRole,
        profiles: Profiles,
        edit_offer: impl FnOnce(String) -> String,
    ) -> usize {
        let idx = self.participants.len();
        let addr: SocketAddr = format!("127.0.0.{}:{}", 2 + idx, 5000 + idx).parse().unwrap();
        let pid = ParticipantId::new(name);
        let now = self.now;
        in_node(|| {
            self.node.handle_command(
                NodeCommand::Admit {
                    pid: pid.clone(),
                    role,
                },
                now,
            )
        })
        .unwrap();
        let session = self.next_session;
        self.next_session += 1;
        in_node(|| {
            self.node.handle_command(
                NodeCommand::Join {
                    pid: pid.clone(),
                    session,
                },
                now,
            )
        })
        .unwrap();
        let (me, registry) = sfu::peer::media_engine_and_registry_from(MediaEngine::default()).unwrap();
        let srtp = match profiles {
            Profiles::Chromium => vec![
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            ],
            Profiles::CmOnly => vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80],
        };
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_srtp_protection_profiles(srtp)
                    .build(),
            )
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(self.now)
            .unwrap();
        let (audio_ssrc, video_ssrc) = (0x1000 + idx as u32, 0x2000 + idx as u32);
        let senders = if role == SfuRole::Watcher {
            for kind in [
                RtpCodecKind::Audio,
                RtpCodecKind::Video,
                RtpCodecKind::Audio,
                RtpCodecKind::Video,
            ] {
                let init = rtc::rtp_transceiver::RTCRtpTransceiverInit {
                    direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                };
                pc.add_transceiver_from_kind(kind, Some(init)).unwrap();
            }
            None
        } else {
            let a = pc
                .add_track(sfu::peer::outgoing_track(
                    name,
                    &format!("{name}-a"),
                    RtpCodecKind::Audio,
                    audio_ssrc,
                    None,
                ))
                .unwrap();
            let v = pc
                .add_track(sfu::peer::outgoing_track(
                    name,
                    &format!("{name}-v"),
                    RtpCodecKind::Video,
                    video_ssrc,
                    Some(0x3000 + idx as u32),
                ))
                .unwrap();
            Some((a, v))
        };
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(self.now, offer.clone()).unwrap();
        let cand = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .unwrap();
        pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().unwrap())
            .unwrap();
        self.participants.push(Participant {
            name: name.to_owned(),
            pid: pid.clone(),
            addr,
            pc,
            senders,
            audio_ssrc,
            video_ssrc,
            aseq: 100,
            vseq: 65_500,
            ats: 1_000,
            vts: 4_294_000_000,
            counter: 0,
            session,
            connected: false,
            received: Vec::new(),
            plis: 0,
            rembs: Vec::new(),
            messages: Vec::new(),
            answers: Vec::new(),
        });
        let sdp = edit_offer(offer.sdp);
        let now = self.now;
        in_node(|| {
            self.node
                .handle_command(NodeCommand::Offer { pid, session, sdp }, now)
        })
        .unwrap();
        self.pump();
        idx
    }

    /// Offers again with new ICE credentials; the answer is applied.
    pub fn ice_restart(&mut self, name: &str) {
        let i = self.index(name);
        let p = &mut self.participants[i];
        let offer =
            p.pc.create_offer(Some(RTCOfferOptions { ice_restart: true }))
                .unwrap();
        p.pc.set_local_description(self.now, offer.clone()).unwrap();
        let cmd = NodeCommand::Offer {
            pid: p.pid.clone(),
            session: p.session,
            sdp: offer.sdp,
        };
        let now = self.now;
        in_node(|| self.node.handle_command(cmd, now)).unwrap();
        self.pump();
    }

    pub fn command(&mut self, cmd: NodeCommand) {
        let now = self.now;
        in_node(|| self.node.handle_command(cmd, now)).unwrap();
        self.pump();
    }

    pub fn link(&mut self, a: &str, b: &str) {
        self.command(NodeCommand::Link {
            a: ParticipantId::new(a),
            b: ParticipantId::new(b),
        });
    }

    /// Moves everything that is ready without advancing the clock.
    pub fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(t) = in_node(|| self.node.poll_transmit()) {
                moved = true;
                self.deliver_to_participant(t.path, t.buf);
            }
            while let Some(e) = in_node(|| self.node.poll_event()) {
                moved = true;
                self.on_event(e);
            }
            for i in 0..self.participants.len() {
                moved |= self.drain_participant(i);
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver_to_participant(&mut self, path: PathAddr, buf: PacketBuf) {
        let to = path.addr();
        if let Some(i) = self.participants.iter().position(|p| p.addr == to) {
            let dropped = match self.drop_to_participant.as_mut() {
                Some(f) => f(i, buf.as_slice()),
                None => false,
            };
            if !dropped {
                let now = self.now;
                let node_addr = self.node_addr;
                let p = &mut self.participants[i];
                let r = p.pc.handle_read(TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: p.addr,
                        peer_addr: node_addr,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(buf.as_slice()),
                });
                assert!(r.is_ok(), "{} refused a datagram from the node: {r:?}", p.name);
            }
        }
        in_node(|| self.node.recycle(buf));
    }

    fn on_event(&mut self, e: NodeEvent) {
        if let NodeEvent::ToClient { pid, msg, .. } = &e {
            if let Some(i) = self.participants.iter().position(|p| &p.pid == pid) {
                let now = self.now;
                let p = &mut self.participants[i];
                match msg {
                    SfuServerMsg::Answer { sdp } => {
                        p.answers.push(sdp.clone());
                        p.pc.set_remote_description(now, RTCSessionDescription::answer(sdp.clone()).unwrap())
                            .unwrap();
                    }
                    SfuServerMsg::Candidate { candidate } => {
                        let _ = p.pc.add_remote_candidate(RTCIceCandidateInit {
                            candidate: candidate.candidate.clone(),
                            sdp_mid: candidate.sdp_mid.clone(),
                            sdp_mline_index: candidate.sdp_mline_index,
                            ..Default::default()
                        });
                    }
                    _ => {}
                }
                p.messages.push(msg.clone());
            }
        }
        self.events.push(e);
    }

    /// Everything participant `i` wants to send or report; true if anything moved.
    fn drain_participant(&mut self, i: usize) -> bool {
        let mut moved = false;
        let now = self.now;
        let mut out = Vec::new();
        {
            let p = &mut self.participants[i];
            while let Some(w) = p.pc.poll_write() {
                out.push(w.message);
            }
            while let Some(e) = p.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) = e
                {
                    p.connected = true;
                }
            }
            while let Some(m) = p.pc.poll_read() {
                moved = true;
                match m.message {
                    RTCMessage::RtpPacket(_, pkt) => p.received.push(Received {
                        video: pkt.header.payload_type == sfu::peer::VP8_PT,
                        seq: pkt.header.sequence_number,
                        ts: pkt.header.timestamp,
                        ssrc: pkt.header.ssrc,
                        payload: pkt.payload.clone(),
                    }),
                    RTCMessage::RtcpPacket(_, pkts) => {
                        for pkt in &pkts {
                            let any = pkt.as_any();
                            if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                                p.rembs.push((remb.bitrate as u64, remb.ssrcs.clone()));
                            } else if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                                p.plis += 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let path = PathAddr::Udp(self.participants[i].addr);
        for bytes in out {
            moved = true;
            let buf = PacketBuf::from_slice(&bytes);
            let rtp = bytes.len() > 1 && bytes[0] >> 6 == 2 && !(192..=223).contains(&bytes[1]);
            if self.count_rtp && rtp {
                self.counted_rtp += 1;
                COUNTING.with(|c| c.set(true));
                in_node(|| self.node.handle_datagram(path, buf, now));
                COUNTING.with(|c| c.set(false));
            } else {
                in_node(|| self.node.handle_datagram(path, buf, now));
            }
        }
        moved
    }

    /// Advances the clock by `ms`, 1 ms at a time, running every timer due.
    pub fn progress(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            let now = self.now;
            if self.node.poll_timeout() <= now {
                in_node(|| self.node.handle_timeout(now));
            }
            for p in &mut self.participants {
                if p.pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = p.pc.handle_timeout(now);
                }
            }
            self.pump();
        }
    }

    /// Steps until every named participant is connected (at most 5 s).
    pub fn connect_all(&mut self) {
        for _ in 0..500 {
            if self.participants.iter().all(|p| p.connected) {
                return;
            }
            self.progress(10);
        }
        let states: Vec<_> = self.participants.iter().map(|p| (&p.name, p.connected)).collect();
        panic!("not all connected: {states:?}");
    }

    /// Participant `name` sends one audio packet and one one-packet video frame.
    pub fn send_media(&mut self, name: &str, keyframe: bool) {
        let i = self.index(name);
        let now = self.now;
        let p = &mut self.participants[i];
        p.counter += 1;
        let label = format!("from-{}:{}", p.name, p.counter);
        p.aseq = p.aseq.wrapping_add(1);
        p.ats = p.ats.wrapping_add(960);
        p.vseq = p.vseq.wrapping_add(1);
        p.vts = p.vts.wrapping_add(3000);
        let Some((a, v)) = p.senders else { return };
        let (aseq, ats, vseq, vts, assrc, vssrc) = (p.aseq, p.ats, p.vseq, p.vts, p.audio_ssrc, p.video_ssrc);
        send_rtp(
            &mut p.pc,
            a,
            assrc,
            sfu::peer::OPUS_PT,
            aseq,
            ats,
            false,
            label.clone().into_bytes(),
            now,
        );
        send_rtp(
            &mut p.pc,
            v,
            vssrc,
            sfu::peer::VP8_PT,
            vseq,
            vts,
            true,
            labelled_frame(keyframe, label.as_bytes()),
            now,
        );
        self.pump();
    }

    /// Participant `name` sends these RTCP packets.
    pub fn send_rtcp(&mut self, name: &str, pkts: Vec<Box<dyn rtc::rtcp::Packet>>) {
        let now = self.now;
        let p = self.p(name);
        let _ = p.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtcpPacket(String::new(), pkts),
        });
        self.pump();
    }

    /// Media both ways for `ms` (one frame per 20 ms each), keyframes when asked.
    pub fn talk(&mut self, names: &[&str], ms: u64) {
        for _ in 0..ms / 20 {
            for n in names {
                let i = self.index(n);
                let key = std::mem::take(&mut self.participants[i].plis) > 0;
                self.send_media(n, key);
            }
            self.progress(20);
        }
    }

    /// Runs `f`, counting the allocations the node makes while it handles
    /// RTP; returns (allocations, RTP datagrams handled).
    pub fn count_node_allocations_while(&mut self, f: impl FnOnce(&mut Sim)) -> (u64, u64) {
        let before = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
        self.count_rtp = true;
        self.counted_rtp = 0;
        f(self);
        self.count_rtp = false;
        (
            ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed) - before,
            self.counted_rtp,
        )
    }

    /// Heap bytes allocated while the node ran and still held (by the
    /// node, or by whoever took them from it and has not freed them yet).
    pub fn node_heap_bytes() -> i64 {
        NODE_LIVE_BYTES.with(std::cell::Cell::get)
    }

    /// Drops the events and signaling messages the harness kept (they were
    /// allocated by the node and would count in [`Sim::node_heap_bytes`]).
    pub fn forget_events(&mut self) {
        self.events = Vec::new();
        for p in &mut self.participants {
            p.messages = Vec::new();
            p.answers = Vec::new();
        }
    }

    pub fn removed(&self, name: &str) -> Option<&'static str> {
        self.events.iter().find_map(|e| match e {
            NodeEvent::Removed { pid, reason } if pid.as_str() == name => Some(*reason),
            _ => None,
        })
    }

    pub fn connected_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, NodeEvent::Sfu(SfuEvent::Connected { .. })))
            .count()
    }
}

#[allow(clippy::too_many_arguments)]
fn send_rtp(
    pc: &mut RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
    pt: u8,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
    now: Instant,
) {
    let pkt = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    };
    if let Some(mut s) = pc.rtp_sender(sender) {
        let _ = s.write_rtp(now, pkt);
    }
}
