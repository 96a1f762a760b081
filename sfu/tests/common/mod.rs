//! Test harness: a real SFU node on 127.0.0.1 (UDP port 0, HTTP on port-0
//! listeners) and sans-IO `rtc` clients driven by a small UDP loop each.
#![allow(dead_code)]
// Test-only harness code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

pub mod vp8enc;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use proto::sfu_ws::{SfuClientMsg, SfuServerMsg};
use proto::token::{SfuClaims, SfuRole, TokenKey, AUD_SFU};
use proto::{NodeId, ParticipantId};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCOfferOptions};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use sfu::extensions::LegExtensions;
use sfu::{Sfu, SfuConfig, SfuHandle};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub const SECRET: &[u8] = b"test-secret-0123456789";
pub const INTERNAL_TOKEN: &str = "internal-token-0123456789";

pub struct Node {
    pub handle: SfuHandle,
    pub ws_url: String,
    pub internal: String,
    pub http: reqwest::Client,
    pub registry: prometheus::Registry,
    pub shutdown: CancellationToken,
    pub node_id: NodeId,
}

impl Node {
    pub async fn start() -> Node {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut SfuConfig)) -> Node {
        Self::start_full(f, None).await
    }

    pub async fn start_full(f: impl FnOnce(&mut SfuConfig), handoff: Option<proto::handoff::SfuEnd>) -> Node {
        let mut config = SfuConfig {
            token_secret: SECRET.to_vec(),
            internal_token: INTERNAL_TOKEN.to_owned(),
            ..SfuConfig::default()
        };
        f(&mut config);
        let node_id = config.node_id.clone();
        let registry = prometheus::Registry::new();
        let sfu = Sfu::bind(config, handoff, &registry).await.expect("bind");
        let handle = sfu.handle();
        let shutdown = CancellationToken::new();
        let client = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!("ws://{}/sfu/ws", client.local_addr().unwrap());
        let internal_url = format!("http://{}", internal.local_addr().unwrap());
        for (listener, router) in [(client, sfu.client_router()), (internal, sfu.internal_router())] {
            let s = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { s.cancelled().await })
                    .await
                    .unwrap();
            });
        }
        let s = shutdown.clone();
        tokio::spawn(async move { sfu.run(s).await.unwrap() });
        Node {
            handle,
            ws_url,
            internal: internal_url,
            http: reqwest::Client::new(),
            registry,
            shutdown,
            node_id,
        }
    }

    pub fn token(&self, pid: &str, role: SfuRole, exp_offset: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        TokenKey::new(SECRET)
            .mint(&SfuClaims {
                sub: ParticipantId::new(pid),
                aud: AUD_SFU.to_owned(),
                exp: (now + exp_offset) as u64,
                iat: now as u64,
                node: self.node_id.clone(),
                role,
                tp: None,
            })
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}{}", self.internal, path))
            .bearer_auth(INTERNAL_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{}", self.internal, path))
            .bearer_auth(INTERNAL_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn admit(&self, pid: &str, role: SfuRole) {
        let role = serde_json::to_value(role).unwrap();
        let r = self
            .post(
                "/internal/v1/participants",
                serde_json::json!({"participant_id": pid, "role": role}),
            )
            .await;
        assert_eq!(r.status(), 200, "admit {pid}: {}", r.text().await.unwrap());
    }

    pub async fn link(&self, a: &str, b: &str) {
        let r = self
            .post("/internal/v1/link", serde_json::json!({"a": a, "b": b}))
            .await;
        assert_eq!(r.status(), 204, "link: {}", r.text().await.unwrap());
    }

    pub fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        for mf in self.registry.gather() {
            if mf.name() != name {
                continue;
            }
            for m in mf.get_metric() {
                let ok = match label {
                    None => true,
                    Some((k, v)) => m.get_label().iter().any(|l| l.name() == k && l.value() == v),
                };
                if ok {
                    return m.get_counter().get_value() + m.get_gauge().get_value();
                }
            }
        }
        0.0
    }
}

/// One RTP packet a client received.
#[derive(Clone, Debug)]
pub struct Received {
    pub video: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Bytes,
    pub at: Instant,
    /// Header extensions as received: (id, value).
    pub extensions: Vec<(u8, Bytes)>,
}

#[derive(Default)]
pub struct ClientState {
    pub connected: bool,
    pub failed: bool,
    pub received: Vec<Received>,
    pub plis: usize,
    /// REMBs received: (bitrate, SSRCs).
    pub rembs: Vec<(u64, Vec<u32>)>,
    pub ws_messages: Vec<SfuServerMsg>,
    /// When set, every video packet carries this video-orientation value.
    pub video_orientation: Option<u8>,
    /// This client's negotiated extension ids (from its answer).
    pub extensions: LegExtensions,
    /// Answers received (the first and any after an ICE restart).
    pub answers: Vec<String>,
    /// The SSRCs this client sends on: (audio, video).
    pub sent_ssrcs: (u32, u32),
}

/// How a test client deviates from a well-behaved browser.
#[derive(Clone, Copy, Default)]
pub struct ClientOptions {
    /// Offer an extra header extension first, so every extension id this
    /// client negotiates differs from a default client's.
    pub shift_extension_ids: bool,
    /// Put a wrong DTLS fingerprint in the offer: ICE succeeds, DTLS fails.
    pub corrupt_fingerprint: bool,
}

pub enum ClientCmd {
    /// Send this VP8 frame (split into RTP packets of at most `mtu` payload bytes).
    Frame {
        frame: Vec<u8>,
        mtu: usize,
    },
    /// Send these RTCP packets on the connection.
    Rtcp(Vec<Box<dyn rtc::rtcp::Packet>>),
    /// Offer again with new ICE credentials (the answer is applied when it comes).
    IceRestart,
    /// Report how many packets arrived as RTX retransmissions.
    RetransmittedReceived(oneshot::Sender<u64>),
    Stop,
}

/// How a client's datagrams reach the SFU: its own UDP socket, or the
/// in-process TURN hand-off (as if relayed from `relay_addr`).
pub enum Transport {
    Udp(UdpSocket),
    Turn {
        end: proto::handoff::TurnEnd,
        relay_addr: SocketAddr,
    },
}

impl Transport {
    fn local(&self) -> SocketAddr {
        match self {
            Transport::Udp(s) => s.local_addr().unwrap(),
            Transport::Turn { relay_addr, .. } => *relay_addr,
        }
    }

    async fn send(&self, data: &[u8], to: SocketAddr) {
        match self {
            Transport::Udp(s) => {
                let _ = s.send_to(data, to).await;
            }
            Transport::Turn { end, relay_addr } => {
                let _ = end.to_sfu.send(proto::handoff::RelayedDatagram {
                    relay_addr: *relay_addr,
                    sfu_addr: to,
                    payload: proto::handoff::DatagramBuf::copy_from(data),
                });
            }
        }
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            Transport::Udp(s) => s.recv_from(buf).await.ok(),
            Transport::Turn { end, .. } => {
                let d = end.from_sfu.recv().await?;
                let n = d.payload.len().min(buf.len());
                buf[..n].copy_from_slice(&d.payload[..n]);
                Some((n, d.sfu_addr))
            }
        }
    }
}

pub struct Client {
    pub name: String,
    pub state: Arc<Mutex<ClientState>>,
    pub cmd: mpsc::Sender<ClientCmd>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects through the node's WebSocket and starts sending media:
    /// every 20 ms one audio packet and one one-packet VP8 frame whose
    /// payload names the client; a keyframe whenever a PLI arrived.
    pub async fn connect(node: &Node, name: &str, auto_media: bool) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self::connect_via(node, name, auto_media, Transport::Udp(socket)).await
    }

    pub async fn connect_via(node: &Node, name: &str, auto_media: bool, socket: Transport) -> Client {
        Self::connect_as(node, name, SfuRole::User, auto_media, socket).await
    }

    /// A receive-only watcher (two audio + two video m-sections).
    pub async fn connect_watcher(node: &Node, name: &str) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self::connect_as(node, name, SfuRole::Watcher, false, Transport::Udp(socket)).await
    }

    pub async fn connect_as(
        node: &Node,
        name: &str,
        role: SfuRole,
        auto_media: bool,
        socket: Transport,
    ) -> Client {
        Self::connect_with(node, name, role, auto_media, socket, ClientOptions::default()).await
    }

    pub async fn connect_with(
        node: &Node,
        name: &str,
        role: SfuRole,
        auto_media: bool,
        socket: Transport,
        opts: ClientOptions,
    ) -> Client {
        let token = node.token(name, role, 300);
        let (ws, _) = tokio_tungstenite::connect_async(format!("{}?token={}", node.ws_url, token))
            .await
            .expect("ws connect");
        let local = socket.local();
        let mut me = MediaEngine::default();
        if opts.shift_extension_ids {
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                me.register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: "urn:ietf:params:rtp-hdrext:toffset".to_owned(),
                    },
                    kind,
                    None,
                )
                .unwrap();
            }
        }
        let (me, registry) = sfu::peer::media_engine_and_registry_from(me).unwrap();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(SettingEngineBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .unwrap();
        let audio_ssrc = rand::random::<u32>();
        let video_ssrc = rand::random::<u32>();
        let senders = if role == SfuRole::Watcher {
            // Receive-only: two audio and two video m-sections.
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
                    Some(rand::random::<u32>()),
                ))
                .unwrap();
            Some((a, v))
        };
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(Instant::now(), offer.clone()).unwrap();
        let cand = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .unwrap();
        pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().unwrap())
            .unwrap();
        let state = Arc::new(Mutex::new(ClientState {
            sent_ssrcs: (audio_ssrc, video_ssrc),
            ..Default::default()
        }));
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (mut ws_tx, mut ws_rx) = ws.split();
        let offer_sdp = if opts.corrupt_fingerprint {
            corrupt_fingerprint(&offer.sdp)
        } else {
            offer.sdp
        };
        let offer_msg = serde_json::to_string(&SfuClientMsg::Offer { sdp: offer_sdp }).unwrap();
        ws_tx.send(Message::Text(offer_msg.into())).await.unwrap();
        // Wait for the answer.
        let answer = loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
                .await
                .expect("answer in time");
            let Some(Ok(Message::Text(t))) = m else {
                panic!("ws closed before answer: {m:?}")
            };
            let msg: SfuServerMsg = serde_json::from_str(&t).unwrap();
            state.lock().unwrap().ws_messages.push(msg.clone());
            match msg {
                SfuServerMsg::Answer { sdp } => break sdp,
                SfuServerMsg::Error { code, message } => panic!("{name}: error {code}: {message}"),
                _ => {}
            }
        };
        apply_answer(&mut pc, &state, &answer).unwrap();
        let st = state.clone();
        let name2 = name.to_owned();
        let task = tokio::spawn(async move {
            drive(
                pc, socket, local, senders, audio_ssrc, video_ssrc, st, cmd_rx, ws_tx, ws_rx, name2,
                auto_media,
            )
            .await;
        });
        Client {
            name: name.to_owned(),
            state,
            cmd: cmd_tx,
            task,
        }
    }

    pub async fn wait_connected(&self) {
        wait_for(
            &format!("{} connected", self.name),
            Duration::from_secs(15),
            || self.state.lock().unwrap().connected,
        )
        .await;
    }

    pub fn received_from(&self, who: &str, video: bool) -> Vec<Received> {
        let tag = format!("from-{who}:");
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.video == video && contains(&r.payload, tag.as_bytes()))
            .cloned()
            .collect()
    }

    pub async fn stop(self) {
        let _ = self.cmd.send(ClientCmd::Stop).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Records an answer from the SFU (its extension ids, the SDP) and applies it.
fn apply_answer(
    pc: &mut RTCPeerConnection,
    state: &Mutex<ClientState>,
    sdp: &str,
) -> Result<(), rtc::shared::error::Error> {
    {
        let mut st = state.lock().unwrap();
        st.extensions = LegExtensions::from_sdp(sdp);
        st.answers.push(sdp.to_owned());
    }
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp.to_owned())?)
}

/// The same offer with the last hex digit of each DTLS fingerprint changed.
fn corrupt_fingerprint(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .map(|line| {
            if line.starts_with("a=fingerprint:") {
                let trimmed = line.trim_end();
                let (head, last) = trimmed.split_at(trimmed.len() - 1);
                let flipped = if last == "0" { "1" } else { "0" };
                format!("{head}{flipped}{}", &line[trimmed.len()..])
            } else {
                line.to_owned()
            }
        })
        .collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A one-packet VP8 frame: descriptor (S=1, PID=0) + a frame tag whose P
/// bit says key or delta, then a label.
fn labelled_frame(keyframe: bool, label: &[u8]) -> Vec<u8> {
    let mut p = vec![0x10, if keyframe { 0x10 } else { 0x11 }, 0, 0];
    p.extend_from_slice(label);
    p
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut pc: RTCPeerConnection,
    mut socket: Transport,
    local: SocketAddr,
    senders: Option<(RTCRtpSenderId, RTCRtpSenderId)>,
    audio_ssrc: u32,
    video_ssrc: u32,
    state: Arc<Mutex<ClientState>>,
    mut cmd_rx: mpsc::Receiver<ClientCmd>,
    mut ws_tx: futures::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        Message,
    >,
    mut ws_rx: futures::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    >,
    name: String,
    auto_media: bool,
) {
    let mut buf = vec![0u8; 2048];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let (mut aseq, mut vseq) = (rand::random::<u16>(), rand::random::<u16>());
    let (mut ats, mut vts) = (rand::random::<u32>(), rand::random::<u32>());
    let mut want_key = true;
    let mut counter = 0u64;
    let mut ws_open = true;
    loop {
        while let Some(w) = pc.poll_write() {
            socket.send(&w.message, w.transport.peer_addr).await;
        }
        while let Some(e) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = e {
                let mut st = state.lock().unwrap();
                match s {
                    RTCPeerConnectionState::Connected => st.connected = true,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => st.failed = true,
                    _ => {}
                }
            }
        }
        while let Some(m) = pc.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(_, p) => {
                    let mut st = state.lock().unwrap();
                    st.received.push(Received {
                        video: p.header.payload_type == sfu::peer::VP8_PT,
                        seq: p.header.sequence_number,
                        ts: p.header.timestamp,
                        ssrc: p.header.ssrc,
                        payload: p.payload.clone(),
                        at: Instant::now(),
                        extensions: p
                            .header
                            .extensions
                            .iter()
                            .map(|e| (e.id, e.payload.clone()))
                            .collect(),
                    });
                }
                RTCMessage::RtcpPacket(_, pkts) => {
                    let mut st = state.lock().unwrap();
                    for p in &pkts {
                        let any = p.as_any();
                        if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                            st.rembs.push((remb.bitrate as u64, remb.ssrcs.clone()));
                        } else if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                            st.plis += 1;
                            want_key = true;
                        }
                    }
                }
                _ => {}
            }
        }
        let deadline = pc
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            _ = sleep => { let _ = pc.handle_timeout(Instant::now()); }
            r = socket.recv(&mut buf) => {
                if let Some((n, peer)) = r {
                    let _ = pc.handle_read(TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP },
                        message: BytesMut::from(&buf[..n]),
                    });
                }
            }
            m = ws_rx.next(), if ws_open => {
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(msg) = serde_json::from_str::<SfuServerMsg>(&t) {
                            if let SfuServerMsg::Answer { sdp } = &msg {
                                // The answer to an ICE restart.
                                let _ = apply_answer(&mut pc, &state, sdp);
                            }
                            if let SfuServerMsg::Candidate { candidate } = &msg {
                                let _ = pc.add_remote_candidate(RTCIceCandidateInit {
                                    candidate: candidate.candidate.clone(),
                                    sdp_mid: candidate.sdp_mid.clone(),
                                    sdp_mline_index: candidate.sdp_mline_index,
                                    ..Default::default()
                                });
                            }
                            state.lock().unwrap().ws_messages.push(msg);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => ws_open = false,
                }
            }
            c = cmd_rx.recv() => {
                match c {
                    Some(ClientCmd::Frame { frame, mtu }) => {
                        let chunks: Vec<&[u8]> = frame.chunks(mtu).collect();
                        vts = vts.wrapping_add(3000);
                        for (i, c) in chunks.iter().enumerate() {
                            let mut payload = vec![if i == 0 { 0x10 } else { 0x00 }];
                            payload.extend_from_slice(c);
                            vseq = vseq.wrapping_add(1);
                            send_rtp(&mut pc, senders.map(|s| s.1), video_ssrc, sfu::peer::VP8_PT, vseq, vts, i + 1 == chunks.len(), payload, None);
                        }
                    }
                    Some(ClientCmd::Rtcp(pkts)) => {
                        let _ = pc.handle_write(rtc::peer_connection::message::TaggedRTCMessage {
                            now: Instant::now(),
                            message: RTCMessage::RtcpPacket(String::new(), pkts),
                        });
                    }
                    Some(ClientCmd::IceRestart) => {
                        let offer = pc.create_offer(Some(RTCOfferOptions { ice_restart: true })).unwrap();
                        pc.set_local_description(Instant::now(), offer.clone()).unwrap();
                        let msg = serde_json::to_string(&SfuClientMsg::Offer { sdp: offer.sdp }).unwrap();
                        let _ = ws_tx.send(Message::Text(msg.into())).await;
                    }
                    Some(ClientCmd::RetransmittedReceived(reply)) => {
                        let report = pc.get_stats(Instant::now(), StatsSelector::None);
                        let n = report.inbound_rtp_streams().map(|s| s.retransmitted_packets_received).sum();
                        let _ = reply.send(n);
                    }
                    Some(ClientCmd::Stop) | None => break,
                }
            }
            _ = ticker.tick(), if auto_media => {
                counter += 1;
                let label = format!("from-{name}:{counter}");
                aseq = aseq.wrapping_add(1);
                ats = ats.wrapping_add(960);
                send_rtp(&mut pc, senders.map(|s| s.0), audio_ssrc, sfu::peer::OPUS_PT, aseq, ats, false, label.clone().into_bytes(), None);
                vseq = vseq.wrapping_add(1);
                vts = vts.wrapping_add(1800);
                let key = std::mem::take(&mut want_key);
                let orientation = {
                    let st = state.lock().unwrap();
                    st.video_orientation.zip(st.extensions.video.video_orientation)
                };
                send_rtp(&mut pc, senders.map(|s| s.1), video_ssrc, sfu::peer::VP8_PT, vseq, vts, true, labelled_frame(key, label.as_bytes()), orientation);
            }
        }
    }
    let _ = pc.close();
    while let Some(w) = pc.poll_write() {
        socket.send(&w.message, w.transport.peer_addr).await;
    }
    let _ = ws_tx.send(Message::Close(None)).await;
}

/// Sends one RTP packet on `sender`, with one header extension `(value, id)` if given.
#[allow(clippy::too_many_arguments)]
fn send_rtp(
    pc: &mut RTCPeerConnection,
    sender: Option<RTCRtpSenderId>,
    ssrc: u32,
    pt: u8,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
    extension: Option<(u8, u8)>,
) {
    let mut pkt = rtc::rtp::Packet {
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
    if let Some((value, id)) = extension {
        pkt.header
            .set_extension(id, Bytes::copy_from_slice(&[value]))
            .unwrap();
    }
    if let Some(mut s) = sender.and_then(|id| pc.rtp_sender(id)) {
        let _ = s.write_rtp(Instant::now(), pkt);
    }
}
