//! A synthetic visitor's media: a WebRTC participant on the sans-IO `rtc`
//! crate (ICE, DTLS, SRTP to an SFU node over one UDP socket) that sends one
//! labelled audio and video packet every 20 ms and counts what it receives
//! per sender label.

use super::WAIT;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use proto::sfu_ws::{SfuClientMsg, SfuServerMsg};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Default)]
pub struct MediaState {
    pub connected: bool,
    /// Packets received per sender name (from the `from-NAME:` labels).
    pub from: HashMap<String, usize>,
}

pub enum MediaCmd {
    Stop,
}

/// A WebRTC participant (sans-IO `rtc`, one UDP socket): offers one audio
/// and one video track, sends a labelled packet on each every 20 ms.
pub struct Media {
    state: Arc<Mutex<MediaState>>,
    cmd: mpsc::Sender<MediaCmd>,
    task: tokio::task::JoinHandle<()>,
}

type WsTx = futures::stream::SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type WsRx = futures::stream::SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

impl Media {
    pub async fn connect(url: &str, token: &str, name: &str) -> Media {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?token={token}"))
            .await
            .unwrap_or_else(|e| panic!("{name}: SFU WebSocket {url}: {e}"));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let (me, registry) = sfu::peer::media_engine_and_registry().unwrap();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(SettingEngineBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .unwrap();
        let (audio_ssrc, video_ssrc) = (rand::random::<u32>(), rand::random::<u32>());
        let audio = pc
            .add_track(sfu::peer::outgoing_track(
                name,
                &format!("{name}-a"),
                RtpCodecKind::Audio,
                audio_ssrc,
                None,
            ))
            .unwrap();
        let video = pc
            .add_track(sfu::peer::outgoing_track(
                name,
                &format!("{name}-v"),
                RtpCodecKind::Video,
                video_ssrc,
                None,
            ))
            .unwrap();
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
        let (mut ws_tx, mut ws_rx) = ws.split();
        let offer = serde_json::to_string(&SfuClientMsg::Offer { sdp: offer.sdp }).unwrap();
        ws_tx.send(Message::Text(offer.into())).await.unwrap();
        let answer = loop {
            let m = tokio::time::timeout(WAIT, ws_rx.next())
                .await
                .unwrap_or_else(|_| panic!("{name}: no answer from the SFU"));
            let Some(Ok(Message::Text(t))) = m else {
                panic!("{name}: SFU WebSocket closed before the answer: {m:?}")
            };
            match serde_json::from_str::<SfuServerMsg>(&t).unwrap() {
                SfuServerMsg::Answer { sdp } => break sdp,
                SfuServerMsg::Error { code, message } => panic!("{name}: SFU refused: {code}: {message}"),
                _ => {}
            }
        };
        pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(answer).unwrap())
            .unwrap();
        let state = Arc::new(Mutex::new(MediaState::default()));
        let (cmd, cmd_rx) = mpsc::channel(4);
        let task = tokio::spawn(drive(
            pc,
            socket,
            local,
            (audio, video),
            (audio_ssrc, video_ssrc),
            state.clone(),
            cmd_rx,
            (ws_tx, ws_rx),
            name.to_owned(),
        ));
        Media { state, cmd, task }
    }

    pub async fn wait_connected(&self, name: &str) {
        let what = format!("{name}'s ICE/DTLS to the SFU");
        wait_for!(what, self.state.lock().unwrap().connected.then_some(()));
    }

    pub fn count(&self, who: &str) -> usize {
        self.state.lock().unwrap().from.get(who).copied().unwrap_or(0)
    }

    pub async fn stop(self) {
        let _ = self.cmd.send(MediaCmd::Stop).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn sender_name(payload: &[u8]) -> Option<String> {
    let at = payload.windows(5).position(|w| w == b"from-")? + 5;
    let rest = &payload[at..];
    let end = rest.iter().position(|b| *b == b':')?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    senders: (RTCRtpSenderId, RTCRtpSenderId),
    ssrcs: (u32, u32),
    state: Arc<Mutex<MediaState>>,
    mut cmd_rx: mpsc::Receiver<MediaCmd>,
    (mut ws_tx, mut ws_rx): (WsTx, WsRx),
    name: String,
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
            let _ = socket.send_to(&w.message, w.transport.peer_addr).await;
        }
        while let Some(e) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = e
            {
                state.lock().unwrap().connected = true;
            }
        }
        while let Some(m) = pc.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(_, p) => {
                    if let Some(who) = sender_name(&p.payload) {
                        *state.lock().unwrap().from.entry(who).or_default() += 1;
                    }
                }
                RTCMessage::RtcpPacket(_, _) => want_key = true,
                _ => {}
            }
        }
        let deadline = pc
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let _ = pc.handle_timeout(Instant::now());
            }
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, peer)) = r {
                    let _ = pc.handle_read(TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP },
                        message: BytesMut::from(&buf[..n]),
                    });
                }
            }
            m = ws_rx.next(), if ws_open => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(SfuServerMsg::Candidate { candidate }) = serde_json::from_str::<SfuServerMsg>(&t) {
                        let _ = pc.add_remote_candidate(RTCIceCandidateInit {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_mline_index: candidate.sdp_mline_index,
                            ..Default::default()
                        });
                    }
                }
                Some(Ok(_)) => {}
                _ => ws_open = false,
            },
            c = cmd_rx.recv() => match c {
                Some(MediaCmd::Stop) | None => break,
            },
            _ = ticker.tick() => {
                counter += 1;
                let label = format!("from-{name}:{counter}");
                aseq = aseq.wrapping_add(1);
                ats = ats.wrapping_add(960);
                send_rtp(&mut pc, senders.0, ssrcs.0, sfu::peer::OPUS_PT, aseq, ats, label.clone().into_bytes());
                vseq = vseq.wrapping_add(1);
                vts = vts.wrapping_add(1800);
                // One-packet VP8 frame: descriptor (S=1), frame tag (key or delta), the label.
                let key = std::mem::take(&mut want_key);
                let mut frame = vec![0x10, if key { 0x10 } else { 0x11 }, 0, 0];
                frame.extend_from_slice(label.as_bytes());
                send_rtp(&mut pc, senders.1, ssrcs.1, sfu::peer::VP8_PT, vseq, vts, frame);
            }
        }
    }
    let _ = pc.close();
    while let Some(w) = pc.poll_write() {
        let _ = socket.send_to(&w.message, w.transport.peer_addr).await;
    }
    let _ = ws_tx.send(Message::Close(None)).await;
}

fn send_rtp(
    pc: &mut RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
    pt: u8,
    seq: u16,
    ts: u32,
    payload: Vec<u8>,
) {
    let pkt = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: true,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    };
    if let Some(mut s) = pc.rtp_sender(sender) {
        let _ = s.write_rtp(Instant::now(), pkt);
    }
}
